"""Verifies one OAuth 1.0 signed request with oauthlib's server side.

The request comes as JSON on stdin: method, uri (absolute, as the server
received it), headers, body, and the credentials the server knows:
consumerKey, consumerSecret, token, tokenSecret, rsaPublicKey. It prints
"valid" or "invalid: <what oauthlib's validator log says>" and exits 0;
any other outcome is a broken test setup (exit 2). Used by
security/oauth1_test.go as an OAuth 1.0 implementation connmgr did not
write (oauthlib, Debian's python3-oauthlib).
"""
import json
import sys

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint


def main():
    req = json.load(sys.stdin)

    class Validator(RequestValidator):
        # The defaults ask for 20-30 character keys and nonces of letters
        # and digits; connmgr's nonces are base64url.
        safe_characters = set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
        client_key_length = (1, 100)
        access_token_length = (1, 100)
        nonce_length = (8, 64)
        enforce_ssl = False
        dummy_client = "dummy"
        dummy_access_token = "dummy"

        def validate_client_key(self, client_key, request):
            return client_key == req["consumerKey"]

        def get_client_secret(self, client_key, request):
            return req.get("consumerSecret") or "dummy"

        def get_access_token_secret(self, client_key, token, request):
            return req.get("tokenSecret") or ""

        def get_rsa_key(self, client_key, request):
            return req["rsaPublicKey"]

        def validate_timestamp_and_nonce(self, client_key, timestamp, nonce,
                                         request, request_token=None,
                                         access_token=None):
            return True

    endpoint = SignatureOnlyEndpoint(Validator())
    ok, request = endpoint.validate_request(
        req["uri"], http_method=req["method"], body=req.get("body") or None,
        headers=req["headers"])
    if ok:
        print("valid")
    else:
        log = request.validator_log if request is not None else "request refused before the signature check"
        print("invalid: %s" % (log,))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - reported to the Go test
        print("error: %r" % (e,))
        sys.exit(2)
