"""Providers shipped with jupiter-bus (installed as ``jupiter_providers``)."""
