"""The Dockerfile of a Go app: a static binary on a distroless image."""

from __future__ import annotations

from core.launch import LaunchPlan
from core.launch.render.instructions import (
    copy_source,
    env_line,
    in_folder,
    json_list,
    start_command,
)

GO_RUNTIME_IMAGE = "gcr.io/distroless/static-debian12:nonroot"


def go_dockerfile(plan: LaunchPlan) -> str:
    folder = plan.folder
    lines = [
        f"FROM golang:{plan.version} AS build",
        "WORKDIR /src",
        f"COPY {json_list([in_folder(folder, 'go.mod'), in_folder(folder, 'go.sum*'), './'])}",
        "RUN go mod download",
        f"COPY {copy_source(folder)} ./",
        "RUN mkdir -p /out/app && CGO_ENABLED=0 go build -trimpath -ldflags=-s "
        f"-o /out/app/server {plan.go_package}",
        "",
        f"FROM {GO_RUNTIME_IMAGE}",
        "COPY --from=build --chown=65532:65532 /out/app /app",
        "WORKDIR /app",
    ]
    if plan.env:
        lines.append(env_line(plan.env))
    lines += ["USER 65532:65532", f"EXPOSE {plan.port}", start_command(plan)]
    return "\n".join(lines) + "\n"
