"""A file server on 127.0.0.1 for download tests: Range requests and injected faults.

``with serve(payloads) as site:`` serves ``payloads`` ({path: bytes}) at ``site.url``; the test
flips ``site.state`` to inject faults: ``cut_next`` (close that many responses halfway),
``ignore_range`` (answer 200 with the whole body), ``corrupt`` (paths served with their last byte
flipped); ``site.state["requests"]`` records (path, Range header) per request."""

from __future__ import annotations

import contextlib
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serve(payloads: dict[str, bytes]):
    state = {"requests": [], "cut_next": 0, "ignore_range": False, "corrupt": set()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            path = self.path.lstrip("/")
            state["requests"].append((path, self.headers.get("Range")))
            body = payloads.get(path)
            if body is None:
                self.send_error(404)
                return
            if path in state["corrupt"]:  # same size, different bytes
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            start = 0
            rng = self.headers.get("Range")
            if rng and not state["ignore_range"]:
                start = int(rng.split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.send_header("Connection", "close")
            self.end_headers()
            if state["cut_next"] > 0:  # close the connection halfway through the body
                state["cut_next"] -= 1
                self.wfile.write(rest[: len(rest) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(rest)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield types.SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}/", state=state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
