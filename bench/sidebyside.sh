#!/usr/bin/env bash
# make sidebyside: wrk against a built connmgr, a bare httputil.ReverseProxy
# and Caddy, separate processes on 127.0.0.1, each setting the
# Authorization header in front of the same 600-byte upstream. Rounds take
# the three in turn; prints each run and the medians. Needs wrk and caddy
# (Debian packages; installed when run as root with apt-get). Everything it
# starts is stopped by PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-8s}
for tool in wrk caddy; do
	if ! command -v "$tool" >/dev/null; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
		else
			echo "sidebyside: $tool is needed (apt-get install $tool)" >&2
			exit 1
		fi
	fi
done

dir=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

# free_port asks the kernel for an unused loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
up=$(free_port) bare=$(free_port) caddyp=$(free_port) cm=$(free_port)

CGO_ENABLED=0 go build -trimpath -o "$dir/connmgr" ./cmd/connmgr
go build -o "$dir/sidebyside" ./bench/sidebyside
"$dir/sidebyside" -upstream "127.0.0.1:$up" & pids+=($!)
"$dir/sidebyside" -proxy "127.0.0.1:$bare" -target "http://127.0.0.1:$up" & pids+=($!)
cat >"$dir/Caddyfile" <<CADDY
{
	admin off
	auto_https off
}
http://127.0.0.1:$caddyp {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$up {
		header_up Authorization "Bearer sidebyside-token"
	}
}
CADDY
caddy run --config "$dir/Caddyfile" --adapter caddyfile >"$dir/caddy.log" 2>&1 & pids+=($!)
caddy_pid=$!
key=sidebyside-admin-token-0123456789abcdef
env -i PATH="$PATH" HOME="$dir" CONNMGR_ADDR="127.0.0.1:$cm" CONNMGR_DATA_DIR="$dir/data" CONNMGR_ADMIN_TOKEN="$key" \
	CONNMGR_EGRESS_ALLOW=127.0.0.0/8 CONNMGR_LOG_LEVEL=info "$dir/connmgr" >"$dir/connmgr.log" 2>&1 & pids+=($!)
cm_pid=$!
for _ in $(seq 1 50); do
	curl -sf "http://127.0.0.1:$cm/healthz" >/dev/null && curl -s "http://127.0.0.1:$caddyp/" >/dev/null && break
	sleep 0.2
done
curl -sf -o /dev/null -X POST "http://127.0.0.1:$cm/api/v1/connections" -H "Authorization: Bearer $key" \
	-H 'Content-Type: application/json' -d '{"name": "Conn_SideBySide", "role": "INVOKE",
	"baseUrl": "http://127.0.0.1:'"$up"'/api", "security": {"policy": "OAUTH2_CLIENT_CREDENTIALS",
	"tokenUrl": "http://127.0.0.1:'"$up"'/token", "clientId": "sidebyside", "clientSecret": "sidebyside-secret"}}'

declare -A url pid
url[bare]="http://127.0.0.1:$bare/api/data" pid[bare]=${pids[1]}
url[caddy]="http://127.0.0.1:$caddyp/api/data" pid[caddy]=$caddy_pid
url[connmgr]="http://127.0.0.1:$cm/invoke/Conn_SideBySide/data" pid[connmgr]=$cm_pid
names=(bare caddy connmgr)
for n in "${names[@]}"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "${url[$n]}")
	[ "$code" = 200 ] || { echo "sidebyside: $n answers HTTP $code" >&2; exit 1; }
	wrk -t2 -c32 -d2s -H "Authorization: Bearer $key" "${url[$n]}" >/dev/null # warm up
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
results="$dir/results"
echo "round proxy req/s p50_ms p99_ms cpu_us_per_request errors"
for round in $(seq 1 "$ROUNDS"); do
	for n in "${names[@]}"; do
		c0=$(cpu "${pid[$n]}")
		out=$(wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $key" "${url[$n]}")
		c1=$(cpu "${pid[$n]}")
		echo "$out" | awk -v round="$round" -v n="$n" -v c0="$c0" -v c1="$c1" -v tick="$tick" '
			function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
			/requests in/ { reqs = $1 } /Requests\/sec/ { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
			/Non-2xx|Socket errors/ { errs = errs $0 }
			END { printf "%d %s %.0f %.2f %.2f %.0f %s\n", round, n, rps, p50, p99, (c1 - c0) * 1e6 / tick / reqs, errs == "" ? 0 : errs }' | tee -a "$results"
	done
done
echo
awk 'function median(list,   a, c, i, j, t) { c = split(list, a, " ");
		for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
		return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2 }
	{ rps[$2] = rps[$2] " " $3; p50[$2] = p50[$2] " " $4; p99[$2] = p99[$2] " " $5; cpu[$2] = cpu[$2] " " $6 }
	END { printf "medians of %d rounds    req/s    p50 ms   p99 ms   CPU µs/request\n", NR / 3;
		split("bare caddy connmgr", ns, " ");
		for (i = 1; i <= 3; i++) { n = ns[i]; printf "%-20s %8.0f %8.2f %8.2f %8.0f\n", n, median(rps[n]), median(p50[n]), median(p99[n]), median(cpu[n]) }
		printf "connmgr / bare:  throughput %.2fx, p99 %.2fx\n", median(rps["connmgr"]) / median(rps["bare"]), median(p99["connmgr"]) / median(p99["bare"]);
		printf "connmgr / Caddy: throughput %.2fx, p99 %.2fx\n", median(rps["connmgr"]) / median(rps["caddy"]), median(p99["connmgr"]) / median(p99["caddy"]) }' "$results"
