from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def home() -> str:
        return "hello from a flask factory"

    return app
