from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def home() -> dict[str, str]:
    return {"hello": "from fastapi"}


@app.get("/healthz")
def health() -> dict[str, str]:
    return {"status": "ok"}
