#!/usr/bin/env bash
# Soak lormas-agent for minutes under load and faults (server closes, refused upgrades, a half-open
# connection past the keepalive, malformed and 2 MiB frames, unmanaged containers, the Docker Engine
# unreachable) and print a table: commands, lost, duplicated, re-executed, events missing, RSS, open
# files and goroutines with their slopes. Needs Docker (a unix socket) and Go. Not part of CI.
#   scripts/soak.sh [-duration 5m] [-rate 20] [-containers 8] [-fault-every 20s-40s] [-halfopen 70s]
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./scripts/soak "$@"
