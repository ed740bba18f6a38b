#!/usr/bin/env bash
# Run the whole Lormas system on this host: lormas-server on 127.0.0.1:3000 and one lormas-agent
# connected to it, both in the background, state under ./.lormas (kept across runs).
#
#   scripts/quickstart.sh          # start (builds bin/ when missing), print ADMIN and NODE
#   scripts/quickstart.sh stop     # stop both (containers the agent created keep running)
#
# Needs Go 1.26 (to build) and access to the Docker socket. PORT overrides 3000, HEALTH_PORT the
# agent's health port 8081.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.lormas
port=${PORT:-3000}
base=http://127.0.0.1:$port

stop() {
	for name in agent server; do
		if [ -f "$dir/$name.pid" ]; then
			kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
			rm -f "$dir/$name.pid"
		fi
	done
}
if [ "${1:-}" = stop ]; then
	stop
	echo "stopped"
	exit 0
fi

[ -x bin/lormas-server ] && [ -x bin/lormas-agent ] || go build -trimpath -o bin/ ./cmd/lormas-server ./cmd/lormas-agent
mkdir -p "$dir/volumes"
chmod 700 "$dir"
stop

# A fixed admin token for this checkout, so the commands below keep working across restarts.
if [ ! -s "$dir/admin-token" ]; then
	(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/admin-token")
fi
ADMIN=$(cat "$dir/admin-token")

ADMIN_TOKEN=$ADMIN DATA_DIR=$dir/data LISTEN_ADDR=127.0.0.1:$port \
	nohup bin/lormas-server >"$dir/server.log" 2>&1 &
echo $! >"$dir/server.pid"
for _ in $(seq 100); do
	curl -fsS "$base/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
curl -fsS "$base/healthz" >/dev/null || { echo "lormas-server did not start; see $dir/server.log" >&2; exit 1; }

# Register the node once; its token goes into a file the agent re-reads before every dial.
if [ ! -s "$dir/node-id" ]; then
	resp=$(curl -fsS -X POST "$base/api/nodes" -H "Authorization: Bearer $ADMIN" \
		-H 'Content-Type: application/json' -d "{\"name\": \"$(hostname)\", \"description\": \"quickstart node\"}")
	echo "$resp" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4 >"$dir/node-id"
	(umask 077 && echo "$resp" | grep -o '"token":"[^"]*"' | cut -d'"' -f4 >"$dir/node-token")
fi
NODE=$(cat "$dir/node-id")

SERVER_URL=ws://127.0.0.1:$port NODE_TOKEN_FILE=$dir/node-token NODE_NAME=$(hostname) \
	STATE_DIR=$dir/state VOLUME_ROOTS=$PWD/$dir/volumes HEALTH_ADDR=127.0.0.1:${HEALTH_PORT:-8081} \
	nohup bin/lormas-agent >"$dir/agent.log" 2>&1 &
echo $! >"$dir/agent.pid"
for _ in $(seq 100); do
	curl -fsS "$base/api/nodes/$NODE" -H "Authorization: Bearer $ADMIN" | grep -q '"connected":true' && break
	sleep 0.2
done
curl -fsS "$base/api/nodes/$NODE" -H "Authorization: Bearer $ADMIN" | grep -q '"connected":true' ||
	{ echo "lormas-agent did not connect; see $dir/agent.log" >&2; exit 1; }

cat <<TXT
lormas-server on $base, lormas-agent connected (logs: $dir/server.log, $dir/agent.log).
  export ADMIN=$ADMIN NODE=$NODE
Stop both with: scripts/quickstart.sh stop
TXT
