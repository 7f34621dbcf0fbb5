"""`magicvideo study serve`: the rating page and its small JSON API, on the standard library's
threaded HTTP server.

    GET  /                      the page
    POST /api/join              {"name": ...} or {"name": ..., "invite": ...} -> {"token", "name"}
    GET  /api/next              header X-Rater-Token -> {"pair": {...} or null, "done", "total"}
    POST /api/vote              header X-Rater-Token, {"pair": id, "choice": "left" | "same" | "right"}
    GET  /video/<pair>/<side>   one of the study's own videos (nothing else on disk is reachable)

Every request opens its own connection; every vote is one transaction. A rater is who their
secret token says, never what the request body claims.
"""

from __future__ import annotations

import json
import re
import sqlite3
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from magicvideo.study.build import media_dir
from magicvideo.study.db import CRITERIA, StudyError, add_rater, connect, next_pair, progress, rater_by_token, vote

MAX_BODY = 4096
VIDEO = re.compile(r"^/video/(\d{1,9})/(left|right)$")


class StudyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, db_path: str | Path, host: str = "127.0.0.1", port: int = 8765, open_join: bool = True):
        self.db_path, self.media, self.open_join = Path(db_path), media_dir(db_path), open_join
        connect(self.db_path).close()  # a missing or foreign file fails here, before the port opens
        self.page = resources.files("magicvideo.study").joinpath("page.html").read_bytes()
        super().__init__((host, port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: StudyServer
    server_version = "magicvideo-study"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the standard library's name
        pass  # votes are in the database; a line per video chunk would drown the terminal

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: dict) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise StudyError("request too large")
        try:
            value = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise StudyError("the request body is not JSON") from None
        if not isinstance(value, dict):
            raise StudyError("the request body is not a JSON object")
        return value

    def _with_db(self, work) -> None:
        db = connect(self.server.db_path)
        try:
            work(db)
        except StudyError as err:
            self._json(HTTPStatus.CONFLICT if "already" in str(err) else HTTPStatus.BAD_REQUEST, {"error": str(err)})
        except sqlite3.Error as err:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"database busy or unreadable: {err}"})
        finally:
            db.close()

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        if path == "/api/next":
            return self._with_db(self._next)
        match = VIDEO.match(path)
        if match:
            return self._with_db(lambda db: self._video(db, int(match[1]), match[2]))
        self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        if self.path == "/api/join":
            return self._with_db(self._join)
        if self.path == "/api/vote":
            return self._with_db(self._vote)
        self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _join(self, db: sqlite3.Connection) -> None:
        body = self._body()
        name, invite = body.get("name"), body.get("invite")
        if not isinstance(name, str) or (invite is not None and not isinstance(invite, str)):
            raise StudyError("join with a name (and an invite, if you were given one)")
        if invite is None and not self.server.open_join:
            raise StudyError("this study takes raters by invite only")
        rater = add_rater(db, name, invite=invite or None)
        self._json(HTTPStatus.OK, {"token": rater["token"], "name": rater["name"]})

    def _next(self, db: sqlite3.Connection) -> None:
        rater = rater_by_token(db, self.headers.get("X-Rater-Token"))
        pair = next_pair(db, rater["id"])
        done, total = progress(db, rater["id"])
        shown = None if pair is None else {
            "id": pair["id"], "prompt": pair["prompt"], "criteria": list(CRITERIA),
            "left": f"/video/{pair['id']}/left", "right": f"/video/{pair['id']}/right"}
        self._json(HTTPStatus.OK, {"pair": shown, "done": done, "total": total, "name": rater["name"]})

    def _vote(self, db: sqlite3.Connection) -> None:
        rater = rater_by_token(db, self.headers.get("X-Rater-Token"))
        body = self._body()
        pair, choice = body.get("pair"), body.get("choice")
        if not isinstance(pair, int) or isinstance(pair, bool) or not isinstance(choice, str):
            raise StudyError('a vote is {"pair": <id>, "choice": "left" | "same" | "right"}')
        vote(db, rater["id"], pair, choice)
        done, total = progress(db, rater["id"])
        self._json(HTTPStatus.OK, {"ok": True, "done": done, "total": total})

    def _video(self, db: sqlite3.Connection, pair: int, side: str) -> None:
        row = db.execute(f"SELECT v.file FROM pairs p JOIN videos v ON v.id = p.{side}_video WHERE p.id = ?",
                         (pair,)).fetchone()
        if row is None:
            return self._json(HTTPStatus.NOT_FOUND, {"error": f"no pair {pair}"})
        data = (self.server.media / row["file"]).read_bytes()  # the file name comes from the database only
        ranged = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range") or "")
        if ranged and (ranged[1] or ranged[2]):
            start = int(ranged[1]) if ranged[1] else max(len(data) - int(ranged[2]), 0)
            stop = min(int(ranged[2]) + 1, len(data)) if ranged[1] and ranged[2] else len(data)
            if start >= len(data) or start >= stop:
                return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "video/webm",
                                  {"Content-Range": f"bytes */{len(data)}"})
            return self._send(HTTPStatus.PARTIAL_CONTENT, data[start:stop], "video/webm",
                              {"Content-Range": f"bytes {start}-{stop - 1}/{len(data)}", "Accept-Ranges": "bytes"})
        self._send(HTTPStatus.OK, data, "video/webm", {"Accept-Ranges": "bytes"})


def serve(db_path: str | Path, host: str = "127.0.0.1", port: int = 8765, open_join: bool = True) -> None:
    server = StudyServer(db_path, host, port, open_join)
    print(f"study page: http://{host}:{server.server_address[1]}/  (Ctrl-C stops; votes are saved as they come)",
          flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
