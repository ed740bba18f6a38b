#!/usr/bin/env bash
# Benchmarks of lormas-agent and lormas-server, each printed as a table whose
# baseline is measured in the same run (no figure comes from another run):
#
#   agent  lormas-agent against the direct Docker API call it stands for
#          and a minimal relay, the floor of any agent in between (logs round
#          trips, 20 containers through create/start/stop/delete at once,
#          start-up, idle RSS and CPU); scripts/bench
#   fleet  lormas-server under a simulated fleet on loopback (heartbeat load,
#          dispatch latency, memory per connected agent, the node list);
#          scripts/fleet
#
#   scripts/bench.sh [agent|fleet|all]       (default: all)
#
# Environment:
#   PEER=path/to/agent.js  add a peer agent's column to the agent table: the seed's
#                          TypeScript agent, bundled, run with node (not part of
#                          this repository; without PEER the column is left out)
#   BASE=<git revision>    add columns for lormas-agent and lormas-server built from
#                          that revision (e.g. the commit before a change)
#   AGENT_FLAGS, FLEET_FLAGS  extra flags for either program (see their -h)
#
# The agent table needs Docker (and node for PEER); both build the programs as
# the release image does (CGO_ENABLED=0, -trimpath, -s -w).
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
case $what in
agent | fleet | all) ;;
-h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "bench.sh: unknown table $what (agent, fleet or all)" >&2
	exit 2
	;;
esac

echo "# $(date -u +%Y-%m-%d), $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
if [ "$what" != fleet ]; then
	echo
	echo "## lormas-agent"
	# shellcheck disable=SC2086 # AGENT_FLAGS holds several flags
	go run ./scripts/bench ${AGENT_FLAGS:-}
fi
if [ "$what" != agent ]; then
	echo
	echo "## lormas-server, simulated fleet"
	# shellcheck disable=SC2086 # FLEET_FLAGS holds several flags
	go run ./scripts/fleet ${FLEET_FLAGS:-}
fi
