"""HTTP front end: GET /greet?name=..&lang=.., GET /healthz.

Failure injection, set at start for canary demos and tests (greetings only, never the
health check): HELLO_ERROR_RATE (0 to 1) answers that share of greetings with a 500,
HELLO_LATENCY_MS adds that many milliseconds to each greeting."""

import json
import os
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from app.greeting import InvalidName, greet


def _injected(name, default, low, high):
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        sys.exit("%s=%r is not a number" % (name, raw))
    if not low <= value <= high:
        sys.exit("%s=%s is outside %s..%s" % (name, raw, low, high))
    return value


ERROR_RATE = _injected("HELLO_ERROR_RATE", 0.0, 0.0, 1.0)
ADDED_LATENCY_S = _injected("HELLO_LATENCY_MS", 0.0, 0.0, 60000.0) / 1000.0
_faults = random.Random(int(os.environ.get("HELLO_FAULT_SEED", "1")))


class Handler(BaseHTTPRequestHandler):
    server_version = "hello-service/1.0"

    def _send(self, status, body):
        data = json.dumps(body, sort_keys=True).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server naming)
        url = urlparse(self.path)
        if url.path == "/healthz":
            self._send(200, {"status": "ok"})
            return
        if url.path == "/greet":
            if ADDED_LATENCY_S:
                time.sleep(ADDED_LATENCY_S)
            if ERROR_RATE and _faults.random() < ERROR_RATE:
                self._send(500, {"error": "injected failure"})
                return
            query = parse_qs(url.query)
            name = query.get("name", [None])[0]
            lang = query.get("lang", ["en"])[0]
            try:
                self._send(200, {"message": greet(name, lang), "lang": lang})
            except InvalidName as err:
                self._send(400, {"error": str(err)})
            return
        self._send(404, {"error": "not found"})

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


def serve(port):
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    return server


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8080).serve_forever()
