"""Framework detection and the deploy files written for each kind of app."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from generator.template import write_app
from tasks.render_deploy_files import detect_framework, fly_app_name, render_into


def make(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def package(**fields) -> str:
    return json.dumps(fields)


APPS = {
    "express": (
        {
            "package.json": package(main="server.js", dependencies={"express": "^4"}),
            "server.js": "const PORT = process.env.PORT || 8080;\napp.listen(PORT);\n",
        },
        "node",
        8080,
    ),
    "plain-node": (
        {
            "package.json": package(scripts={"start": "node index.js"}),
            "index.js": "require('http').createServer(h).listen(4000);\n",
        },
        "node",
        4000,
    ),
    "next": (
        {"package.json": package(dependencies={"next": "14", "react": "18"})},
        "nextjs",
        3000,
    ),
    "vite": (
        {
            "package.json": package(
                scripts={"dev": "vite", "build": "vite build"}, devDependencies={"vite": "^5"}
            ),
            "index.html": "<div id=root></div>",
        },
        "vite-static",
        80,
    ),
    "fastapi": (
        {"requirements.txt": "fastapi==0.110\n", "api.py": "api = FastAPI()\n"},
        "fastapi",
        8000,
    ),
    "flask": (
        {"requirements.txt": "Flask>=3\n", "web.py": "server = Flask(__name__)\n"},
        "flask",
        8080,
    ),
    "static": ({"index.html": "<h1>hi</h1>"}, "static", 80),
    "unknown": ({"main.go": "package main"}, "unknown", 8080),
}


@pytest.mark.parametrize("kind", sorted(APPS))
def test_detects_the_framework_and_the_port_it_listens_on(kind, tmp_path):
    files, framework, port = APPS[kind]
    detected = detect_framework(make(tmp_path, files))
    assert (detected.name, detected.port) == (framework, port)


@pytest.mark.parametrize("kind", sorted(APPS))
def test_fly_toml_points_the_http_service_at_the_app_port(kind, tmp_path):
    files, framework, port = APPS[kind]
    deploy = render_into(make(tmp_path, files), "My_App.v2", "ams")
    fly = tomllib.loads((tmp_path / "fly.toml").read_text())
    assert fly["app"] == "my-app-v2"
    assert fly["primary_region"] == "ams"
    service = fly["http_service"]
    assert service["internal_port"] == port == deploy.internal_port
    assert service["force_https"] is True
    assert service["auto_stop_machines"] == "stop"
    assert service["min_machines_running"] == 0
    assert fly["vm"][0]["memory"]
    assert deploy.framework == framework


def test_python_dockerfiles_start_the_declared_app_object(tmp_path):
    render_into(make(tmp_path / "f", APPS["fastapi"][0]), "api", "iad")
    render_into(make(tmp_path / "k", APPS["flask"][0]), "web", "iad")
    assert (
        '"uvicorn", "api:api", "--host", "0.0.0.0", "--port", "8000"'
        in (tmp_path / "f/Dockerfile").read_text()
    )
    assert (
        '"gunicorn", "--bind", "0.0.0.0:8080", "web:server"'
        in (tmp_path / "k/Dockerfile").read_text()
    )


def test_generator_files_are_never_overwritten(tmp_path):
    files = {
        **APPS["express"][0],
        "Dockerfile": "FROM node:22\nEXPOSE 9000\nCMD node server.js\n",
        ".gitignore": "node_modules\n",
        "README.md": "# Counter\n\nHow it works.\n",
    }
    deploy = render_into(make(tmp_path, files), "counter", "iad")
    assert (tmp_path / "Dockerfile").read_text() == files["Dockerfile"]
    assert (tmp_path / ".gitignore").read_text() == "node_modules\n"
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Counter\n\nHow it works.\n")
    assert "## Deploy" in readme and "fly deploy" in readme
    assert (
        tomllib.loads((tmp_path / "fly.toml").read_text())["http_service"]["internal_port"] == 9000
    )  # the generator's Dockerfile EXPOSEs 9000
    assert set(deploy.kept_from_generator) == {"Dockerfile", ".gitignore"}


def test_missing_files_are_added(tmp_path):
    deploy = render_into(make(tmp_path, APPS["static"][0]), "site", "iad")
    assert {"Dockerfile", ".dockerignore", "fly.toml", ".gitignore", "README.md"} <= set(
        deploy.written
    )
    assert "node_modules/" in (tmp_path / ".gitignore").read_text()
    assert (tmp_path / "README.md").read_text().startswith("# site\n")


def test_the_template_app_is_detected_as_express_on_port_3000(tmp_path):
    write_app("Build me a counter app", tmp_path)
    deploy = render_into(tmp_path, "counter-app", "iad")
    fly = tomllib.loads((tmp_path / "fly.toml").read_text())
    assert (deploy.framework, deploy.internal_port) == ("node", 3000)
    assert fly["env"]["PORT"] == "3000"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Counter_App", "counter-app"), ("a..b", "a-b"), ("--x--", "x"), ("___", "app")],
)
def test_fly_app_names_are_lowercase_dashes(name, expected):
    assert fly_app_name(name) == expected
