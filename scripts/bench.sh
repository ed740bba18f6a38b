#!/usr/bin/env bash
# Benchmark lormas-agent against the seed's TypeScript agent (run with node) in
# one run and print a table. Needs Docker and, for the peer, node >= 18.
#   scripts/bench.sh [-n 300] [-c 8] [-idle 60s]
set -euo pipefail
cd "$(dirname "$0")/.."
peer=${PEER:-../shared/peers/seed-ts-agent/agent.js}
exec go run ./scripts/bench -peer "$peer" "$@"
