"""HTTP front end: GET /greet?name=..&lang=.., GET /healthz."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from app.greeting import InvalidName, greet


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
