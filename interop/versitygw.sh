#!/usr/bin/env bash
# Builds and starts versitygw, an S3-compatible server that verifies AWS
# Signature Version 4 (Apache-2.0, github.com/versity/versitygw, through
# the Go module proxy), on loopback for connmgr's interoperability tests:
#
#   interop/versitygw.sh DIR PORT
#
# DIR must be an empty directory. versitygw is built into DIR/bin with
# `go install` (VERSITYGW_VERSION, default v1.8.0) and serves its posix
# backend from DIR/data with a throw-away root access key. On success it is
# left running (its PID is in DIR/versitygw.pid: the caller stops it) and
# DIR/versitygw.env (mode 0600) holds the URL, the region and the key,
# which is never printed.
set -euo pipefail

die() {
	echo "versitygw.sh: $*" >&2
	exit 1
}

[ $# -eq 2 ] || die "usage: $0 DIR PORT"
dir=$1
port=$2
version=${VERSITYGW_VERSION:-v1.8.0}
region=us-east-1
GO=${GO:-go}
[ -d "$dir" ] || die "$dir is not a directory"
[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
case $port in '' | *[!0-9]*) die "PORT must be a number, got '$port'" ;; esac
command -v "$GO" >/dev/null || die "no Go toolchain ($GO)"
dir=$(cd "$dir" && pwd)
umask 077

# 1. Build it from the module proxy (its own go.mod, not connmgr's).
mkdir -p "$dir/bin" "$dir/data"
if ! (cd "$dir" && GOBIN="$dir/bin" GOFLAGS=-mod=mod timeout 15m "$GO" install "github.com/versity/versitygw/cmd/versitygw@$version") \
	>"$dir/build.log" 2>&1; then
	tail -n 20 "$dir/build.log" >&2
	die "go install github.com/versity/versitygw/cmd/versitygw@$version failed"
fi

# 2. Start it: root credentials only, posix backend in DIR/data.
access="AKIAINTEROP$(openssl rand -hex 6 | tr a-f A-F)"
secret=$(openssl rand -base64 30 | tr -d '/+=' | head -c 40)
"$dir/bin/versitygw" --access "$access" --secret "$secret" --region "$region" --port "127.0.0.1:$port" \
	posix "$dir/data" >"$dir/versitygw.log" 2>&1 &
echo $! >"$dir/versitygw.pid"

# 3. Ready when it answers (an unsigned request is refused: 403).
deadline=$((SECONDS + 20))
until curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" | grep -q '^[1-5]'; do
	if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$(cat "$dir/versitygw.pid")" 2>/dev/null; then
		kill "$(cat "$dir/versitygw.pid")" 2>/dev/null || true
		tail -n 20 "$dir/versitygw.log" >&2 || true
		die "versitygw did not answer on 127.0.0.1:$port"
	fi
	sleep 0.2
done

cat >"$dir/versitygw.env" <<EOF
S3_URL=http://127.0.0.1:$port
S3_REGION=$region
S3_ACCESS_KEY=$access
S3_SECRET_KEY=$secret
S3_VERSION=$version
S3_LOG=$dir/versitygw.log
EOF
echo "versitygw.sh: versitygw $version on http://127.0.0.1:$port (posix backend in $dir/data)"
