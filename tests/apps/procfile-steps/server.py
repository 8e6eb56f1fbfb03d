"""Answers with the first note; 500 when the database was never created."""

import os
import sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Notes(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with sqlite3.connect("file:notes.db?mode=ro", uri=True) as db:
                (body,) = db.execute("SELECT body FROM note").fetchone()
            status, text = 200, body
        except sqlite3.Error as exc:
            status, text = 500, f"no database: {exc}"
            print(text, flush=True)
        data = f"{text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Notes).serve_forever()
