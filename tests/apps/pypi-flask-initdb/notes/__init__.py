"""The shape of Flask's tutorial app (flaskr): a factory in a package, a SQLite file
made by a CLI command the app registers, and a page that reads from it."""

import os
import sqlite3

import click
from flask import Flask, g


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(os.path.join(os.getcwd(), "notes.sqlite"))
    return g.db


def close_db(error: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


@click.command("init-db")
def init_db_command() -> None:
    """Create the tables afresh."""
    db = get_db()
    db.executescript(
        "DROP TABLE IF EXISTS note;"
        "CREATE TABLE note (body TEXT);"
        "INSERT INTO note VALUES ('hello from the database init-db made');"
    )
    click.echo("initialised the database")


def create_app() -> Flask:
    app = Flask(__name__)
    app.teardown_appcontext(close_db)
    app.cli.add_command(init_db_command)

    @app.get("/")
    def home() -> str:
        (body,) = get_db().execute("SELECT body FROM note").fetchone()
        return body

    return app
