from flask import Flask
from sqlalchemy import create_engine, text

app = Flask(__name__)
engine = create_engine("sqlite:///visits.db")


@app.get("/")
def home() -> dict[str, int]:
    # Fails (500: no such table) unless `alembic upgrade head` ran before serving.
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO visit DEFAULT VALUES"))
        count = connection.execute(text("SELECT count(*) FROM visit")).scalar_one()
    return {"visits": count}
