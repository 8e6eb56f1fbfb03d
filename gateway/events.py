"""The gateway's record: one JSON object per line, appended by every process of the
gateway (each line is a single ``write`` on an ``O_APPEND`` file, so lines written
at once by several processes never interleave)."""

from __future__ import annotations

import json
import os
from typing import Any


def record(path: str, event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)
