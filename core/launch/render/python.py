"""The Dockerfile of a Python app: a virtualenv built in its own stage."""

from __future__ import annotations

from core.launch import LaunchPlan
from core.launch.render.instructions import (
    HOME,
    USER,
    app_workdir,
    copy_source,
    env_line,
    in_folder,
    json_list,
    prepare_workdir,
    start_command,
)
from core.launch.render.node import client_stage

UV = "uv==0.5.11"
POETRY = "poetry==1.8.5"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def python_dockerfile(plan: LaunchPlan) -> str:
    image = f"python:{plan.version}-slim"
    src = copy_source(plan.folder)
    workdir = app_workdir(plan)
    client_lines, client_copy = client_stage(plan)
    venv = {"VIRTUAL_ENV": "/opt/venv", "PATH": "/opt/venv/bin:$PATH"}
    extra = " ".join(plan.python_extra)
    install = plan.python_install or "none"
    lines = list(client_lines)
    uses_venv = install != "none" or bool(extra)
    if uses_venv:
        lines += [
            f"FROM {image} AS build",
            env_line({"PIP_DISABLE_PIP_VERSION_CHECK": "1", **venv}),
            "WORKDIR /build",
            "RUN python -m venv /opt/venv",
        ]
        if install == "requirements":
            lines += [
                f"COPY {json_list([in_folder(plan.folder, 'requirements.txt'), './'])}",
                f"RUN pip install --no-cache-dir -r requirements.txt {extra}".rstrip(),
            ]
        elif install == "pyproject":
            lines += [f"COPY {src} ./", f"RUN pip install --no-cache-dir . {extra}".rstrip()]
        elif install == "uv":
            manifests = [in_folder(plan.folder, n) for n in ("pyproject.toml", "uv.lock")]
            lines += [
                f"COPY {json_list([*manifests, './'])}",
                # The system's certificate store, as pip uses: uv's own roots would
                # refuse a builder behind a proxy whose CA the image trusts.
                "ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_NATIVE_TLS=1",
                f"RUN pip install --no-cache-dir {UV} && "
                "uv sync --frozen --no-dev --no-install-project --inexact",
            ]
        elif install == "poetry":
            lock = [in_folder(plan.folder, "poetry.lock*")]
            lines += [
                f"COPY {json_list([in_folder(plan.folder, 'pyproject.toml'), *lock, './'])}",
                # The system's certificate store, as for uv (Poetry's requests would
                # use certifi's roots).
                f"ENV REQUESTS_CA_BUNDLE={SYSTEM_CA_BUNDLE}",
                # Poetry in a venv of its own: installing the app's locked versions
                # must not replace the packages Poetry itself runs on. It installs
                # into the active VIRTUAL_ENV.
                "RUN python -m venv /opt/poetry && "
                f"/opt/poetry/bin/pip install --no-cache-dir {POETRY} && "
                "/opt/poetry/bin/poetry install --only main --no-root --no-interaction",
            ]
        if extra and install in ("uv", "poetry", "none"):
            lines.append(f"RUN pip install --no-cache-dir {extra}")
        lines.append("")
    env = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": HOME}
    env |= venv if uses_venv else {}
    lines += [f"FROM {image}", env_line({**env, **plan.env}), *prepare_workdir(workdir)]
    if uses_venv:
        lines.append("COPY --from=build /opt/venv /opt/venv")
    lines.append(f"COPY --chown={USER} {src} ./")
    lines += client_copy
    lines.append(f"USER {USER}")
    if plan.collectstatic:
        lines.append("RUN python manage.py collectstatic --noinput")
    lines += [f"EXPOSE {plan.port}", start_command(plan)]
    return "\n".join(lines) + "\n"
