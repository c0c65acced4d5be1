#!/usr/bin/env bash
# Provisions and starts glewlwyd (Debian's package) on loopback for connmgr's
# interoperability tests, as /work/shared/interop/glewlwyd.md describes:
#
#   interop/glewlwyd.sh DIR PORT REDIRECT_URI
#
# DIR must be an empty directory; glewlwyd runs from there with a throw-away
# SQLite database and logs to DIR/glewlwyd.log. On success glewlwyd is left
# running (its PID is in DIR/glewlwyd.pid: the caller stops it) and
# DIR/glewlwyd.env (mode 0600) holds what the tests need: URLs and the
# throw-away client secrets, which are never printed.
#
# Two instances of the oidc plugin are configured: "oidc" (/api/oidc) with
# ACCESS_TTL-second access tokens (default 3600) and "oidc40" (/api/oidc40)
# with SHORT_TTL-second ones (default 40), for watching scheduled refresh.

# The $names inside single quotes are jq's, not the shell's.
# shellcheck disable=SC2016
set -euo pipefail

die() {
	echo "glewlwyd.sh: $*" >&2
	exit 1
}

[ $# -eq 3 ] || die "usage: $0 DIR PORT REDIRECT_URI"
dir=$1
port=$2
redirect_uri=$3
access_ttl=${ACCESS_TTL:-3600}
short_ttl=${SHORT_TTL:-40}

[ -d "$dir" ] || die "$dir is not a directory"
[ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
case $port in '' | *[!0-9]*) die "PORT must be a number, got '$port'" ;; esac
for cmd in glewlwyd curl jq openssl sqlite3 basenc; do
	command -v "$cmd" >/dev/null || die "$cmd is missing (interop/run.sh installs it when run as root)"
done
schema=/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3
[ -r "$schema" ] || die "$schema is missing: is Debian's glewlwyd package installed?"

dir=$(cd "$dir" && pwd)
umask 077
base="http://127.0.0.1:$port"
api="$base/api"
log="$dir/glewlwyd.log"

# rand_hex N: N random bytes as hex.
rand_hex() { openssl rand -hex "$1"; }

# 1. Configuration: the packaged keys, on loopback, logging to a file.
cat >"$dir/glewlwyd.conf" <<EOF
port=$port
bind_address="127.0.0.1"
external_url="$base"
login_url="login.html"
api_prefix="api"
allow_origin="*"
allow_methods="GET, POST, PUT, DELETE, OPTIONS"
allow_headers="Origin, X-Requested-With, Content-Type, Accept, Bearer, Authorization, DPoP"
expose_headers="Content-Encoding, Authorization"
log_mode="file"
log_level="DEBUG"
log_file="$log"
cookie_secure=0
cookie_same_site="empty"
session_expiration=2419200
session_key="GLEWLWYD2_SESSION_ID"
admin_session_authentication="cookie,api_key"
profile_session_authentication="cookie"
allow_multiple_user_per_session=true
login_api_enabled=true
plugin_api_run_enabled=""
add_x_frame_option_header_deny=true
max_post_size=16778240
admin_scope="g_admin"
profile_scope="g_profile"
user_module_path="/usr/lib/glewlwyd/user"
client_module_path="/usr/lib/glewlwyd/client"
user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
plugin_module_path="/usr/lib/glewlwyd/plugin"
use_secure_connection=false
# glewlwyd 2.7.5 exits at start unless these two are set, even without TLS;
# the files need not exist.
secure_connection_key_file="$dir/unused-tls.key"
secure_connection_pem_file="$dir/unused-tls.pem"
hash_algorithm="SHA512"
database =
{
  type = "sqlite3"
  path = "$dir/glewlwyd.db"
};
EOF

# 2. Database: the package's schema and default data (admin/password).
sqlite3 "$dir/glewlwyd.db" <"$schema" || die "loading $schema into $dir/glewlwyd.db failed"

# 3. Start; ready when GET /config/ answers (20 s at most). If provisioning
# fails from here on, glewlwyd is stopped again; on success it keeps running.
glewlwyd -c "$dir/glewlwyd.conf" >"$dir/glewlwyd.stdout" 2>&1 &
pid=$!
echo "$pid" >"$dir/glewlwyd.pid"
# shellcheck disable=SC2317 # called by the EXIT trap
stop_on_failure() {
	local rc=$?
	if [ "$rc" != 0 ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	exit "$rc"
}
trap stop_on_failure EXIT
ready=
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
	if curl -sf --max-time 2 -o /dev/null "$base/config/"; then
		ready=1
		break
	fi
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.25
done
if [ -z "$ready" ]; then
	tail -n 20 "$log" "$dir/glewlwyd.stdout" >&2 2>/dev/null || true
	die "glewlwyd did not answer on $base/config/ within 20 s (log: $log)"
fi

# 4. Admin API.
jar="$dir/admin.cookies"
admin_key=

# call METHOD PATH [CURL ARGS...]: an admin API call (session cookie, then
# the API key, read from a header file so it stays off the command line).
# Prints the answer; fails with the status and glewlwyd's answer.
call() {
	local method=$1 path=$2 out status auth=()
	shift 2
	out=$(mktemp "$dir/answer.XXXXXX")
	[ -n "$admin_key" ] && auth=(-H "@$dir/admin.header")
	status=$(curl -s --max-time 20 -o "$out" -w '%{http_code}' -X "$method" \
		-b "$jar" -c "$jar" "${auth[@]}" -H 'Content-Type: application/json' "$@" "$api$path") ||
		die "$method $path: curl failed (is glewlwyd still running? log: $log)"
	case $status in
	2??) cat "$out" ;;
	*)
		echo "glewlwyd.sh: $method $path answered HTTP $status: $(head -c 500 "$out")" >&2
		rm -f "$out"
		exit 1
		;;
	esac
	rm -f "$out"
}

echo '{"username":"admin","password":"password"}' | call POST /auth/ --data-binary @- >/dev/null
admin_key=$(call POST /key/ | jq -er .key) || die "POST /api/key/ returned no key"
printf 'Authorization: token %s\n' "$admin_key" >"$dir/admin.header"

for scope in orders.read orders.write introspect; do
	jq -n --arg s "$scope" '{name: $s, display_name: $s, description: ("interop test scope " + $s),
		password_required: false, scheme: {}}' | call POST /scope/ --data-binary @- >/dev/null
done

# The plugins' signing key: a fresh RSA 2048 key.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/oidc-key.pem" 2>/dev/null ||
	die "openssl could not generate the plugin's RSA key"
openssl pkey -in "$dir/oidc-key.pem" -pubout -out "$dir/oidc-pub.pem"

# plugin NAME TTL: the oidc plugin instance NAME (/api/NAME) with TTL-second
# access tokens.
plugin() {
	local name=$1 ttl=$2
	jq -n --arg name "$name" --arg iss "$api/$name" --argjson ttl "$ttl" \
		--rawfile key "$dir/oidc-key.pem" --rawfile cert "$dir/oidc-pub.pem" '{
		module: "oidc", name: $name, display_name: ("interop " + $name), order_rank: 0,
		parameters: {
			iss: $iss, "oauth-as-iss-id": true,
			"jwt-type": "rsa", "jwt-key-size": "256", key: $key, cert: $cert,
			"access-token-duration": $ttl, "refresh-token-duration": 1209600,
			"refresh-token-rolling": true, "refresh-token-one-use": "always",
			"code-duration": 600,
			"allow-non-oidc": true,
			"auth-type-code-enabled": true, "auth-type-client-enabled": true,
			"auth-type-refresh-enabled": true, "auth-type-password-enabled": false,
			"auth-type-token-enabled": false, "auth-type-none-enabled": false,
			"auth-type-device-enabled": false,
			"pkce-allowed": true, "pkce-method-plain-allowed": false,
			"request-parameter-allow": true, "client-jwks-parameter": "jwks",
			"introspection-revocation-allowed": true,
			"introspection-revocation-allow-target-client": true,
			"introspection-revocation-auth-scope": ["introspect"],
			"jwks-show": true
		}}' | call POST /mod/plugin/ --data-binary @- >/dev/null
}
plugin oidc "$access_ttl"
plugin oidc40 "$short_ttl"

alice_password=$(rand_hex 16)
jq -n --arg p "$alice_password" '{username: "alice", name: "Alice", password: $p, enabled: true,
	scope: ["g_profile", "openid", "orders.read", "orders.write"]}' | call POST /user/ --data-binary @- >/dev/null

# The private_key_jwt client's key and its JWKS (kid cc-jwt-1).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/cc-jwt.pem" 2>/dev/null ||
	die "openssl could not generate cc-jwt's RSA key"
modulus_hex=$(openssl rsa -in "$dir/cc-jwt.pem" -noout -modulus 2>/dev/null | sed 's/^Modulus=//')
[ -n "$modulus_hex" ] || die "openssl could not read cc-jwt's modulus"
# Hex to bytes to base64url without padding (RFC 7518 §6.3.1).
# shellcheck disable=SC2001 # a sed back-reference, which ${var//} lacks
n=$(printf '%b' "$(sed 's/../\\x&/g' <<<"$modulus_hex")" | basenc --base64url -w0 | tr -d '=')
cc_jwt_jwks=$(jq -nc --arg n "$n" '{keys: [{kty: "RSA", use: "sig", alg: "RS256", kid: "cc-jwt-1", n: $n, e: "AQAB"}]}')

cc_basic_secret=$(rand_hex 16)
cc_post_secret=$(rand_hex 16)
cc_sjwt_secret=$(rand_hex 32)
cc_special_secret="k+/=%41-$(rand_hex 8)=="
code_client_secret=$(rand_hex 16)
rs_introspect_secret=$(rand_hex 16)

# client ID TYPES METHODS SCOPES [extra jq args and object]: a confidential client.
client() {
	local id=$1 types=$2 methods=$3 scopes=$4 extra=${5:-'{}'}
	shift 5 || shift $#
	jq -n --arg id "$id" --arg types "$types" --arg methods "$methods" --arg scopes "$scopes" "$@" "{
		client_id: \$id, name: \$id, enabled: true, confidential: true,
		authorization_type: (\$types | split(\" \")),
		token_endpoint_auth_method: (\$methods | split(\" \")),
		scope: (\$scopes | split(\" \"))} + $extra" | call POST /client/ --data-binary @- >/dev/null
}
client cc-basic client_credentials client_secret_basic 'orders.read orders.write' \
	'{password: $p}' --arg p "$cc_basic_secret"
client cc-post client_credentials client_secret_post 'orders.read orders.write' \
	'{password: $p}' --arg p "$cc_post_secret"
client cc-jwt client_credentials private_key_jwt 'orders.read orders.write' \
	'{jwks: $jwks}' --argjson jwks "$cc_jwt_jwks"
# client_secret_jwt: glewlwyd checks the HS256 signature with the client's
# client_secret property (its password is only hashed).
client cc-sjwt client_credentials client_secret_jwt 'orders.read orders.write' \
	'{client_secret: $p}' --arg p "$cc_sjwt_secret"
client cc-special client_credentials 'client_secret_basic client_secret_post' 'orders.read orders.write' \
	'{password: $p}' --arg p "$cc_special_secret"
client code-client 'code refresh_token' 'client_secret_basic client_secret_post' 'orders.read orders.write' \
	'{password: $p, redirect_uri: [$r]}' --arg p "$code_client_secret" --arg r "$redirect_uri"
client rs-introspect client_credentials client_secret_basic introspect \
	'{password: $p}' --arg p "$rs_introspect_secret"

# 5. Self-test: the discovery documents' issuers and a cc-basic token.
for name in oidc oidc40; do
	iss=$(curl -sf --max-time 10 "$api/$name/.well-known/openid-configuration" | jq -r .issuer) ||
		die "no discovery document at $api/$name/.well-known/openid-configuration (log: $log)"
	[ "$iss" = "$api/$name" ] || die "discovery of $name: issuer '$iss', want '$api/$name'"
done
# token_request NAME ID SECRET: a client_credentials token from plugin NAME with
# Basic authentication sent raw; the credentials go through curl's config on
# stdin, not the command line.
token_request() {
	printf 'user = "%s:%s"\n' "$2" "$3" | curl -s --max-time 10 -K - \
		-d grant_type=client_credentials -d scope=orders.read "$api/$1/token"
}
for name in oidc oidc40; do
	want=$access_ttl
	[ "$name" = oidc40 ] && want=$short_ttl
	answer=$(token_request "$name" cc-basic "$cc_basic_secret")
	jq -e --argjson ttl "$want" '(.access_token | length > 0) and .expires_in == $ttl' >/dev/null <<<"$answer" ||
		die "self-test: no cc-basic token with expires_in $want from $api/$name/token (log: $log)"
done
# The fixture the BASIC_HEADER_RAW case relies on: glewlwyd compares the raw
# secret in Basic credentials.
token_request oidc cc-special "$cc_special_secret" | jq -e '.access_token | length > 0' >/dev/null ||
	die "self-test: cc-special with its raw secret in Basic got no token (log: $log)"

cat >"$dir/glewlwyd.env" <<EOF
GLEWLWYD_URL=$base
GLEWLWYD_ISSUER=$api/oidc
GLEWLWYD_ISSUER_SHORT=$api/oidc40
GLEWLWYD_LOG=$log
GLEWLWYD_PID=$pid
REDIRECT_URI=$redirect_uri
ALICE_PASSWORD=$alice_password
CC_BASIC_SECRET=$cc_basic_secret
CC_POST_SECRET=$cc_post_secret
CC_JWT_KEY_FILE=$dir/cc-jwt.pem
CC_SJWT_SECRET=$cc_sjwt_secret
CC_SPECIAL_SECRET=$cc_special_secret
CODE_CLIENT_SECRET=$code_client_secret
RS_INTROSPECT_SECRET=$rs_introspect_secret
EOF
echo "glewlwyd $(dpkg-query -W -f='${Version}' glewlwyd 2>/dev/null || echo '(version unknown)') ready on $base: issuers $api/oidc (${access_ttl}s tokens) and $api/oidc40 (${short_ttl}s tokens)"
