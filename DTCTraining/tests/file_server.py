"""A local HTTP server for the download tests: real sockets on 127.0.0.1, started by the test in a thread,
serving files as a web server does (Content-Length, Range requests answered with 206) or misbehaving as
servers and proxies do (a login page, a cut connection, a slow line, Range ignored).

    with FileServer({"/m.pth": Served(data)}) as server:
        url = server.url("/m.pth"); ...; server.requests  # [(path, Range header or None), ...]
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Served:
    data: bytes = b""
    content_type: str = "application/octet-stream"
    cut_after: Optional[int] = None  # close the connection after sending this many bytes of the body
    seconds_per_chunk: float = 0.0  # a slow line: pause between 64 KiB chunks
    ranges: bool = True  # False: answer every request with the whole file, as some servers do


class FileServer:
    def __init__(self, routes: dict[str, Served]):
        self.routes = routes
        self.requests: list[tuple[str, Optional[str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                served = server.routes.get(self.path)
                if served is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if served.ranges and self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    if start >= len(served.data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(served.data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(served.data) - 1}/{len(served.data)}")
                else:
                    self.send_response(200)
                body = served.data[start:]
                self.send_header("Content-Type", served.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if served.cut_after is not None:
                    body = body[:served.cut_after]
                try:
                    for i in range(0, len(body), 65536):
                        self.wfile.write(body[i:i + 65536])
                        self.wfile.flush()
                        time.sleep(served.seconds_per_chunk)
                except (BrokenPipeError, ConnectionResetError):  # the client cancelled
                    pass
                if served.cut_after is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    """An address where nothing listens: a port taken from the system and released."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.pth"


def git_blob_sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def official_checkpoint() -> bytes:
    """An official DTC checkpoint as the authors' repository holds them (a state dict), 4 filters: what the
    catalog's official entries download."""
    import io

    import torch
    from dtc_training.model import DualTaskVNet

    torch.manual_seed(3)
    buffer = io.BytesIO()
    torch.save(DualTaskVNet(n_filters=4).state_dict(), buffer)
    return buffer.getvalue()
