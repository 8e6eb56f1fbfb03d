"""The README's deploy section (or DEPLOY.md beside a README that is not markdown)."""

from __future__ import annotations

from core.launch import LaunchPlan
from core.launch.render.fly import fly_app_name, one_line
from core.launch.render.writer import TreeWriter

_MARKDOWN = (".md", ".markdown")


def deploy_section(app_name: str, plan: LaunchPlan) -> str:
    fly_name = fly_app_name(app_name)
    notes = "".join(f"- {one_line(note)}\n" for note in plan.notes)
    notes = f"\nNotes:\n\n{notes}" if notes else ""
    if not plan.deployable:
        return f"""
## Deploy

appgen could not prepare this app for deployment: {one_line(plan.reason)}.

`fly.toml` names the Fly app (`{fly_name}`) and region only. To deploy, add a
`Dockerfile` that starts the app listening on `$PORT`, add an `[http_service]`
with that `internal_port` to `fly.toml`, then run `fly deploy`.
{notes}"""
    dockerfile_path = plan.dockerfile or "Dockerfile"
    file_flag = f" -f {dockerfile_path}" if dockerfile_path != "Dockerfile" else ""
    env_flags = "".join(f" -e {key}={value}" for key, value in sorted(plan.env.items()))
    return f"""
## Deploy

This app ({plan.stack}) listens on port {plan.port}: {one_line(plan.reason)}.

On [Fly.io](https://fly.io), with `flyctl` logged in:

```sh
fly apps create {fly_name}   # once
fly deploy
```

With Docker:

```sh
docker build{file_flag} -t {fly_name} .
docker run --rm{env_flags} -p {plan.port}:{plan.port} {fly_name}
```
{notes}"""


def add_deploy_section(writer: TreeWriter, app_name: str, section: str) -> None:
    readmes = sorted(
        (name for lower, name in writer.names.items() if lower.split(".", 1)[0] == "readme"),
        key=lambda n: (not n.lower().endswith(_MARKDOWN), n),
    )
    if readmes and readmes[0].lower().endswith(_MARKDOWN) and writer.append(readmes[0], section):
        return
    if readmes:  # README.rst, README.txt … or one that cannot be appended to
        writer.add("DEPLOY.md", f"# Deploying {app_name}\n" + section)
        return
    writer.add("README.md", f"# {app_name}\n" + section)
