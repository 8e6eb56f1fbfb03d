"""One generation's egress gateway (``python -m gateway``), started before the
generator and stopped after it, on the orchestrator's side.

The generator is handed only the gateway's socket directory; the gateway's config,
its events and its log stay in a private directory beside it, out of the generator's
reach, and its model key travels in its environment alone. ``receipt`` totals the
events once the gateway has stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from core.egress import (
    GATEWAY_KEY_VARIABLE,
    GATEWAY_TEST_UPSTREAMS_VARIABLE,
    MODEL_SOCKET,
    PROXY_SOCKET,
    GatewayConfig,
    GatewayEvent,
    dropped_marker,
    usage_cost,
)
from core.errors import GeneratorFailed
from core.models import GenerationReceipt, ModelUsage, RunLogger
from core.processes import die_with_parent, end_process_group, temp_prefix

SOCKETS = "sockets"
_START_SECONDS = 30.0
_STOP_GRACE_SECONDS = 5.0
# The agent chooses the hosts it tries: a receipt lists the most frequent ones and
# counts the rest, however many it made up.
RECEIPT_TARGETS = 50
# What of the orchestrator's environment the gateway process needs to run Python.
_GATEWAY_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "SSL_CERT_FILE", "SSL_CERT_DIR")


class EgressGateway:
    """``with EgressGateway(config, key, logger) as gateway:`` a running gateway whose
    sockets are in ``gateway.socket_dir``; after the block, ``gateway.receipt``."""

    def __init__(self, config: GatewayConfig, key: SecretStr | None, logger: RunLogger) -> None:
        self._key = key
        self._logger = logger
        self._state: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.config = config
        self.receipt: GenerationReceipt | None = None

    @property
    def socket_dir(self) -> Path:
        assert self._state is not None, "the gateway is not running"
        return self._state / SOCKETS

    def __enter__(self) -> EgressGateway:
        # Named like appgen's other temporary directories, so `appgen reap` removes
        # what a killed orchestrator left.
        self._state = Path(tempfile.mkdtemp(prefix=temp_prefix("gateway")))
        try:
            self._start(self._state)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self, state: Path) -> None:
        sockets = state / SOCKETS
        sockets.mkdir()
        overrides = os.environ.get(GATEWAY_TEST_UPSTREAMS_VARIABLE)
        self.config = self.config.model_copy(
            update={
                "socket_dir": str(sockets),
                "events_file": str(state / "events.jsonl"),
                "upstream_overrides": json.loads(overrides) if overrides else {},
            }
        )
        if overrides:
            self._logger.warning(
                "%s is set: the gateway sends %s to loopback stand-ins (tests only)",
                GATEWAY_TEST_UPSTREAMS_VARIABLE,
                ", ".join(self.config.upstream_overrides),
            )
        config_file = state / "config.json"
        config_file.write_text(self.config.model_dump_json())
        config_file.chmod(0o600)
        env = {name: os.environ[name] for name in _GATEWAY_ENV if name in os.environ}
        if self._key is not None:
            env[GATEWAY_KEY_VARIABLE] = self._key.get_secret_value()
        with open(state / "gateway.log", "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gateway", str(config_file)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
                preexec_fn=die_with_parent,
            )
        wanted = [PROXY_SOCKET] + ([MODEL_SOCKET] if self.config.policy.model else [])
        deadline = time.monotonic() + _START_SECONDS
        while not all(_accepts(sockets / name) for name in wanted):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise GeneratorFailed(f"the egress gateway did not start: {self._log_tail()}")
            time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        """Stop the gateway, total what it saw (``receipt``) and remove its directory."""
        if self._process is not None:
            end_process_group(self._process.pid, _STOP_GRACE_SECONDS, _STOP_GRACE_SECONDS)
            self._process.wait()
            self.receipt = self._tally()
        if self._state is not None:
            shutil.rmtree(self._state, ignore_errors=True)

    def _tally(self) -> GenerationReceipt:
        contacted: Counter[str] = Counter()
        refused: Counter[str] = Counter()
        usage = ModelUsage()
        budget: str | None = None
        for event in self._events():
            if event.event == "contacted":
                contacted[event.target] += 1
            elif event.event == "refused":
                refused[f"{event.target} ({event.reason})"] += 1
            elif event.event == "model_call":
                usage = usage.add(event.model, event.input_tokens, event.output_tokens)
            elif event.event == "budget_exhausted":
                budget = event.budget
        return GenerationReceipt(
            egress=self.config.policy.described_as,
            attempts_dropped=os.path.exists(dropped_marker(self.config.events_file)),
            contacted=_most_frequent(contacted),
            refused=_most_frequent(refused),
            usage=usage,
            cost_usd=usage_cost(usage, self.config.prices),
            budget_exhausted=budget,
        )

    def _events(self) -> Iterator[GatewayEvent]:
        """The gateway's events, read line by line: an agent that tried a million
        connections left a large file."""
        path = Path(self.config.events_file)
        if not path.exists():
            return  # nothing was tried
        with path.open(encoding="utf-8", errors="replace") as events:
            for line in events:
                with contextlib.suppress(ValueError):
                    yield GatewayEvent.model_validate_json(line)

    def _log_tail(self) -> str:
        assert self._state is not None
        try:
            lines = (self._state / "gateway.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return " | ".join(lines[-5:]) or "no output"


def _most_frequent(targets: Counter[str]) -> dict[str, int]:
    kept = dict(targets.most_common(RECEIPT_TARGETS))
    if others := targets.keys() - kept.keys():
        kept[f"({len(others)} other targets)"] = sum(targets[target] for target in others)
    return kept


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True
