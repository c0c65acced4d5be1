#!/usr/bin/env bash
# make interop: connmgr against real authorization servers it did not write.
#
# Installs what is missing (as root, from Debian's packages), provisions
# glewlwyd (interop/glewlwyd.sh), nginx requiring client certificates
# (interop/nginx.sh), versitygw built from the Go module proxy
# (interop/versitygw.sh) and an OAuth 1.0 resource verified by oauthlib
# (interop/oauth1.py), builds connmgr from this tree and starts it, then runs
# the Go tests under interop/ (build tag interop) against them, through
# connmgr's public HTTP API only. Everything listens on 127.0.0.1,
# lives in one temporary directory and is stopped by PID on exit.
#
# INTEROP_KEEP=1 keeps the temporary directory (logs, databases) for a look
# afterwards. INTEROP_WATCH (a Go duration, default 100s) sets how long the
# scheduled-refresh case watches.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}

say() { echo "interop: $*"; }
die() {
	echo "interop: $*" >&2
	exit 1
}

# 1. Prerequisites: command → Debian package.
declare -A packages=([glewlwyd]=glewlwyd [curl]=curl [jq]=jq [openssl]=openssl [sqlite3]=sqlite3 [basenc]=coreutils
	[nginx]=nginx)
missing=()
for cmd in "${!packages[@]}"; do
	command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("${packages[$cmd]}")
done
# The OAuth 1.0 resource (interop/oauth1.py) runs on Debian's Python with oauthlib.
python=/usr/bin/python3
"$python" -c 'import oauthlib.oauth1' 2>/dev/null || missing+=(python3 python3-oauthlib)
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		die "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
	fi
	say "installing ${missing[*]} from Debian's packages"
	aptlog=$(mktemp)
	if ! { timeout 10m apt-get update -qq &&
		DEBIAN_FRONTEND=noninteractive timeout 10m apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$aptlog" 2>&1; then
		tail -n 20 "$aptlog" >&2
		rm -f "$aptlog"
		die "apt-get install ${missing[*]} failed"
	fi
	rm -f "$aptlog"
	# On a machine with systemd, the package starts its own glewlwyd service
	# (port 4593, all interfaces); the tests run their own, so stop that one.
	if [[ " ${missing[*]} " == *" glewlwyd "* ]] && command -v systemctl >/dev/null &&
		systemctl is-active --quiet glewlwyd 2>/dev/null; then
		say "stopping and disabling the glewlwyd service the package started"
		systemctl disable --now glewlwyd >/dev/null 2>&1 || say "could not stop the glewlwyd service"
	fi
	# Likewise nginx's own service (port 80, all interfaces).
	if [[ " ${missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null &&
		systemctl is-active --quiet nginx 2>/dev/null; then
		say "stopping and disabling the nginx service the package started"
		systemctl disable --now nginx >/dev/null 2>&1 || say "could not stop the nginx service"
	fi
fi
command -v "$GO" >/dev/null || die "no Go toolchain ($GO)"

# 2. One temporary directory; everything started is stopped by PID on exit.
work=$(mktemp -d "${TMPDIR:-/tmp}/connmgr-interop.XXXXXX")
pids=()
# alive PID: the process runs (a zombie does not: glewlwyd is started by
# glewlwyd.sh, so this shell cannot reap it).
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	local rc=$? pid
	for pid in "${pids[@]}"; do
		if alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 1 50); do
				alive "$pid" || break
				sleep 0.2
			done
			alive "$pid" && kill -KILL "$pid" 2>/dev/null
		fi
		wait "$pid" 2>/dev/null || true
	done
	if [ "${INTEROP_KEEP:-}" = 1 ]; then
		say "kept $work (glewlwyd/glewlwyd.log, nginx/error.log, versitygw/versitygw.log, connmgr.log)"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a port nothing listens on at 127.0.0.1.
free_port() {
	local port
	for _ in $(seq 1 100); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	die "no free port found on 127.0.0.1"
}
# ports: five distinct free ones.
ports=()
while [ ${#ports[@]} -lt 5 ]; do
	p=$(free_port)
	[[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
glewlwyd_port=${ports[0]} connmgr_port=${ports[1]} nginx_port=${ports[2]} s3_port=${ports[3]} oauth1_port=${ports[4]}
connmgr_url="http://127.0.0.1:$connmgr_port"

# 3. glewlwyd, provisioned through its admin API.
# glewlwyd.sh stops glewlwyd itself when it fails.
mkdir "$work/glewlwyd"
./interop/glewlwyd.sh "$work/glewlwyd" "$glewlwyd_port" "$connmgr_url/oauth/callback" ||
	die "provisioning glewlwyd failed"
pids+=("$(cat "$work/glewlwyd/glewlwyd.pid")")

# nginx requiring client certificates (a certificate set made by openssl),
# and versitygw, built from the module proxy: targets of the #11 cases.
mkdir "$work/nginx" "$work/versitygw"
./interop/nginx.sh "$work/nginx" "$nginx_port" || die "starting nginx failed"
pids+=("$(cat "$work/nginx/nginx.pid")")
say "building versitygw from the module proxy (the first time takes a few minutes)"
GO="$GO" ./interop/versitygw.sh "$work/versitygw" "$s3_port" || die "starting versitygw failed"
pids+=("$(cat "$work/versitygw/versitygw.pid")")

# An OAuth 1.0 protected resource verified by oauthlib, with throw-away
# credentials (written to files of mode 0600 only, never printed).
mkdir -m 700 "$work/oauth1"
oauth1_secret=$(openssl rand -hex 16)
oauth1_token_secret=$(openssl rand -hex 16)
(
	umask 077
	printf '{"consumerKey": "interop-consumer", "consumerSecret": "%s", "token": "interop-token", "tokenSecret": "%s"}\n' \
		"$oauth1_secret" "$oauth1_token_secret" >"$work/oauth1/credentials.json"
	printf 'OAUTH1_URL=http://127.0.0.1:%s\nOAUTH1_CONSUMER_KEY=interop-consumer\nOAUTH1_CONSUMER_SECRET=%s\nOAUTH1_TOKEN=interop-token\nOAUTH1_TOKEN_SECRET=%s\n' \
		"$oauth1_port" "$oauth1_secret" "$oauth1_token_secret" >"$work/oauth1/oauth1.env"
)
"$python" interop/oauth1.py "$work/oauth1/credentials.json" "$oauth1_port" >"$work/oauth1/oauth1.log" 2>&1 &
pids+=("$!")
deadline=$((SECONDS + 10))
until curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$oauth1_port/"; do
	{ [ "$SECONDS" -lt "$deadline" ] && alive "${pids[-1]}"; } || die "the OAuth 1.0 resource did not start (see $work/oauth1/oauth1.log)"
	sleep 0.2
done
say "OAuth 1.0 resource (oauthlib $("$python" -c 'import oauthlib; print(oauthlib.__version__)')) on http://127.0.0.1:$oauth1_port"

# 4. connmgr, built from this tree.
say "building connmgr"
CGO_ENABLED=0 "$GO" build -o "$work/connmgr" ./cmd/connmgr
admin_token=$(openssl rand -hex 20)
mkdir -m 700 "$work/connmgr-data"
env CONNMGR_ADDR="127.0.0.1:$connmgr_port" CONNMGR_PUBLIC_URL="$connmgr_url" \
	CONNMGR_DATA_DIR="$work/connmgr-data" CONNMGR_EGRESS_ALLOW=127.0.0.0/8 \
	CONNMGR_ADMIN_TOKEN="$admin_token" CONNMGR_REFRESH_SCHEDULE='@every 1s' \
	"$work/connmgr" serve >"$work/connmgr.log" 2>&1 &
pids+=("$!")
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
	curl -sf --max-time 2 -o /dev/null "$connmgr_url/healthz" && break
	alive "${pids[-1]}" || {
		tail -n 20 "$work/connmgr.log" >&2
		die "connmgr exited at start"
	}
	sleep 0.25
done
curl -sf --max-time 2 -o /dev/null "$connmgr_url/readyz" || {
	tail -n 20 "$work/connmgr.log" >&2
	die "connmgr is not ready on $connmgr_url within 20 s"
}
say "connmgr ready on $connmgr_url (refresh job @every 1s)"

# 5. The cases.
{
	cat "$work/glewlwyd/glewlwyd.env" "$work/nginx/nginx.env" "$work/versitygw/versitygw.env" "$work/oauth1/oauth1.env"
	echo "CONNMGR_URL=$connmgr_url"
	echo "CONNMGR_ADMIN_TOKEN=$admin_token"
	echo "CONNMGR_LOG=$work/connmgr.log"
} >"$work/interop.env"
chmod 600 "$work/interop.env"
rc=0
INTEROP_ENV="$work/interop.env" timeout --kill-after=10s 15m \
	"$GO" test -tags interop -v -count=1 -timeout 12m ./interop/... || rc=$?
if [ "$rc" != 0 ]; then
	say "some cases failed (exit $rc); INTEROP_KEEP=1 keeps the logs"
fi
exit "$rc"
