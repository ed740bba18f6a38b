#!/bin/sh
# Install the Lormas node agent as a systemd service on a bare host.
#
#   go build -trimpath -o bin/ ./cmd/lormas-agent
#   sudo SERVER_URL=wss://lormas.example.com scripts/install.sh --no-start
#   sudoedit /etc/lormas-agent/agent.env     # set NODE_TOKEN or ENROLLMENT_TOKEN (off the command line)
#   sudo systemctl start lormas-agent
#
# What it does (every step is idempotent: run it again to upgrade the binary):
#   1. installs the binary as /usr/local/bin/lormas-agent (mode 0755);
#   2. creates the system user lormas-agent (no login, no home), in group docker when it exists;
#   3. creates /etc/lormas-agent/agent.env (mode 0600, root) from SERVER_URL, NODE_TOKEN,
#      NODE_TOKEN_FILE, ENROLLMENT_TOKEN, ENROLLMENT_TOKEN_FILE and NODE_NAME in the environment;
#      an existing agent.env is never overwritten;
#   4. installs the unit as /etc/systemd/system/lormas-agent.service, reloads systemd, enables the
#      unit and (re)starts it.
#
# Options:
#   --binary PATH   the lormas-agent binary (default: bin/lormas-agent beside this script's repo,
#                   else ./lormas-agent)
#   --root DIR      install into DIR instead of / (also DESTDIR=DIR); implies --no-start and
#                   enables the unit offline (systemctl --root)
#   --no-start      install and enable the unit, but do not start the service
#   -h, --help      this text
set -eu

prog=$(basename "$0")
script_dir=$(cd "$(dirname "$0")" && pwd)
repo_dir=$(dirname "$script_dir")

user=lormas-agent
unit=lormas-agent.service
root=${DESTDIR:-/}
binary=
start=yes

usage() {
	sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() {
	echo "$prog: $*" >&2
	exit 1
}

info() {
	echo "$prog: $*"
}

while [ $# -gt 0 ]; do
	case $1 in
	--binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
	--binary=*) binary=${1#*=}; shift ;;
	--root) [ $# -ge 2 ] || die "--root needs a directory"; root=$2; shift 2 ;;
	--root=*) root=${1#*=}; shift ;;
	--no-start) start=no; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

if [ -z "$binary" ]; then
	if [ -x "$repo_dir/bin/lormas-agent" ]; then
		binary=$repo_dir/bin/lormas-agent
	else
		binary=./lormas-agent
	fi
fi
if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
	die "no executable lormas-agent at $binary (build it: go build -o bin/ ./cmd/lormas-agent, or pass --binary)"
fi
[ -f "$script_dir/$unit" ] || die "unit file $script_dir/$unit is missing"

root=$(cd "$root" 2>/dev/null && pwd) || die "root directory does not exist"
if [ "$root" = / ]; then
	prefix=
else
	prefix=$root
	start=no
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (it creates a system user and installs into /usr/local and /etc)"

# 1. Binary.
install -D -m 0755 "$binary" "$prefix/usr/local/bin/lormas-agent"
info "installed $prefix/usr/local/bin/lormas-agent"

# 2. System user. With a root prefix, useradd --prefix edits $root/etc/passwd without chroot.
group_exists() {
	if [ -z "$prefix" ]; then
		getent group "$1" >/dev/null 2>&1
	else
		grep -q "^$1:" "$prefix/etc/group" 2>/dev/null
	fi
}
user_exists() {
	if [ -z "$prefix" ]; then
		getent passwd "$1" >/dev/null 2>&1
	else
		grep -q "^$1:" "$prefix/etc/passwd" 2>/dev/null
	fi
}
nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/bin/false

if user_exists "$user"; then
	info "user $user exists"
else
	set -- --system --user-group --no-create-home --home-dir /var/lib/lormas-agent \
		--shell "$nologin" --comment "Lormas node agent"
	[ -n "$prefix" ] && set -- --prefix "$prefix" "$@"
	useradd "$@" "$user"
	info "created system user $user"
fi
if group_exists docker; then
	if [ -n "$prefix" ]; then
		usermod --prefix "$prefix" -a -G docker "$user"
	else
		usermod -a -G docker "$user"
	fi
	info "user $user is in group docker (access to /var/run/docker.sock)"
else
	echo "$prog: WARNING: no docker group: the agent cannot reach /var/run/docker.sock until it can;" \
		"check the socket's group with: stat -c %G /var/run/docker.sock" >&2
fi

# 3. Volume root. The agent makes every bind source itself, as one directory directly under a
# volume root (VOLUME_ROOTS, default /var/lib/lormas/volumes), so it must be able to write there;
# the unit lists the default root in ReadWritePaths. Workloads never see the root itself. Mode
# 0700: no other host user may enter it, or they could run the setuid programs and open the
# device nodes a root workload leaves in its directory. An existing root is made 0700 too.
volume_root=$prefix/var/lib/lormas/volumes
if [ -n "$prefix" ]; then
	user_ids=$(awk -F: -v u="$user" '$1 == u {print $3 ":" $4}' "$prefix/etc/passwd")
else
	user_ids=$(id -u "$user"):$(id -g "$user")
fi
if [ -d "$volume_root" ]; then
	if [ "$(stat -c %u "$volume_root")" = "${user_ids%%:*}" ]; then
		chmod 0700 "$volume_root"
		info "kept existing volume root $volume_root (mode now 0700)"
	else
		echo "$prog: WARNING: volume root $volume_root is not owned by $user: the agent cannot make" \
			"bind sources there; run: chown $user_ids $volume_root && chmod 0700 $volume_root" >&2
	fi
else
	install -d -m 0700 "$volume_root"
	chown "$user_ids" "$volume_root"
	info "created volume root $volume_root (owner $user, mode 0700)"
fi

# 4. Settings. Never overwritten: it holds the operator's settings and possibly a token.
env_file=$prefix/etc/lormas-agent/agent.env
if [ -e "$env_file" ]; then
	info "kept existing $env_file"
else
	install -d -m 0755 "$prefix/etc/lormas-agent"
	old_umask=$(umask)
	umask 077
	tmp=$env_file.tmp.$$
	{
		echo "# Lormas node agent settings (environment variables); see the agent's README."
		echo "# This file is read by systemd as root; keep it mode 0600."
		echo "SERVER_URL=${SERVER_URL:-ws://localhost:3000}"
		for var in NODE_TOKEN NODE_TOKEN_FILE ENROLLMENT_TOKEN ENROLLMENT_TOKEN_FILE NODE_NAME; do
			eval "val=\${$var:-}"
			if [ -n "$val" ]; then
				echo "$var=$val"
			else
				echo "#$var="
			fi
		done
		echo "#LOG_LEVEL=info"
		echo "#LOG_FORMAT=json"
		echo "# Health endpoint; the default is 127.0.0.1:9321 (this host only); :9321 for every interface."
		echo "#HEALTH_ADDR=:9321"
	} >"$tmp"
	chmod 0600 "$tmp"
	chown 0:0 "$tmp"
	mv "$tmp" "$env_file"
	umask "$old_umask"
	info "created $env_file (mode 0600): set SERVER_URL and a token source there"
fi

# 5. Unit.
install -D -m 0644 "$script_dir/$unit" "$prefix/etc/systemd/system/$unit"
info "installed $prefix/etc/systemd/system/$unit"
if [ -n "$prefix" ]; then
	systemctl --root="$root" enable "$unit"
elif [ "$start" = yes ]; then
	systemctl daemon-reload
	systemctl enable "$unit"
	# restart, not start: a second run after an upgrade must run the new binary.
	systemctl restart "$unit"
	info "started $unit: journalctl -u $unit -f"
else
	systemctl daemon-reload 2>/dev/null || true
	systemctl enable "$unit"
	info "enabled $unit (not started): systemctl start $unit"
fi
