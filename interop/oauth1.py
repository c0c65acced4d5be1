"""An OAuth 1.0 protected resource for connmgr's interoperability tests.

    python3 interop/oauth1.py CREDENTIALS.json PORT

Listens on 127.0.0.1:PORT and verifies every request with oauthlib's
server side (SignatureOnlyEndpoint, Debian's python3-oauthlib): the
signature over the method, the URL with its query and a form body, the
consumer key and the token with their secrets from CREDENTIALS.json, the
timestamp within 10 minutes, and each nonce used once. A valid request is
answered 200 with the parameters the server saw (JSON); any other 401
with what oauthlib's validator logged. Stops on SIGTERM.
"""
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint


def main():
    creds = json.load(open(sys.argv[1]))
    port = int(sys.argv[2])
    seen = set()
    lock = threading.Lock()

    class Validator(RequestValidator):
        safe_characters = set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
        client_key_length = (1, 100)
        access_token_length = (1, 100)
        nonce_length = (8, 64)
        enforce_ssl = False
        dummy_client = "dummy"
        dummy_access_token = "dummy"

        def validate_client_key(self, client_key, request):
            return client_key == creds["consumerKey"]

        def get_client_secret(self, client_key, request):
            return creds["consumerSecret"]

        def get_access_token_secret(self, client_key, token, request):
            return creds["tokenSecret"] if token == creds["token"] else "dummy"

        def validate_timestamp_and_nonce(self, client_key, timestamp, nonce,
                                         request, request_token=None,
                                         access_token=None):
            with lock:
                if (timestamp, nonce) in seen:
                    return False
                seen.add((timestamp, nonce))
            return True

    endpoint = SignatureOnlyEndpoint(Validator())

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode() if n else None
            headers = {k: v for k, v in self.headers.items()}
            uri = "http://%s%s" % (self.headers["Host"], self.path)
            ok, request = endpoint.validate_request(uri, self.command, body, headers)
            if ok:
                out = json.dumps({"valid": True, "params": sorted(request.params)}).encode()
                self.send_response(200)
            else:
                log = request.validator_log if request is not None else {}
                out = json.dumps({"valid": False, "log": {k: str(v) for k, v in log.items()}}).encode()
                self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = handle_one

        def log_message(self, fmt, *args):
            sys.stderr.write("oauth1.py: " + (fmt % args) + "\n")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()


if __name__ == "__main__":
    main()
