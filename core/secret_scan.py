"""Find secrets in a staged tree before anything of it is pushed.

Three passes over every text file, each line allowed inline with detect-secrets'
pragma (``# pragma: allowlist secret`` on the line, or ``pragma: allowlist nextline
secret`` on the line before):

1. appgen's own rules for the keys this service deals in (``RULES``): Anthropic,
   OpenAI, GitHub tokens, AWS access keys, Stripe live keys, PEM private keys — also
   looked for inside base64 strings (a key base64-encoded into a JSON config);
2. the exact values of the secrets the orchestrator itself holds (``KnownSecret``:
   its Git host token, App key, database password, the agent's API key …);
3. detect-secrets' format-specific plugins (``DETECT_SECRETS_PLUGINS``), with its
   heuristic filters (UUIDs, lock files, templated values …). Its entropy and
   keyword plugins are left out: they flag hashes and test fixtures, and a false
   positive here blocks a publish.

A ``SecretFinding`` carries the path, the line and the rule: never the secret. The
matched text is dropped where it is found.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from core.models import SecretFinding
from core.paths import display_path

# Only the first part of a file is looked at for a NUL byte, as git does.
_BINARY_SNIFF_BYTES = 8000
# Known secrets shorter than this would match ordinary text.
MIN_KNOWN_SECRET_LENGTH = 8
# A line of a multi-line secret (a PEM body) that is found on its own.
_MIN_SECRET_LINE_LENGTH = 20
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_MIN_DECODED_CHARS = 16


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]


def _rule(name: str, pattern: str) -> Rule:
    return Rule(name, re.compile(pattern))


# Token characters on both sides are excluded, so a rule never fires in the middle
# of a longer identifier or hash.
_B = r"(?<![A-Za-z0-9_-])"
_E = r"(?![A-Za-z0-9_-])"
RULES = (
    _rule("Anthropic API key", rf"{_B}sk-ant-(?:api|admin|oat|sid)\d{{0,3}}-[A-Za-z0-9_-]{{20,}}"),
    _rule("OpenAI API key", rf"{_B}sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{{20,}}"),
    _rule("OpenAI API key", rf"{_B}sk-[A-Za-z0-9]{{20}}T3BlbkFJ[A-Za-z0-9]{{20}}{_E}"),
    _rule("OpenAI API key", rf"{_B}sk-[A-Za-z0-9]{{48}}{_E}"),
    _rule("GitHub token", rf"{_B}gh[pousr]_[A-Za-z0-9]{{30,251}}{_E}"),
    _rule("GitHub fine-grained token", rf"{_B}github_pat_[A-Za-z0-9_]{{22,}}{_E}"),
    # AWS's own documentation key (AKIAIOSFODNN7EXAMPLE) is everywhere in examples.
    _rule(
        "AWS access key",
        r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?<!EXAMPLE)(?![A-Z0-9])",
    ),
    _rule("Stripe live key", rf"{_B}(?:sk|rk)_live_[A-Za-z0-9]{{20,}}{_E}"),
    _rule("private key", r"-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----"),
)

# detect-secrets' plugins whose patterns name one kind of credential.
DETECT_SECRETS_PLUGINS = (
    "AWSKeyDetector",
    "AzureStorageKeyDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
)
# detect-secrets keeps its configuration in module globals.
_DETECT_SECRETS_LOCK = threading.Lock()


@dataclass(frozen=True)
class KnownSecret:
    """A secret the orchestrator holds: where it comes from (a variable name, shown in
    findings) and its value (never shown)."""

    source: str
    value: str

    def __repr__(self) -> str:
        return f"KnownSecret(source={self.source!r}, value='***')"

    def needles(self) -> list[str]:
        """What to look for: the value, and each long line of a multi-line value."""
        value = self.value.strip()
        if "\n" not in value:
            return [value] if len(value) >= MIN_KNOWN_SECRET_LENGTH else []
        return [
            line.strip()
            for line in value.splitlines()
            if len(line.strip()) >= _MIN_SECRET_LINE_LENGTH and not line.startswith("-----")
        ]


def scan_tree(
    root: Path, known: Iterable[KnownSecret] = (), texts: Mapping[str, str] | None = None
) -> tuple[int, list[SecretFinding]]:
    """Scan every regular file under ``root`` (links are not followed), and ``texts``
    (name → text published beside the tree, such as the commit message): the number
    of text files scanned and the findings, sorted by path and line."""
    needles = [(secret.source, needle) for secret in known for needle in secret.needles()]
    files = sorted(_text_files(root))
    findings: dict[tuple[str, int], list[str]] = {}
    for name, text in (texts or {}).items():
        for line_number, rule in _own_findings(name, text, needles):
            findings.setdefault((name, line_number), []).append(rule)
    for relative in files:
        text = (root / relative).read_bytes().decode("utf-8", errors="replace")
        for line_number, rule in _own_findings(relative, text, needles):
            findings.setdefault((relative, line_number), []).append(rule)
    for relative, line_number, rule in _detect_secrets_findings(root, files):
        # Another name for what appgen's own rules already reported on that line.
        findings.setdefault((relative, line_number), [rule])
    return len(files), [
        SecretFinding(path=display_path(path), line=line, rule=rule)
        for (path, line), rules in sorted(findings.items())
        for rule in dict.fromkeys(rules)
    ]


def _text_files(root: Path) -> Iterator[str]:
    """Relative paths of the regular files under ``root`` that hold no NUL byte."""
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as handle:
                if b"\0" in handle.read(_BINARY_SNIFF_BYTES):
                    continue
            yield os.path.relpath(path, root)


def _own_findings(
    relative: str, text: str, needles: list[tuple[str, str]]
) -> Iterator[tuple[int, str]]:
    """(line, rule) for appgen's rules and the known secrets, on the lines and in
    base64 strings decoded from them; allowed lines are skipped."""
    from detect_secrets.filters.allowlist import is_line_allowlisted
    from detect_secrets.util.code_snippet import get_code_snippet

    lines = text.splitlines()
    for index, line in enumerate(lines):
        rules = list(_rules_in(line, needles))
        for token in _BASE64_TOKEN.findall(line):
            decoded = _decoded_text(token)
            if decoded is not None:
                rules += [f"{rule} (base64-encoded)" for rule in _rules_in(decoded, needles)]
        if not rules:
            continue
        context = get_code_snippet(lines, index + 1, lines_of_context=1)
        if is_line_allowlisted(relative, line, context):
            continue
        for rule in dict.fromkeys(rules):
            yield index + 1, rule


def _rules_in(text: str, needles: list[tuple[str, str]]) -> Iterator[str]:
    for rule in RULES:
        if rule.pattern.search(text):
            yield rule.name
    for source, needle in needles:
        if needle in text:
            yield f"a secret the orchestrator holds ({source})"


def _decoded_text(token: str) -> str | None:
    """The text a base64 (or base64url) token encodes, if it is text."""
    padded = token + "=" * (-len(token) % 4)
    try:
        raw = (
            base64.urlsafe_b64decode(padded)
            if "-" in token or "_" in token
            else base64.b64decode(padded, validate=True)
        )
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
    if len(text) < _MIN_DECODED_CHARS or printable < 0.95 * len(text):
        return None
    return text


def _is_documentation_example(value: str) -> bool:
    """AWS's documentation keys (AKIAIOSFODNN7EXAMPLE, wJalr…EXAMPLEKEY)."""
    return value.endswith(("EXAMPLE", "EXAMPLEKEY"))


def _detect_secrets_findings(root: Path, files: list[str]) -> Iterator[tuple[str, int, str]]:
    """(path, line, secret type) from detect-secrets' plugins. Verification (which
    would call the services the keys belong to) is never configured."""
    from detect_secrets.core.scan import scan_file
    from detect_secrets.settings import transient_settings

    config = {"plugins_used": [{"name": name} for name in DETECT_SECRETS_PLUGINS]}
    found = []
    with _DETECT_SECRETS_LOCK, transient_settings(config):
        for relative in files:
            for secret in scan_file(str(root / relative)):
                if not _is_documentation_example(secret.secret_value or ""):
                    found.append((relative, secret.line_number, secret.type))
                secret.secret_value = None  # not kept past this point
    yield from found


# Variables of the orchestrator's environment that hold credentials whatever the
# settings say: model providers' keys, AWS's, GitHub's.
HELD_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "OPENAI_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
)
# An agent variable is a key when its name says so (APPGEN_AGENT_ENV may also pass
# harmless ones such as NODE_ENV, whose values are ordinary words).
_KEY_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def url_password(url: str) -> str | None:
    """The password in a URL such as a database URL, if it has one."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).password
    except sa.exc.ArgumentError:
        return None


def held_secrets(
    configured: Iterable[KnownSecret] = (), agent_env: Iterable[str] = ()
) -> list[KnownSecret]:
    """The secrets the orchestrator holds: those of the run's blocks (``configured``:
    a token, an App key, the database's password …), the values core.redaction
    registered, and the key variables of the agent (``agent_env``: the names the
    generator passes) and of ``HELD_VARIABLES`` that are set."""
    from core.redaction import registered_secrets

    held = list(configured)
    held += [KnownSecret("a credential appgen uses", value) for value in registered_secrets()]
    names = [n for n in agent_env if _KEY_NAME.search(n)] + list(HELD_VARIABLES)
    for name in dict.fromkeys(names):
        if os.environ.get(name):
            held.append(KnownSecret(name, os.environ[name]))
    first_by_value: dict[str, KnownSecret] = {}
    for secret in held:  # a value is named by where it is configured, once
        first_by_value.setdefault(secret.value, secret)
    return [secret for secret in first_by_value.values() if secret.needles()]
