"""File names as a person or an API sees them.

A generated app's file names are untrusted bytes. The orchestrator handles them as
``str`` decoded with the file-system encoding's ``surrogateescape`` (what ``os``
returns), which copies and publishes them byte for byte. Such a ``str`` cannot be
encoded as UTF-8 or JSON, though, so every name that reaches a log line, an error
message, a model or an artifact goes through ``display_path`` first.
"""

from __future__ import annotations

import os
import re

# C0 controls and DEL: a newline or escape sequence in a name must not forge a log
# line or a table row.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def display_path(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 become ``\\xNN`` escapes
    (so ``b"err-\\xff.log"`` shows as ``err-\\xff.log`` with a literal backslash), as
    do control characters. For people and APIs only, never for opening the file.

    >>> display_path(os.fsdecode(b"err-\\xff.log"))
    'err-\\\\xff.log'
    >>> display_path("caf\\u00e9\\n.txt")
    'café\\\\x0a.txt'
    """
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
