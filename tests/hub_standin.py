"""A local stand-in for the Hugging Face hub: serves files the way ``hf_hub_download`` fetches them.

``GET``/``HEAD /{repo}/resolve/{revision}/{file}`` (``/datasets/{repo}/...`` for datasets) answer
with the headers the client reads (``X-Repo-Commit``, ``ETag``, ``Content-Length``); anything else is
404. It listens on 127.0.0.1 only; point ``HF_ENDPOINT`` at :attr:`HubStandIn.url`.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubStandIn:
    def __init__(self, files: dict[str, bytes]):
        """``files``: ``"[datasets/]owner/repo/revision/filename"`` -> content."""
        self.files = dict(files)
        self.requests: list[str] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                standin.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?", 1)[0].lstrip("/")
                key = path.replace("/resolve/", "/", 1)
                data = standin.files.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                revision = key.rsplit("/", 2)[-2]
                commit = hashlib.sha1(revision.encode()).hexdigest()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def log_message(self, *args):  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
