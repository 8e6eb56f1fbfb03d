"""The proxy side of the gateway: a proxy.py plugin that lets a CONNECT tunnel or a
plain-HTTP request through only to a host the egress policy allows, and records
every attempt. Tunnels are never decrypted."""

from __future__ import annotations

import functools
import os

from proxy.http.exception import HttpRequestRejected
from proxy.http.parser import HttpParser
from proxy.http.proxy import HttpProxyBasePlugin

from core.egress import MAX_HOST_LENGTH, GatewayConfig
from gateway.events import record

CONFIG_VARIABLE = "APPGEN_GATEWAY_CONFIG"


@functools.cache
def gateway_config() -> GatewayConfig:
    """The config the gateway started with (proxy.py builds plugins in its own
    processes, which find it through the environment they inherit)."""
    with open(os.environ[CONFIG_VARIABLE]) as config:
        return GatewayConfig.model_validate_json(config.read())


class EgressFilter(HttpProxyBasePlugin):
    """Allow, or refuse with a 403 that says why and which setting decides."""

    def before_upstream_connection(self, request: HttpParser) -> HttpParser | None:
        config = gateway_config()
        host = (request.host or b"").decode(errors="replace")
        port = request.port or (443 if request.is_https_tunnel else 80)
        method = (request.method or b"").decode(errors="replace")
        refusal = config.policy.refusal(host, port, method)
        target = f"{host[:MAX_HOST_LENGTH]}:{port}"  # what is recorded: a DNS name's length
        if refusal is not None:
            record(config.events_file, "refused", target=target, method=method, reason=refusal)
            message = config.policy.refused_message(f"{method} {target}", refusal)
            raise HttpRequestRejected(status_code=403, reason=b"Forbidden", body=message.encode())
        record(config.events_file, "contacted", target=target, method=method)
        if override := config.upstream_overrides.get(target):
            stand_in_host, _, stand_in_port = override.rpartition(":")
            request.host, request.port = stand_in_host.encode(), int(stand_in_port)
        return request
