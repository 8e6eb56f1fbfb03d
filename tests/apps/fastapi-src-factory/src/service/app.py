from fastapi import FastAPI


def create_app() -> FastAPI:
    api = FastAPI()
    return api
