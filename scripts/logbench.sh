#!/usr/bin/env bash
# Benchmark lormas-agent's follow log streams against a flooding container,
# with the same container read directly from the Docker API in the same run,
# and print a table. Needs Docker and Go.
#   scripts/logbench.sh [-lines 1200000] [-pad 100] [-slow 10s] [-slow-rate 1048576] [-runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./scripts/logbench "$@"
