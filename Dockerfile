# The orchestrator image for the ECS work pool: this project and its dependencies at
# /opt/prefect/appgen-orchestrator, where the `ecs` deployment's pull step looks.
#
#   docker build -t REGISTRY/appgen-orchestrator:TAG .
#   APPGEN_ORCHESTRATOR_IMAGE=REGISTRY/appgen-orchestrator:TAG appgen setup
FROM python:3.12-slim
RUN apt-get update && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/prefect/appgen-orchestrator
COPY . .
RUN pip install --no-cache-dir '.[postgres]'
