"""The one-off step before serving: create the SQLite database the app reads."""

import sqlite3

with sqlite3.connect("notes.db") as db:
    db.execute("CREATE TABLE IF NOT EXISTS note (body TEXT)")
    db.execute("INSERT INTO note VALUES ('hello from a database made at start-up')")
