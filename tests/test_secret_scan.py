"""core.secret_scan: each kind of key is found, with its path, line and rule and
never its value; look-alikes are not; the allow pragma works; nothing leaves the host.

Keys are assembled at run time, so this file holds none in a form a scanner (ours or
a Git host's) would flag.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from blocks.configuration import run_blocks
from core.secret_scan import KnownSecret, held_secrets, scan_tree
from core.settings import Settings

ALNUM = "Q7fK2mZp9XwL4tRb8NcV1yHs6DgJ3uEa"  # 32 characters, no pattern


def key(*parts: str) -> str:
    return "".join(parts)


ANTHROPIC = key("sk-", "ant-", "api03-", ALNUM * 3, "-AA")
OPENAI_PROJECT = key("sk-", "proj-", ALNUM, "_", ALNUM, "T3Blbk", "FJ", ALNUM)
OPENAI_LEGACY = key("sk-", ALNUM[:20], "T3Blbk", "FJ", ALNUM[:20])
GITHUB_PAT = key("gh", "p_", ALNUM, "0a1b")
GITHUB_OAUTH = key("gh", "o_", ALNUM, "0a1b")
GITHUB_APP_TOKEN = key("gh", "s_", ALNUM, "0a1b")
GITHUB_FINE_GRAINED = key("github", "_pat_", "11ABCDEFG0", ALNUM[:12], "_", ALNUM * 2)
AWS = key("AK", "IA", "Z7Q4M2XW8R5T1LPN")
STRIPE = key("sk", "_live_", ALNUM[:26])
STRIPE_RESTRICTED = key("rk", "_live_", ALNUM[:26])
PEM_BODY = base64.b64encode(bytes(range(48)) * 4).decode()
RSA_KEY = key(
    "-----BEGIN RSA ", "PRIVATE KEY-----\n", PEM_BODY, "\n-----END RSA PRIVATE KEY-----\n"
)
OPENSSH_KEY = key("-----BEGIN OPENSSH ", "PRIVATE KEY-----\n", PEM_BODY, "\n-----END OPENSSH ")
EC_KEY = key("-----BEGIN EC ", "PRIVATE KEY-----\n", PEM_BODY, "\n-----END EC PRIVATE KEY-----")

PLANTED = [
    ("anthropic in source", "src/config.js", f'export const apiKey = "{ANTHROPIC}";\n', 1),
    ("openai project key in .env.example", ".env.example", f"OPENAI_API_KEY={OPENAI_PROJECT}\n", 1),
    ("openai legacy key", "server/settings.py", f"\n\nOPENAI = '{OPENAI_LEGACY}'\n", 3),
    ("github classic token", "config/deep/nested/app.yaml", f"github:\n  token: {GITHUB_PAT}\n", 2),
    ("github oauth token", "lib/auth.ts", f"const t = `{GITHUB_OAUTH}`;\n", 1),
    ("github app token", "scripts/ci.sh", f"export GH_TOKEN={GITHUB_APP_TOKEN}\n", 1),
    ("github fine-grained", "README.md", f"token: {GITHUB_FINE_GRAINED}\n", 1),
    ("github app private key", "config/github-app.pem", RSA_KEY, 1),
    ("aws access key", "infra/aws.json", json.dumps({"accessKeyId": AWS}, indent=2), 2),
    ("stripe secret key", "server/pay.py", f"stripe.api_key = '{STRIPE}'\n", 1),
    ("stripe restricted key", "server/pay.rb", f"Stripe.api_key = '{STRIPE_RESTRICTED}'\n", 1),
    ("openssh private key", "deploy/id_ed25519", OPENSSH_KEY, 1),
    ("ec private key in json", "config/keys.json", json.dumps({"pem": EC_KEY}), 1),
    (
        "anthropic base64-encoded in json",
        "config/service.json",
        json.dumps({"service": {"credentials": base64.b64encode(ANTHROPIC.encode()).decode()}}),
        1,
    ),
    (
        "private key base64-encoded in json",
        "config/app.json",
        json.dumps({"privateKey": base64.b64encode(RSA_KEY.encode()).decode()}, indent=1),
        2,
    ),
]


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def secret_values(text: str) -> list[str]:
    """Every planted value that occurs in ``text`` (long lines of a PEM included)."""
    values = [ANTHROPIC, OPENAI_PROJECT, OPENAI_LEGACY, GITHUB_PAT, GITHUB_OAUTH]
    values += [GITHUB_APP_TOKEN, GITHUB_FINE_GRAINED, AWS, STRIPE, STRIPE_RESTRICTED, PEM_BODY]
    return [value for value in values if value in text]


@pytest.mark.parametrize(
    ("path", "text", "line"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED]
)
def test_each_kind_of_key_is_found_with_its_path_and_line_never_its_value(
    tmp_path, path, text, line
):
    root = write(tmp_path / "app", {path: text, "index.js": "console.log('hi')\n"})
    scanned, findings = scan_tree(root)
    assert scanned == 2
    assert {(f.path, f.line) for f in findings} == {(path, line)}, findings
    shown = " ".join(f"{f} {f!r} {f.model_dump_json()}" for f in findings)
    assert secret_values(shown) == []


def test_the_rule_names_the_kind_of_key(tmp_path):
    root = write(
        tmp_path / "app",
        {
            "a.js": ANTHROPIC,
            "b.py": OPENAI_PROJECT,
            "c.yml": GITHUB_PAT,
            "d.json": AWS,
            "e.rb": STRIPE,
            "f.pem": RSA_KEY,
            "g.json": json.dumps({"k": base64.b64encode(GITHUB_PAT.encode()).decode()}),
        },
    )
    rules = {f.path: f.rule for f in scan_tree(root)[1]}
    assert rules == {
        "a.js": "Anthropic API key",
        "b.py": "OpenAI API key",
        "c.yml": "GitHub token",
        "d.json": "AWS access key",
        "e.rb": "Stripe live key",
        "f.pem": "private key",
        "g.json": "GitHub token (base64-encoded)",
    }


def test_a_clean_app_with_look_alikes_has_no_findings(tmp_path):
    integrity = base64.b64encode(bytes(range(64))).decode()
    lock = {
        "name": "counter",
        "lockfileVersion": 3,
        "packages": {
            f"node_modules/pkg{i}": {
                "version": "1.0.0",
                "resolved": f"https://registry.npmjs.org/pkg{i}/-/pkg{i}-1.0.0.tgz",
                "integrity": f"sha512-{integrity[i:]}{integrity[:i]}",
            }
            for i in range(20)
        },
    }
    root = write(
        tmp_path / "app",
        {
            "package-lock.json": json.dumps(lock, indent=2),
            "yarn.lock": f"pkg@^1.0.0:\n  integrity sha512-{integrity}\n  resolved x#{'ab' * 20}\n",
            "src/ids.js": "const id = '123e4567-e89b-12d3-a456-426614174000';\n"
            "const sha = 'da39a3ee5e6b4b0d3255bfef95601890afd80709';\n"
            "const sum = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';\n",
            "tests/fixtures/users.json": json.dumps(
                {"user": "alice", "password": "correct-horse-battery", "token": "test-token"}
            ),
            "tests/auth.test.js": "expect(isKey('sk-test')).toBe(false);\n"
            "expect(prefix).toBe('ghp_');\nconst fake = 'sk_test_' + 'x'.repeat(24);\n",
            "docs/keys.md": "Anthropic keys start with `sk-ant-`, GitHub tokens with `ghp_`.\n"
            "The AWS documentation key AKIAIOSFODNN7EXAMPLE is not a real one.\n",
            "certs/public.pem": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
            "-----END PUBLIC KEY-----\n-----BEGIN CERTIFICATE-----\nMIIB\n"
            "-----END CERTIFICATE-----\n",
            "public/logo.svg": f'<svg><image href="data:image/png;base64,{integrity}"/></svg>\n',
            "src/skeleton.css": ".sk-loader-skeleton-placeholder-animation-wrapper { }\n",
            ".env.example": "PORT=3000\nDATABASE_URL=postgres://localhost/app\nAPI_KEY=\n",
        },
    )
    (root / "public/logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + ANTHROPIC.encode())
    scanned, findings = scan_tree(root)
    assert findings == []
    assert scanned == 10  # the binary file is not read as text


def test_the_template_app_is_clean(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    subprocess.run(
        [sys.executable, "-m", "generator", "--agent", "template", "--app-dir", str(app)],
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "APPGEN_PROMPT": "a counter", "APPGEN_REQUEST_ID": "1"},
        cwd=Path(__file__).resolve().parent.parent,
    )
    scanned, findings = scan_tree(app)
    assert scanned > 0 and findings == []


def test_the_allowlist_pragma_allows_a_line(tmp_path):
    root = write(
        tmp_path / "app",
        {
            "a.py": f'KEY = "{GITHUB_PAT}"  # pragma: allowlist secret\n',
            "b.js": f'// pragma: allowlist nextline secret\nconst k = "{ANTHROPIC}";\n',
            ".env.example": f"A={GITHUB_PAT} # pragma: allowlist secret\nB={GITHUB_OAUTH}\n",
        },
    )
    findings = scan_tree(root)[1]
    assert [(f.path, f.line) for f in findings] == [(".env.example", 2)]


def test_exact_values_the_orchestrator_holds_are_found_whatever_their_shape(tmp_path):
    held = [
        KnownSecret("APPGEN_GITHUB_TOKEN", "plain-token-value-123"),
        KnownSecret("APPGEN_DATABASE_URL", "hunter2hunter2"),
        KnownSecret("APPGEN_GITHUB_APP_PRIVATE_KEY", f"{RSA_KEY.splitlines()[0]}\n{PEM_BODY}\n"),
        KnownSecret("SHORT", "abc"),  # too short to look for
    ]
    root = write(
        tmp_path / "app",
        {
            "a.js": "const t = 'plain-token-value-123';\n",
            "b.txt": "db password: hunter2hunter2\n",
            "c.json": json.dumps({"body": PEM_BODY}),
            "d.json": json.dumps({"t": base64.b64encode(b"plain-token-value-123").decode()}),
            "e.txt": "abc abc abc\n",
        },
    )
    findings = {f.path: f.rule for f in scan_tree(root, held)[1]}
    assert findings == {
        "a.js": "a secret the orchestrator holds (APPGEN_GITHUB_TOKEN)",
        "b.txt": "a secret the orchestrator holds (APPGEN_DATABASE_URL)",
        "c.json": "a secret the orchestrator holds (APPGEN_GITHUB_APP_PRIVATE_KEY)",
        "d.json": "a secret the orchestrator holds (APPGEN_GITHUB_TOKEN) (base64-encoded)",
    }
    assert "plain-token-value-123" not in repr(held)


def test_held_secrets_are_the_blocks_secrets_and_the_agents_key_variables(monkeypatch, prefect_api):
    monkeypatch.setenv("APPGEN_GIT_HOST", "github")
    monkeypatch.setenv("APPGEN_GITHUB_OWNER", "acme")
    monkeypatch.setenv("APPGEN_GITHUB_TOKEN", "settings-token-value")
    monkeypatch.setenv("APPGEN_DATABASE_URL", "postgresql+psycopg://u:db-password-1@db/appgen")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "agent-key-value-1234")
    monkeypatch.setenv("MY_AGENT_TOKEN", "my-agent-token-value")
    monkeypatch.setenv("NODE_ENV", "production")  # passed to the agent, but no key
    configured = run_blocks(Settings()).known_secrets()
    held = {s.source: s.value for s in held_secrets(configured, ("MY_AGENT_TOKEN", "NODE_ENV"))}
    assert held["APPGEN_GITHUB_TOKEN"] == "settings-token-value"
    assert held["APPGEN_DATABASE_URL"] == "db-password-1"  # the password, not the whole URL
    assert held["ANTHROPIC_API_KEY"] == "agent-key-value-1234"
    assert held["MY_AGENT_TOKEN"] == "my-agent-token-value"
    assert "NODE_ENV" not in held


def test_a_sqlite_url_without_a_password_is_no_secret(prefect_api):
    configured = run_blocks(Settings()).known_secrets()
    assert "APPGEN_DATABASE_URL" not in {s.source for s in held_secrets(configured)}


def test_the_scan_makes_no_network_connection(tmp_path, monkeypatch):
    """detect-secrets can verify keys with their services; appgen never lets it."""
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    root = write(tmp_path / "app", {"a.py": f"aws = '{AWS}'\nstripe = '{STRIPE}'\n"})
    assert len(scan_tree(root)[1]) == 2
    assert attempts == []


def test_links_are_not_followed(tmp_path):
    outside = write(tmp_path / "outside", {"key.txt": GITHUB_PAT})
    root = write(tmp_path / "app", {"index.js": "1\n"})
    (root / "linked.txt").symlink_to(outside / "key.txt")
    assert scan_tree(root) == (1, [])


def test_detect_secrets_plugins_add_the_kinds_appgen_has_no_rule_for(tmp_path):
    slack = key("xo", "xb-", "1234567890-", "1234567890123-", "AbCdEfGhIjKlMnOpQrStUvWx")
    npm = key("//registry.npmjs.org/:_authToken=", "npm_", ALNUM, "abcd")
    root = write(tmp_path / "app", {"bot.js": f"const slack = '{slack}';\n", ".npmrc": npm})
    rules = {f.path: f.rule for f in scan_tree(root)[1]}
    assert rules == {"bot.js": "Slack Token", ".npmrc": "NPM tokens"}
