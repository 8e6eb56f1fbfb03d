"""The Dockerfile of a static site: Caddy serves it (its Caddyfile written inline)."""

from __future__ import annotations

from core.launch import LaunchPlan
from core.launch.render.instructions import HOME, USER, copy_source, env_line, in_folder, json_list
from core.launch.render.node import copy_manifests, node_image, root_install

CADDY_IMAGE = "caddy:2"


def caddyfile(spa: bool) -> list[str]:
    site = ["    root * /srv", "    encode gzip"]
    site += ["    try_files {path} /index.html"] if spa else []
    return [
        "{",
        "    admin off",
        "    auto_https off",
        "}",
        ":{$PORT:8080} {",
        *site,
        "    file_server",
        "}",
    ]


def static_dockerfile(plan: LaunchPlan) -> str:
    lines: list[str] = []
    copies: list[str] = []
    node = plan.node
    if node is not None and plan.build_commands:
        lines += [
            f"FROM {node_image(node)} AS build",
            "WORKDIR /app",
            *copy_manifests(node, chown=False),
            *root_install(node, production=False),
            f"COPY {copy_source(node.folder)} ./",
            *(f"RUN {command}" for command in plan.build_commands),
            "",
        ]
        copies.append(f"COPY --from=build /app/{plan.static_dir} /srv/")
    elif plan.static_dir:
        copies.append(f"COPY {copy_source(in_folder(plan.folder, plan.static_dir))} /srv/")
    else:
        site_files = [e for e in plan.static_entries if not e.endswith("/")]
        if site_files:
            copies.append(
                f"COPY {json_list([*(in_folder(plan.folder, e) for e in site_files), '/srv/'])}"
            )
        copies += [
            f"COPY {json_list([in_folder(plan.folder, e), f'/srv/{e}'])}"
            for e in plan.static_entries
            if e.endswith("/")
        ]
    caddy_lines = " ".join(f"'{line}'" for line in caddyfile(plan.spa))
    env = {
        "HOME": HOME,
        "XDG_CONFIG_HOME": f"{HOME}/.config",
        "XDG_DATA_HOME": f"{HOME}/.local/share",
        "PORT": str(plan.port),
    }
    lines += [
        f"FROM {CADDY_IMAGE}",
        env_line(env),
        f"RUN mkdir -p {HOME} /srv /etc/caddy && chown {USER} {HOME} && "
        f"printf '%s\\n' {caddy_lines} > /etc/caddy/Caddyfile",
        *copies,
        f"USER {USER}",
        f"EXPOSE {plan.port}",
        'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]',
    ]
    return "\n".join(lines) + "\n"
