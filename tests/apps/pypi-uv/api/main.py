from fastapi import FastAPI

api = FastAPI()


@api.get("/")
def home() -> dict[str, str]:
    return {"hello": "from a uv project"}
