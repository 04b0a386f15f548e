"""A local stand-in for the Hugging Face Hub's upload API (create repo, preupload, commit), on 127.0.0.1.

It answers every preupload with uploadMode "regular", so huggingface_hub sends file contents inline in the
commit (base64 in NDJSON) and no LFS/Xet storage is involved. Received files are kept in ``repos``.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PREUPLOAD = re.compile(r"^/api/models/([^/]+/[^/]+)/preupload/([^/]+)$")
_COMMIT = re.compile(r"^/api/models/([^/]+/[^/]+)/commit/([^/]+)$")


class FakeHub:
    """Start with ``FakeHub()``, point HF_ENDPOINT at ``.url``, read ``.repos`` / ``.requests``; ``.close()``."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.created: list[dict] = []
        self.validated: list[str] = []
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(("GET", self.path, self.headers.get("Authorization")))
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                body = self._body()
                path = self.path.split("?")[0]
                hub.requests.append(("POST", path, self.headers.get("Authorization")))
                if path == "/api/repos/create":
                    request = json.loads(body or b"{}")
                    hub.created.append(request)
                    repo = f"{request.get('organization') or 'user'}/{request['name']}"
                    hub.repos.setdefault(repo, {})
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
                if path == "/api/validate-yaml":  # the hub checks a README's front matter before the commit
                    content = json.loads(body)["content"]
                    hub.validated.append(content)
                    return self._reply(200, {"errors": [], "warnings": []})
                match = _PREUPLOAD.match(path)
                if match:
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                match = _COMMIT.match(path)
                if match:
                    repo = match.group(1)
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            value = item["value"]
                            hub.repos.setdefault(repo, {})[value["path"]] = base64.b64decode(value["content"])
                    return self._reply(
                        200,
                        {
                            "commitUrl": f"{hub.url}/{repo}/commit/{'0' * 40}",
                            "commitOid": "0" * 40,
                            "pullRequestUrl": None,
                        },
                    )
                return self._reply(404, {"error": f"no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop the server."""
        self.server.shutdown()
        self.server.server_close()
