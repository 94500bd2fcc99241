"""A plain static file server for an exported site, in a thread: what any web host does, nothing more.
The browser tests and benchmarks/static_site.py look at exports through it (by hand: python -m http.server)."""
from __future__ import annotations

import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class StaticFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class StaticServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):   # the browser dropping a picture it no longer shows
            super().handle_error(request, client_address)


def serve(site: Path, handler: type[SimpleHTTPRequestHandler] = StaticFiles) -> tuple[StaticServer, str]:
    """Serve `site` on a free local port until server.shutdown(); returns the server and the site's URL."""
    server = StaticServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, name="static-site", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"
