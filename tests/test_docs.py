"""The documentation stays true: the settings reference is the code's, the README stays
short, links resolve, and every APPGEN_* name the pages mention exists."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200

# APPGEN_* variables the pages may name that are not settings: the generator's
# contract (set by the orchestrator, read by `python -m generator`), the ECS
# deployment's image (read by `appgen setup` and prefect.yaml), the test suite's
# services, and former names that `appgen config` points at the new ones.
NOT_SETTINGS = {
    "APPGEN_REQUEST_ID",
    "APPGEN_PROMPT",
    "APPGEN_APP_DIR",
    "APPGEN_TIMEOUT_SECONDS",
    "APPGEN_UPLOAD_URL",
    "APPGEN_BASE_URL",
    "APPGEN_BASE_COMMIT",
    "APPGEN_REVISION",
    "APPGEN_EARLIER_PROMPTS",
    "APPGEN_PROMPT_HISTORY",
    "APPGEN_ORCHESTRATOR_IMAGE",
    "APPGEN_TEST_POSTGRES_URL",
    "APPGEN_TEST_PREFECT_API_URL",
    "APPGEN_DOCKER_NETWORK",
    "APPGEN_ECS_CONTAINER",
}

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_APPGEN_NAME = re.compile(r"\bAPPGEN_[A-Z0-9_]*")


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    """docs/settings_reference.py, imported from its path (docs/ is no package)."""
    path = ROOT / "docs" / "settings_reference.py"
    spec = importlib.util.spec_from_file_location("settings_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and code spans, where nothing is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of ``page``'s headings: lower case, punctuation dropped,
    spaces to hyphens, a repeated one suffixed -1, -2, …"""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_settings_reference_is_up_to_date(reference: ModuleType) -> None:
    page = reference.PAGE.read_text(encoding="utf-8")
    assert reference.updated(page) == page, (
        "docs/configuration.md's settings reference is stale: run python docs/settings_reference.py"
    )


def test_settings_reference_covers_every_setting(reference: ModuleType) -> None:
    page = reference.PAGE.read_text(encoding="utf-8")
    table = page.split(reference.START)[1].split(reference.END)[0]
    for _, model in reference.parts():
        for name, field in model.model_fields.items():
            variable = reference.env_name(model, name, field)
            assert f"| `{variable}` |" in table, f"{variable} is missing from the reference"
            assert field.description, f"{variable} has no description in its model"


def test_check_mode_fails_on_a_stale_page(
    reference: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# Configuration\n\n{reference.START}\nold table\n{reference.END}\n")
    monkeypatch.setattr(reference, "PAGE", stale)
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    assert reference.main(["--check"]) == 1
    assert reference.main([]) == 0
    assert reference.main(["--check"]) == 0
    assert "APPGEN_GENERATOR_SLOTS" in stale.read_text()


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in _anchors(linked)):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_appgen_name_is_a_setting(reference: ModuleType) -> None:
    known = set(NOT_SETTINGS)
    for _, model in reference.parts():
        known |= {reference.env_name(model, n, f) for n, f in model.model_fields.items()}
    unknown = []
    for page in PAGES:
        for name in set(_APPGEN_NAME.findall(page.read_text(encoding="utf-8"))):
            # A name ending in "_" is a prefix (APPGEN_DOCKER_*, APPGEN_S3_MAX_*).
            real = any(k.startswith(name) for k in known) if name.endswith("_") else name in known
            if not real:
                unknown.append(f"{page.relative_to(ROOT)}: {name}")
    assert not unknown, "not settings: " + ", ".join(sorted(unknown))
