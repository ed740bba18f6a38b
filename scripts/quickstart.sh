#!/usr/bin/env bash
# Run the whole Lormas system on this host: lormas-server on 127.0.0.1:$PORT and one lormas-agent
# connected to it, both in the background, state under ./.lormas (kept across runs).
#
#   scripts/quickstart.sh          # start (builds bin/ when missing), print ADMIN and NODE
#   scripts/quickstart.sh stop     # stop both; the containers the agent created keep running
#
#   PORT         port of lormas-server on 127.0.0.1 (default 3000)
#   HEALTH_PORT  port of the agent's /healthz, /readyz and /metrics on 127.0.0.1 (default 9322:
#                not the agent's default 9321, which an agent installed on this host may hold)
#
# Needs Go 1.26 (to build), curl, and access to the Docker socket. A run that fails stops what it
# started and says why in one line; the logs stay in .lormas/.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.lormas
port=${PORT:-3000}
health_port=${HEALTH_PORT:-9322}
base=http://127.0.0.1:$port

fail() {
	echo "quickstart: $*" >&2
	exit 1
}

# alive PID: the process runs (and is not a zombie).
alive() {
	local state
	state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	case $state in Z*) return 1 ;; esac
}

stop() {
	local name pid
	for name in agent server; do
		if [ -f "$dir/$name.pid" ]; then
			pid=$(cat "$dir/$name.pid")
			kill "$pid" 2>/dev/null || true
			# Wait for it to exit (the agent finishes in-flight commands first), so that its
			# port is free for a restart.
			for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
			rm -f "$dir/$name.pid"
		fi
	done
}

# busy PORT: something accepts connections on 127.0.0.1:PORT.
busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# holder PORT: the program listening on PORT, as "name (pid N)", when ss can tell.
holder() {
	command -v ss >/dev/null 2>&1 || return 0
	ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 |
		sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/ by \1 (pid \2)/'
}

# need_free PORT VARIABLE WHAT: fail, naming the holder, when PORT is taken.
need_free() {
	if busy "$1"; then
		fail "port $1 ($3) is already in use$(holder "$1"): stop that program, or choose another port: $2=<port> scripts/quickstart.sh"
	fi
}

if [ "${1:-}" = stop ]; then
	stop
	echo "stopped lormas-server and lormas-agent."
	if [ -s "$dir/node-id" ]; then
		node=$(cat "$dir/node-id")
		cat <<TXT
The containers the agent created keep running. List them, and remove them, with:
  docker ps -a --filter label=lormas.node=$node
  docker rm -f \$(docker ps -aq --filter label=lormas.node=$node)
TXT
	fi
	exit 0
fi
[ $# -eq 0 ] || fail "unknown argument $1 (usage: scripts/quickstart.sh [stop])"
command -v curl >/dev/null 2>&1 || fail "curl is needed (apt-get install curl)"

if [ ! -x bin/lormas-server ] || [ ! -x bin/lormas-agent ]; then
	go build -trimpath -o bin/ ./cmd/lormas-server ./cmd/lormas-agent
fi
mkdir -p "$dir/volumes"
chmod 700 "$dir"
stop

# From here on, a failure stops what this run started.
ok=false
cleanup() {
	if ! $ok && { [ -f "$dir/server.pid" ] || [ -f "$dir/agent.pid" ]; }; then
		stop
		echo "quickstart: stopped what this run started; logs: $dir/server.log, $dir/agent.log" >&2
	fi
}
trap cleanup EXIT

need_free "$port" PORT "lormas-server"
need_free "$health_port" HEALTH_PORT "the agent's health endpoint"

# A fixed admin token for this checkout, so the commands below keep working across restarts.
if [ ! -s "$dir/admin-token" ]; then
	(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin-token")
fi
ADMIN=$(cat "$dir/admin-token")
auth="Authorization: Bearer $ADMIN"

ADMIN_TOKEN=$ADMIN DATA_DIR=$dir/data LISTEN_ADDR=127.0.0.1:$port \
	nohup bin/lormas-server >"$dir/server.log" 2>&1 &
server_pid=$!
echo "$server_pid" >"$dir/server.pid"
for _ in $(seq 100); do
	curl -fs "$base/healthz" >/dev/null 2>&1 && break
	alive "$server_pid" || fail "lormas-server exited: $(tail -n 1 "$dir/server.log")"
	sleep 0.1
done
curl -fs "$base/healthz" >/dev/null 2>&1 || fail "lormas-server did not answer on $base/healthz within 10 s; see $dir/server.log"

# save_token JSON: keep the "token" of a server response in $dir/node-token (0600).
save_token() {
	(umask 077 && printf '%s\n' "$1" | grep -o '"token":"[^"]*"' | cut -d'"' -f4 >"$dir/node-token")
	[ -s "$dir/node-token" ] || fail "the server's answer holds no node token; see $dir/server.log"
}

# rotate: issue the node a new token (the old one stops working).
rotate() {
	local resp
	resp=$(curl -fs -X PATCH "$base/api/nodes/$NODE/token" -H "$auth") ||
		fail "issuing node $NODE a new token failed; see $dir/server.log"
	save_token "$resp"
	echo "quickstart: issued node $NODE a new token"
}

# The node this checkout registered, if the server still knows it: a server whose data was
# removed (rm -rf .lormas/data) has forgotten it and its token, so the node is registered again.
NODE=""
[ ! -s "$dir/node-id" ] || NODE=$(cat "$dir/node-id")
if [ -n "$NODE" ]; then
	code=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/nodes/$NODE" -H "$auth") || true
	case $code in
	200) ;;
	404)
		echo "quickstart: the server does not know node $NODE (its data was removed?): registering this host again"
		rm -rf "$dir/node-id" "$dir/node-token" "$dir/state"
		NODE=""
		;;
	*) fail "GET $base/api/nodes/$NODE answered HTTP $code; see $dir/server.log" ;;
	esac
fi

name=$(hostname)
if [ -z "$NODE" ]; then
	# Register the node; its token goes into a file the agent re-reads before every dial.
	resp=$(curl -s -w '\n%{http_code}' -X POST "$base/api/nodes" -H "$auth" -H 'Content-Type: application/json' \
		-d "{\"name\": \"$name\", \"description\": \"quickstart node\"}") || fail "cannot reach $base; see $dir/server.log"
	code=$(printf '%s\n' "$resp" | tail -n 1)
	body=$(printf '%s\n' "$resp" | sed '$d')
	case $code in
	201)
		NODE=$(printf '%s\n' "$body" | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
		save_token "$body"
		;;
	409)
		# This host's node exists, but this checkout lost its id and token: take it over.
		NODE=$(curl -fs "$base/api/nodes" -H "$auth" | grep -o '"id":"[^"]*","name":"[^"]*"' |
			grep -F "\"name\":\"$name\"" | head -1 | cut -d'"' -f4) || true
		[ -n "$NODE" ] || fail "node $name exists on the server but was not found in GET /api/nodes"
		rotate
		;;
	*) fail "registering node $name failed: HTTP $code $body" ;;
	esac
	echo "$NODE" >"$dir/node-id"
elif [ ! -s "$dir/node-token" ]; then
	rotate
fi

SERVER_URL=ws://127.0.0.1:$port NODE_TOKEN_FILE=$dir/node-token NODE_NAME=$(hostname) \
	STATE_DIR=$dir/state VOLUME_ROOTS=$PWD/$dir/volumes HEALTH_ADDR=127.0.0.1:$health_port \
	nohup bin/lormas-agent >"$dir/agent.log" 2>&1 &
agent_pid=$!
echo "$agent_pid" >"$dir/agent.pid"
connected() {
	curl -fs "$base/api/nodes/$NODE" -H "$auth" 2>/dev/null | grep -q '"connected":true'
}
for _ in $(seq 100); do
	connected && break
	alive "$agent_pid" || fail "lormas-agent exited: $(grep -v '^\s*$' "$dir/agent.log" | tail -n 1)"
	if grep -q 'server rejected the node token' "$dir/agent.log"; then
		fail "the server refused the node token in $dir/node-token (rotated or revoked): remove that file and run again; quickstart then issues the node a new token"
	fi
	sleep 0.2
done
connected || fail "lormas-agent did not connect within 20 s; see $dir/agent.log"

ok=true
cat <<TXT
lormas-server on $base, lormas-agent connected (logs: $dir/server.log, $dir/agent.log).
  export ADMIN=$ADMIN NODE=$NODE LORMAS_URL=$base LORMAS_TOKEN=$ADMIN LORMAS_NODE=$NODE
Stop both with: scripts/quickstart.sh stop (the containers the agent created keep running)
TXT
