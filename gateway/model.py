"""The model side of the gateway: a relay (Starlette, with httpx upstream) between the
agent and the model API. The agent's base URL points here and it holds a placeholder
key; the relay drops whatever key the agent sent, attaches the real one, passes the
answer through as it streams, and totals the ``usage`` the model reports."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core.egress import GATEWAY_KEY_VARIABLE, GatewayConfig, usage_cost
from core.models import ModelUsage
from gateway.events import record

# Headers that belong to one hop, or carry the agent's (placeholder) credentials.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
        "x-api-key",
        "authorization",
    }
)
_NOT_RETURNED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}
)
_UPSTREAM_TIMEOUT = httpx.Timeout(600.0, connect=30.0)
_RELAYED_POSTS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
_RELAYED_TEXT = "POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models"


class UsageMeter:
    """Reads the usage of one answer as its bytes pass: a JSON message, or the
    server-sent events of a streamed one (``message_start`` carries the input tokens,
    ``message_delta`` the output tokens so far)."""

    def __init__(self, streamed: bool) -> None:
        self._streamed = streamed
        self._buffer = b""
        self.model = "unknown"
        self.input_tokens = 0
        self.output_tokens = 0

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if self._streamed:
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    self._read(line[5:])

    def close(self) -> None:
        if not self._streamed:
            self._read(self._buffer)
        elif self._buffer.startswith(b"data:"):
            self._read(self._buffer[5:])

    def _read(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "message_start":
            message = message.get("message") or {}
        self.model = str(message.get("model") or self.model)
        usage = message.get("usage")
        if not isinstance(usage, dict):
            return
        inputs = sum(
            int(usage.get(name) or 0)
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        # A stream's message_delta repeats the totals so far; the largest is the last.
        self.input_tokens = max(self.input_tokens, inputs)
        self.output_tokens = max(self.output_tokens, int(usage.get("output_tokens") or 0))


class ModelRelay:
    """The relay's state: one generation's usage, and its budgets."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.usage = ModelUsage()
        self._key = os.environ.get(GATEWAY_KEY_VARIABLE, "")
        self._client = httpx.AsyncClient(base_url=config.model_api_url, timeout=_UPSTREAM_TIMEOUT)

    def exhausted(self) -> str | None:
        """Which budget is spent, with what was spent, or None."""
        config, usage = self.config, self.usage
        cost = usage_cost(usage, config.prices)
        if config.max_tokens is not None and usage.tokens >= config.max_tokens:
            return f"APPGEN_AGENT_MAX_TOKENS={config.max_tokens} ({usage.tokens} tokens used)"
        if config.max_cost_usd is not None and cost >= config.max_cost_usd:
            return f"APPGEN_AGENT_MAX_COST_USD={config.max_cost_usd:g} (${cost:.4f} spent)"
        return None

    async def relay(self, request: Request) -> Response:
        config = self.config
        if not _relayed(request.method, request.url.path):
            reason = f"{request.method} {request.url.path} is not a call the relay passes on"
            record(config.events_file, "refused", target="model API", reason=reason)
            return _error(403, f"appgen egress gateway: {reason} (only {_RELAYED_TEXT})")
        methods = config.policy.methods
        if methods and request.method not in methods:
            reason = f"method {request.method} is not allowed (only {', '.join(methods)})"
            record(config.events_file, "refused", target="model API", reason=reason)
            return _error(403, config.policy.refused_message("a model API call", reason))
        if budget := self.exhausted():
            record(config.events_file, "budget_exhausted", spend=True, budget=budget)
            return _error(403, f"appgen egress gateway: budget exhausted: {budget}")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        headers["accept-encoding"] = "identity"  # usage is read from the bytes as they pass
        if config.key_header == "x-api-key":
            headers["x-api-key"] = self._key
        else:
            headers["authorization"] = f"Bearer {self._key}"
        upstream = self._client.build_request(
            request.method,
            request.url.path,
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        try:
            answer = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            record(config.events_file, "model_error", reason=type(exc).__name__)
            return _error(502, f"appgen egress gateway: the model API did not answer ({exc})")
        meter = UsageMeter("text/event-stream" in answer.headers.get("content-type", ""))
        return StreamingResponse(
            self._pass_through(answer, meter),
            status_code=answer.status_code,
            headers={k: v for k, v in answer.headers.items() if k.lower() not in _NOT_RETURNED},
        )

    async def _pass_through(
        self, answer: httpx.Response, meter: UsageMeter
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in answer.aiter_raw():
                meter.feed(chunk)
                yield chunk
        finally:
            await answer.aclose()
            meter.close()
            self.usage = self.usage.add(meter.model, meter.input_tokens, meter.output_tokens)
            record(
                self.config.events_file,
                "model_call",
                spend=True,
                model=meter.model,
                status=answer.status_code,
                input_tokens=meter.input_tokens,
                output_tokens=meter.output_tokens,
            )

    async def close(self) -> None:
        await self._client.aclose()


def _relayed(method: str, path: str) -> bool:
    """The model API calls an agent makes: messages (which report their usage, so
    budgets hold), token counts, and reading the model list. Anything else (message
    batches, whose usage comes later; files; admin calls) never reaches the API."""
    if path in _RELAYED_POSTS:
        return method == "POST"
    return method in ("GET", "HEAD") and (path == "/v1/models" or path.startswith("/v1/models/"))


def _error(status: int, message: str) -> JSONResponse:
    """An error shaped like the model API's own, so the agent shows its message."""
    return JSONResponse(
        {"type": "error", "error": {"type": "permission_error", "message": message}},
        status_code=status,
    )


def relay_app(config: GatewayConfig) -> Starlette:
    relay = ModelRelay(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await relay.close()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(
        routes=[Route("/{path:path}", relay.relay, methods=methods)], lifespan=lifespan
    )
