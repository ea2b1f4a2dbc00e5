"""The operations endpoint of a consumer process: /metrics, /healthz, /readyz.

A small threaded HTTP server beside the Kafka loop, so a stuck loop still answers
/metrics; /healthz turns 503 when the loop has not ticked within `stall_after_s`.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


class Health:
    """Liveness = the main loop ticks; readiness = assigned and talking to Kafka."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.stall_after_s = stall_after_s
        self._last_tick = time.monotonic()
        self.ready = False

    def tick(self) -> None:
        self._last_tick = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last_tick < self.stall_after_s


class OpsServer:
    def __init__(
        self, host: str, port: int, health: Health, registry: CollectorRegistry = REGISTRY
    ) -> None:
        health_ref, registry_ref = health, registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_ref), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = health_ref.alive()
                    self._send(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
                elif path == "/readyz":
                    ok = health_ref.ready and health_ref.alive()
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes are not worth a log line

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
