"""Reliability suite (issue 12): faults, secrets, bad input, each proven against real peers."""
