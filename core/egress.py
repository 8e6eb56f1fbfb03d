"""What a generator may reach: the egress policy its gateway enforces, and the price
table that turns the model's reported usage into a cost.

The policy is by host name. HTTPS is tunnelled (CONNECT), never decrypted, so the
gateway sees the host and port of each connection, not the requests inside it;
the methods limit applies to plain-HTTP requests and to the model API, which the
agent reaches through the gateway's model relay, never directly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import BaseModel, Field

from core.models import ModelUsage

EgressPreset = Literal["none", "model", "registries"]
EGRESS_SETTING = "APPGEN_AGENT_EGRESS"
# The gateway's sockets, in the directory a generator is handed (generator/egress.py,
# on the standard library alone, names them too).
PROXY_SOCKET = "proxy.sock"
MODEL_SOCKET = "model.sock"

# The package registries an agent installs from: PyPI, npm, the Go module proxy and
# checksum database, crates.io.
REGISTRY_HOSTS = (
    "pypi.org",
    "files.pythonhosted.org",
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    "proxy.golang.org",
    "sum.golang.org",
    "crates.io",
    "index.crates.io",
    "static.crates.io",
)
# The longest DNS name: a longer host is none.
MAX_HOST_LENGTH = 253
# How much of the gateway's event log an agent's attempts may fill (gateway/events.py).
MAX_EVENTS_BYTES = 16 * 1024 * 1024


def dropped_marker(events_file: str) -> str:
    """The file beside the event log whose presence says attempts went unrecorded."""
    return f"{events_file}.full"


# Ports a tunnel or a plain request may go to.
ALLOWED_PORTS = (80, 443)

# US dollars per million input and output tokens, by model name prefix (the longest
# matching prefix wins). A model not listed is priced as "default".
DEFAULT_MODEL_PRICES: dict[str, tuple[float, float]] = {
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "default": (15.0, 75.0),
}


class EgressPolicy(BaseModel):
    """The hosts (``fnmatch`` patterns such as ``*.example.com``) and, optionally, the
    methods a generation may use, and whether its model relay runs."""

    hosts: tuple[str, ...] = ()
    methods: tuple[str, ...] = Field(
        default=(), description="Allowed methods of plain-HTTP and model requests; () = any."
    )
    model: bool = Field(default=False, description="Whether the agent may call the model API.")
    described_as: str = ""

    @classmethod
    def from_setting(cls, egress: str | Iterable[str], methods: Iterable[str] = ()) -> EgressPolicy:
        """``none``, ``model``, ``registries`` or a list of host patterns (the model API
        included: a list is what an agent needs besides its model)."""
        methods = tuple(method.upper() for method in methods)
        if isinstance(egress, str):
            hosts = REGISTRY_HOSTS if egress == "registries" else ()
            return cls(hosts=hosts, methods=methods, model=egress != "none", described_as=egress)
        patterns = tuple(pattern.lower() for pattern in egress)
        return cls(
            hosts=patterns, methods=methods, model=True, described_as=", ".join(patterns) or "[]"
        )

    def refusal(self, host: str, port: int, method: str) -> str | None:
        """Why a connection to ``host:port`` (a CONNECT, or a plain request) is refused,
        or None when it is allowed."""
        host = host.lower().rstrip(".")
        if len(host) > MAX_HOST_LENGTH:
            return f"a host name of {len(host)} characters is not one"
        if not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts):
            return f"host {host} is not allowed"
        if port not in ALLOWED_PORTS:
            return f"port {port} is not allowed (only {' and '.join(map(str, ALLOWED_PORTS))})"
        if method != "CONNECT" and self.methods and method.upper() not in self.methods:
            return f"method {method} is not allowed (only {', '.join(self.methods)})"
        return None

    def refused_message(self, what: str, reason: str) -> str:
        """The body of a 403: what was refused, why, and the setting that decides."""
        return (
            f"appgen egress gateway: {what} refused: {reason}. This generation's egress is "
            f"{self.described_as!r}; {EGRESS_SETTING} (none, model, registries or a JSON list "
            "of host patterns) decides what an agent may reach.\n"
        )


def usage_cost(usage: ModelUsage, prices: Mapping[str, tuple[float, float]]) -> float:
    """The estimated cost in US dollars of ``usage``, from its per-model tokens."""
    total = 0.0
    for model, (input_tokens, output_tokens) in usage.by_model.items():
        input_price, output_price = model_price(model, prices)
        total += (input_tokens * input_price + output_tokens * output_price) / 1_000_000
    return round(total, 6)


def model_price(model: str, prices: Mapping[str, tuple[float, float]]) -> tuple[float, float]:
    matches = [prefix for prefix in prices if prefix != "default" and model.startswith(prefix)]
    if matches:
        return prices[max(matches, key=len)]
    return prices.get("default", DEFAULT_MODEL_PRICES["default"])


ModelKeyHeader = Literal["x-api-key", "authorization"]
# Where the gateway finds the model key: in its own environment, never in its config
# file or on its command line.
GATEWAY_KEY_VARIABLE = "APPGEN_GATEWAY_MODEL_KEY"
# Tests only: {"host:port": "127.0.0.1:port"} sends allowed hosts to loopback stand-ins.
GATEWAY_TEST_UPSTREAMS_VARIABLE = "APPGEN_GATEWAY_TEST_UPSTREAMS"


class GatewayConfig(BaseModel):
    """What ``python -m gateway`` is told (a JSON file written by the orchestrator)."""

    socket_dir: str
    events_file: str
    policy: EgressPolicy
    model_api_url: str
    key_header: ModelKeyHeader = "x-api-key"
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_PRICES)
    )
    upstream_overrides: dict[str, str] = Field(default_factory=dict)


class GatewayEvent(BaseModel):
    """One line of the gateway's events file."""

    event: Literal["contacted", "refused", "model_call", "model_error", "budget_exhausted"]
    target: str = ""
    method: str = ""
    reason: str = ""
    model: str = "unknown"
    status: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    budget: str = ""
