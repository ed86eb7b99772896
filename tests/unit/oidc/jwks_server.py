#!/usr/bin/python3
"""A small HTTPS server for tests/unit/test_oidc.c (Python 3 standard library only).

Serves the files of --dir over TLS (certificate and key made by the test with the openssl CLI) and
records every request path, one line each, in <dir>/requests.log *before* answering, so when the
client has its answer the line is already there and the test can count fetches.

  GET /jwks/<name>         the file <dir>/<name> with a Content-Length (404 if it is missing)
  GET /nolen/<name>        the same without Content-Length (the body ends when the connection closes)
  GET /redirect-http/<n>   302 to http://127.0.0.1:<port>/jwks/<n>  (a downgrade the client must refuse)
  GET /redirect-https/<n>  302 to https://127.0.0.1:<port>/jwks/<n> (a redirect the client may follow)
  GET /auth/<name>         the file <dir>/<name>, only with "Authorization: Bearer <token>" where
                           <token> is the content of <dir>/bearer.token (401 otherwise); the
                           header seen is recorded as "<path> bearer=<token or ->" in requests.log
  GET /auth-redirect/<n>   302 to /auth/<n> (a client sending a token must not follow it)
  GET /status/<code>       an empty answer with that status
  GET /slow                answers after 5 seconds (for client timeouts)
  POST /review/<name>/apis/authentication.k8s.io/v1/tokenreviews
                           a TokenReview: 201 with the file <dir>/<name> as the answer (404 if it
                           is missing); recorded as "<path> bearer=<token or -> aud=<audiences>"

Prints "READY <port>" on stdout once it listens (--port 0 picks a free port). Stops on SIGTERM.
"""

import argparse
import http.server
import json
import os
import signal
import ssl
import sys
import threading
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        sys.stderr.write("jwks_server: " + (fmt % args) + "\n")

    def record(self):
        with self.server.log_lock:
            with open(os.path.join(self.server.dir, "requests.log"), "a") as f:
                f.write(self.path + "\n")

    def answer(self, status, body=b"", length=True, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def serve_file(self, name, length):
        path = os.path.join(self.server.dir, os.path.basename(name))
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError:
            self.answer(404)
            return
        self.answer(200, body, length)

    def serve_with_token(self, name):
        header = self.headers.get("Authorization", "")
        sent = header[len("Bearer "):] if header.startswith("Bearer ") else None
        with self.server.log_lock:
            with open(os.path.join(self.server.dir, "requests.log"), "a") as f:
                f.write("%s bearer=%s\n" % (self.path, sent if sent is not None else "-"))
        try:
            with open(os.path.join(self.server.dir, "bearer.token")) as f:
                want = f.read().strip()
        except OSError:
            want = None
        if want is None or sent != want:
            self.answer(401)
            return
        self.serve_file(name, True)

    def redirect(self, scheme, name):
        location = "%s://127.0.0.1:%d/jwks/%s" % (scheme, self.server.server_port, name)
        self.answer(302, headers=[("Location", location)])

    def do_GET(self):
        self.record()
        parts = self.path.split("/", 2)
        kind = parts[1] if len(parts) > 1 else ""
        arg = parts[2] if len(parts) > 2 else ""
        if kind == "jwks":
            self.serve_file(arg, True)
        elif kind == "nolen":
            self.serve_file(arg, False)
        elif kind == "redirect-http":
            self.redirect("http", arg)
        elif kind == "redirect-https":
            self.redirect("https", arg)
        elif kind == "auth":
            self.serve_with_token(arg)
        elif kind == "auth-redirect":
            self.answer(302, headers=[("Location", "https://127.0.0.1:%d/auth/%s" % (self.server.server_port, arg))])
        elif kind == "status" and arg.isdigit():
            self.answer(int(arg))
        elif kind == "slow":
            time.sleep(5)
            self.answer(200, b"{}")
        else:
            self.answer(404)


    def do_POST(self):
        parts = self.path.split("/", 3)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or "0"))
        header = self.headers.get("Authorization", "")
        sent = header[len("Bearer "):] if header.startswith("Bearer ") else "-"
        try:
            auds = ",".join(json.loads(body)["spec"].get("audiences", []))
        except (ValueError, KeyError, TypeError, AttributeError):
            auds = "?"
        with self.server.log_lock:
            with open(os.path.join(self.server.dir, "requests.log"), "a") as f:
                f.write("%s bearer=%s aud=%s\n" % (self.path, sent, auds))
        if len(parts) == 4 and parts[1] == "review" and parts[3] == "apis/authentication.k8s.io/v1/tokenreviews":
            path = os.path.join(self.server.dir, os.path.basename(parts[2]))
            try:
                with open(path, "rb") as f:
                    self.answer(201, f.read())
            except OSError:
                self.answer(404)
        else:
            self.answer(404)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.dir = args.dir
    server.log_lock = threading.Lock()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("READY %d" % server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
