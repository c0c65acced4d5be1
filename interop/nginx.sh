#!/usr/bin/env bash
# Starts nginx (Debian's package) on loopback as a target that requires
# client certificates, for connmgr's interoperability tests:
#
#   interop/nginx.sh DIR PORT
#
# DIR must be an empty directory. The script makes a certificate set there
# with openssl: a server CA and the server's certificate (for 127.0.0.1), a
# client CA and a client certificate, and another CA with a client
# certificate nginx does not trust. nginx listens on 127.0.0.1:PORT with
# ssl_verify_client on and answers 200 "client <subject> verify <result>"
# to a request with a certificate it accepts. On success nginx is left
# running (its PID is in DIR/nginx.pid: the caller stops it) and
# DIR/nginx.env holds the URL and the paths of the certificate set.
set -euo pipefail

die() {
	echo "nginx.sh: $*" >&2
	exit 1
}

[ $# -eq 2 ] || die "usage: $0 DIR PORT"
dir=$1
port=$2
[ -d "$dir" ] || die "$dir is not a directory"
[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
case $port in '' | *[!0-9]*) die "PORT must be a number, got '$port'" ;; esac
nginx=$(command -v nginx || true)
[ -n "$nginx" ] || [ ! -x /usr/sbin/nginx ] || nginx=/usr/sbin/nginx
[ -n "$nginx" ] || die "nginx is missing (interop/run.sh installs it when run as root)"
command -v openssl >/dev/null || die "openssl is missing"
dir=$(cd "$dir" && pwd)
umask 077

# 1. The certificate set, P-256 keys, valid for two days.
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key" 2>/dev/null; }
ca() { # ca NAME CN
	key "$1"
	openssl req -x509 -new -key "$dir/$1.key" -subj "/CN=$2" -days 2 -out "$dir/$1.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # leaf NAME CA CN EXTENSIONS
	key "$1"
	openssl req -new -key "$dir/$1.key" -subj "/CN=$3" 2>/dev/null |
		openssl x509 -req -CA "$dir/$2.crt" -CAkey "$dir/$2.key" -CAcreateserial -days 2 \
			-extfile <(printf '%b' "$4") -out "$dir/$1.crt" 2>/dev/null
}
ca serverca "connmgr interop server CA"
ca clientca "connmgr interop client CA"
ca otherca "connmgr interop other CA"
leaf server serverca 127.0.0.1 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature'
leaf client clientca "connmgr interop client" 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature'
leaf other otherca "connmgr interop stranger" 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature'
for f in serverca clientca otherca server client other; do
	[ -s "$dir/$f.crt" ] || die "openssl did not make $f.crt"
done

# 2. nginx in the foreground (daemon off), from DIR only.
mkdir -p "$dir/tmp"
cat >"$dir/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $dir/nginx.master.pid;
error_log $dir/error.log info;
events { worker_connections 64; }
http {
	access_log $dir/access.log;
	# Idle connections close soon, so that a later call makes a new
	# handshake (the expired-certificate case).
	keepalive_timeout 1s;
	client_body_temp_path $dir/tmp/body;
	proxy_temp_path $dir/tmp/proxy;
	fastcgi_temp_path $dir/tmp/fastcgi;
	uwsgi_temp_path $dir/tmp/uwsgi;
	scgi_temp_path $dir/tmp/scgi;
	server {
		listen 127.0.0.1:$port ssl;
		ssl_certificate $dir/server.crt;
		ssl_certificate_key $dir/server.key;
		ssl_client_certificate $dir/clientca.crt;
		ssl_verify_client on;
		ssl_verify_depth 2;
		location / {
			default_type text/plain;
			return 200 "client \$ssl_client_s_dn verify \$ssl_client_verify\n";
		}
	}
}
EOF
"$nginx" -t -q -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" || die "nginx refuses its configuration (see $dir/error.log)"
"$nginx" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/nginx.out" 2>&1 &
echo $! >"$dir/nginx.pid"

# 3. Ready when it answers the client certificate (10 s at most).
deadline=$((SECONDS + 10))
until curl -sf --max-time 2 --cacert "$dir/serverca.crt" --cert "$dir/client.crt" --key "$dir/client.key" \
	-o /dev/null "https://127.0.0.1:$port/"; do
	if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "$(cat "$dir/nginx.pid")" 2>/dev/null; then
		kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
		tail -n 20 "$dir/error.log" >&2 || true
		die "nginx did not answer on 127.0.0.1:$port"
	fi
	sleep 0.2
done

cat >"$dir/nginx.env" <<EOF
NGINX_URL=https://127.0.0.1:$port
NGINX_SERVER_CA=$dir/serverca.crt
NGINX_CLIENT_CERT=$dir/client.crt
NGINX_CLIENT_KEY=$dir/client.key
NGINX_CLIENT_CA_CERT=$dir/clientca.crt
NGINX_CLIENT_CA_KEY=$dir/clientca.key
NGINX_OTHER_CERT=$dir/other.crt
NGINX_OTHER_KEY=$dir/other.key
NGINX_LOG=$dir/error.log
EOF
echo "nginx.sh: nginx $("$nginx" -v 2>&1 | sed 's/.*nginx\///') on https://127.0.0.1:$port (ssl_verify_client on)"
