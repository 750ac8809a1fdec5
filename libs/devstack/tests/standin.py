"""A stand-in service for the Stack tests: ``serve PORT``, ``lone PORT``, ``crash`` or
``stubborn``.

``serve`` answers 200 on every GET, writes a line to stdout and stderr and leaves a grandchild
running (a ``sleep``) whose pid it prints, so tests can check the whole group is stopped.
``lone`` serves the same without a grandchild. ``stubborn`` ignores SIGTERM and is never ready.
"""

import http.server
import signal
import subprocess
import sys
import time


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    """Dispatch on ``sys.argv[1]``."""
    mode = sys.argv[1]
    if mode == "crash":
        print("boom: cannot start", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        time.sleep(300)
    if mode == "serve":
        child = subprocess.Popen(["sleep", "300"])  # noqa: S607
        print(f"grandchild {child.pid}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), _Ok).serve_forever()


if __name__ == "__main__":
    main()
