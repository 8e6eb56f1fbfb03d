"""The gateway's record: one JSON object per line, appended by every process of the
gateway (each line is a single ``write`` on an ``O_APPEND`` file, so lines written
at once by several processes never interleave).

The agent decides how many connections it tries, so what it can make the gateway
write is bounded: past ``MAX_EVENTS_BYTES`` attempts are no longer recorded (and a
marker file beside the log says so). Model calls are always recorded: each one is
real spend, which the receipt must total.
"""

from __future__ import annotations

import json
import os
from typing import Any

from core.egress import MAX_EVENTS_BYTES, dropped_marker


def record(path: str, event: str, *, spend: bool = False, **fields: Any) -> None:
    """Append one event; an attempt (not ``spend``) past the size bound is dropped."""
    line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if not spend and os.fstat(descriptor).st_size >= MAX_EVENTS_BYTES:
            os.close(os.open(dropped_marker(path), os.O_WRONLY | os.O_CREAT, 0o600))
            return
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
