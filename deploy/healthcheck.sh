#!/usr/bin/env bash
# A node is healthy when sshd answers with its banner and the agent is PID 1.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/22
read -r -t 5 banner <&3
[[ $banner == SSH-* ]]
tr '\0' ' ' </proc/1/cmdline | grep -q 'jupiter-bus agent'
