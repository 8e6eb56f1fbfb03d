"""Which runtime version an app asks for: ``engines.node``, ``requires-python``, ``go``."""

from __future__ import annotations

import re

from packaging.specifiers import InvalidSpecifier, SpecifierSet

NODE_MAJORS = (18, 20, 22, 24)
NODE_DEFAULT = 22
PYTHON_MINORS = ("3.9", "3.10", "3.11", "3.12", "3.13")
PYTHON_DEFAULT = "3.12"
GO_DEFAULT = "1.23"

_COMPARATOR = re.compile(
    r"^(>=|<=|>|<|=|\^|~)?\s*v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?"
)


def node_major(range_text: str | None) -> tuple[str, str | None]:
    """The Node major version to build with, and a note when the range was not usable.
    The default major is used when it satisfies the range, else the newest that does."""
    if not range_text or not range_text.strip():
        return str(NODE_DEFAULT), None
    fitting = [major for major in NODE_MAJORS if _node_range_allows(range_text, major)]
    if not fitting:
        return str(NODE_DEFAULT), f"engines.node {range_text!r} names no current Node release"
    return str(NODE_DEFAULT if NODE_DEFAULT in fitting else max(fitting)), None


def _node_range_allows(range_text: str, major: int) -> bool:
    for alternative in range_text.split("||"):
        tokens = re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*v?[\dxX*][\w.*]*", alternative)
        if not tokens:
            continue
        if all(
            _comparator_allows(token, (major, 0, 0)) or _comparator_allows(token, (major, 99, 0))
            for token in tokens
        ):
            return True
    return False


def _comparator_allows(token: str, version: tuple[int, int, int]) -> bool:
    match = _COMPARATOR.match(token.strip())
    if not match:
        return True
    op = match.group(1) or "="
    parts = [match.group(i) for i in (2, 3, 4)]
    wild = next((i for i, p in enumerate(parts) if p is None or p in "xX*"), 3)
    numbers = tuple(int(p) if i < wild else 0 for i, p in enumerate(parts))
    if op in ("=", "^", "~"):  # only the major matters for choosing a base image
        return wild == 0 or version[0] == numbers[0]
    return {
        ">=": version >= numbers,
        ">": version[:wild] > numbers[:wild] if wild < 3 else version > numbers,
        "<=": version[:wild] <= numbers[:wild] if wild < 3 else version <= numbers,
        "<": version < numbers,
    }[op]


def python_minor(spec: str | None) -> tuple[str, str | None]:
    """The Python ``3.X`` to build with for a ``requires-python`` (or ``.python-version``)."""
    if not spec or not spec.strip():
        return PYTHON_DEFAULT, None
    text = spec.strip()
    plain = re.fullmatch(r"(?:python-?)?(3\.\d+)(?:\.\d+)?", text)
    if plain:
        return plain.group(1), None
    try:
        specifiers = SpecifierSet(text)
    except InvalidSpecifier:
        return PYTHON_DEFAULT, f"requires-python {text!r} is not a version specifier"
    fitting = [
        minor
        for minor in PYTHON_MINORS
        if specifiers.contains(f"{minor}.0") or specifiers.contains(f"{minor}.99")
    ]
    if not fitting:
        return PYTHON_DEFAULT, f"requires-python {text!r} names no current Python release"
    return (PYTHON_DEFAULT if PYTHON_DEFAULT in fitting else fitting[-1]), None


def go_version(go_mod: str) -> str:
    """``golang`` image version from go.mod's ``toolchain`` or ``go`` line."""
    toolchain = re.search(r"^toolchain\s+go(\d+\.\d+)", go_mod, re.MULTILINE)
    directive = re.search(r"^go\s+(\d+\.\d+)", go_mod, re.MULTILINE)
    match = toolchain or directive
    return match.group(1) if match else GO_DEFAULT
