#!/usr/bin/env python3
"""Write the settings reference of docs/configuration.md from the settings models.

The table lies between the markers ``<!-- settings-reference:start -->`` and
``<!-- settings-reference:end -->`` and is made from ``core.settings.Settings``: its
own fields under its prefix (``APPGEN_``), then each part it composes (a cached
property returning a settings model of its own, such as ``Settings.docker`` →
``APPGEN_DOCKER_*``) under that part's prefix. Each row is the variable, its type,
its default and the field's description, so the page cannot drift from the code.

    python docs/settings_reference.py           # rewrite the table in place
    python docs/settings_reference.py --check   # exit 1 when the page is stale
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import annotated_types  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_settings import BaseSettings  # noqa: E402

import core.settings  # noqa: E402
from core.settings import Settings  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"
START = "<!-- settings-reference:start -->"
END = "<!-- settings-reference:end -->"
_SCRIPT = "docs/settings_reference.py"


def parts() -> Iterator[tuple[str, type[BaseSettings]]]:
    """The title and model of each part: the top-level settings, then every cached
    property of ``Settings`` (or of a base it builds on) whose return type is a
    settings model, bases first, each in the order its class declares them."""
    yield "General", Settings
    attributes = (vars(base).values() for base in reversed(Settings.__mro__))
    for attribute in (attribute for declared in attributes for attribute in declared):
        if not isinstance(attribute, cached_property):
            continue
        returned = get_type_hints(attribute.func, vars(core.settings)).get("return")
        if isinstance(returned, type) and issubclass(returned, BaseSettings):
            doc = (attribute.func.__doc__ or "").split(";")[0].strip()
            title = doc.removeprefix("The ").split(" (")[0].removesuffix("'s fields")
            yield title[:1].upper() + title[1:], returned


def env_name(model: type[BaseSettings], name: str, field: FieldInfo) -> str:
    if isinstance(field.validation_alias, str):
        return field.validation_alias.upper()
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


def describe_type(annotation: Any) -> str:
    """A reader's name of a field's type: `a`, `b` or `c` for a Literal, "JSON list
    of strings" for a list, "secret string" for SecretStr; optionality is left to the
    default column."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return describe_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        kept = [a for a in get_args(annotation) if a is not type(None)]
        return " or ".join(describe_type(a) for a in kept)
    if origin is Literal:
        values = [f"`{v}`" for v in get_args(annotation)]
        return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]
    if origin is list:
        (item,) = get_args(annotation) or (str,)
        return f"JSON list of {describe_type(item)}s"
    if origin is dict:
        return "JSON object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return describe_type(Literal[tuple(m.value for m in annotation)])
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
        SecretStr: "secret string",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def describe_bounds(field: FieldInfo) -> str:
    signs = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}
    bounds = []
    for constraint in field.metadata:
        if isinstance(constraint, annotated_types.Gt | annotated_types.Ge):
            which = "gt" if isinstance(constraint, annotated_types.Gt) else "ge"
            bounds.append(f"{signs[which]} {getattr(constraint, which)}")
        elif isinstance(constraint, annotated_types.Lt | annotated_types.Le):
            which = "lt" if isinstance(constraint, annotated_types.Lt) else "le"
            bounds.append(f"{signs[which]} {getattr(constraint, which)}")
    return f", {', '.join(bounds)}" if bounds else ""


def describe_default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{value:g}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value, separators=(', ', ': '))}`"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def reference() -> str:
    """The Markdown between the markers: a table per part."""
    blocks = [
        f"<!-- Generated by {_SCRIPT} from core/settings.py and core/options.py; "
        "edit the field descriptions there, then run the script. -->"
    ]
    for title, model in parts():
        prefix = model.model_config.get("env_prefix", "")
        rows = [
            f"### {title} (`{prefix}*`)",
            "",
            "| variable | type | default | description |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            rows.append(
                "| "
                + " | ".join(
                    [
                        f"`{env_name(model, name, field)}`",
                        _cell(describe_type(field.annotation) + describe_bounds(field)),
                        _cell(describe_default(field)),
                        _cell(field.description or ""),
                    ]
                )
                + " |"
            )
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def updated(page: str) -> str:
    """``page`` with the reference between its markers replaced by the current one."""
    head, start, rest = page.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{PAGE.relative_to(ROOT)} lacks the markers {START} … {END}")
    return f"{head}{START}\n{reference()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the page is stale")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    fresh = updated(page)
    if args.check:
        if fresh != page:
            print(
                f"{PAGE.relative_to(ROOT)}: the settings reference is stale; run python {_SCRIPT}",
                file=sys.stderr,
            )
            return 1
        return 0
    if fresh != page:
        PAGE.write_text(fresh, encoding="utf-8")
        print(f"{PAGE.relative_to(ROOT)}: settings reference updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
