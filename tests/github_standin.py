"""A local stand-in for GitHub: the REST endpoints appgen uses, with GitHub's shapes
and status codes, and a real git smart-HTTP server (`git http-backend`) that refuses
any request without the expected credential. Loopback only."""

from __future__ import annotations

import base64
import itertools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import jwt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Account:
    login: str
    kind: str  # "User" or "Organization"


@dataclass
class GitHubState:
    root: Path
    token: str = "ghp_standinTokenValue0123456789"
    scopes: str = "repo"
    app_public_key: str | None = None
    app_id: str = "4242"
    installation_id: int = 77
    installation_token_lifetime: int = 3600
    accounts: dict[str, Account] = field(default_factory=dict)
    repos: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (method, "reset" | "retry-after"): the next such request is rate limited
    rate_limit_next: list[tuple[str, str]] = field(default_factory=list)
    fail_next_push: bool = False
    # GitHub push protection: secret type -> regex; a push whose new tree matches one
    # is rejected with GitHub's GH013 "repository rule violations" message.
    push_protection: dict[str, str] = field(default_factory=dict)
    # (owner, name) -> pull requests, in the order they were opened
    pulls: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # the next this many pull-request lists answer [] (GitHub's lists lag its writes)
    stale_pull_lists: int = 0
    # pull request numbers GitHub will not reopen (their branch was recreated)
    unreopenable: set[int] = field(default_factory=set)
    # (owner, name, number) -> review comments (replies too), reviews, issue comments
    review_comments: dict[tuple[str, str, int], list[dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[tuple[str, str, int], list[dict[str, Any]]] = field(default_factory=dict)
    issue_comments: dict[tuple[str, str, int], list[dict[str, Any]]] = field(default_factory=dict)
    # When set, a push is held after it has landed, before its answer goes back:
    # push_landed is set, and the answer waits for release_push (a kill lands here).
    hold_pushes: bool = False
    push_landed: threading.Event = field(default_factory=threading.Event)
    release_push: threading.Event = field(default_factory=threading.Event)
    # (method, endpoint) -> statuses the next such requests answer, one each, before
    # doing anything (an outage); endpoints: "user", "repo", "create", "access_token"
    server_errors: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # statuses the next creates answer *after* creating the repository (the response
    # is lost on the way back), and whether the new repository then reads as 404 once
    lost_creates: list[int] = field(default_factory=list)
    lost_create_reads_stale: bool = False
    # names whose next GET answers 404 although they exist (a replica lagging behind)
    stale_reads: set[str] = field(default_factory=set)
    installation_tokens: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))

    def add_account(self, login: str, kind: str = "User") -> None:
        self.accounts[login] = Account(login, kind)

    def add_foreign_repository(self, owner: str, name: str) -> None:
        """A repository someone else created: same name, no appgen marker."""
        self._store(owner, name, "someone else's project", private=False)

    def answer_5xx(self, method: str, endpoint: str, times: int = 1, status: int = 503) -> None:
        """The next ``times`` requests to ``endpoint`` answer ``status`` (GitHub down)."""
        self.server_errors.setdefault((method, endpoint), []).extend([status] * times)

    def lose_next_create(self, status: int = 502, *, stale_read: bool = False) -> None:
        """The next create succeeds server-side but answers ``status``; with
        ``stale_read`` the new repository then reads as 404 once (a lagging replica)."""
        self.lost_creates.append(status)
        self.lost_create_reads_stale = stale_read

    def api_calls(self, method: str, path_suffix: str) -> int:
        """How many REST requests (any answer) went to a path ending with this."""
        return sum(
            1
            for m, path, _ in self.requests
            if m == method and path.startswith("/api/v3/") and path.endswith(path_suffix)
        )

    def close_pull(self, owner: str, name: str, number: int, *, merged: bool = False) -> None:
        pull = next(p for p in self.pulls[(owner, name)] if p["number"] == number)
        pull["state"] = "closed"
        pull["merged_at"] = "2026-11-28T10:00:00Z" if merged else None

    def add_review_comment(
        self, owner: str, name: str, number: int, path: str, line: int, body: str, login: str
    ) -> int:
        """A reviewer's comment on a line of the pull request's diff; its id."""
        comment_id = next(self._ids)
        comment = {
            "id": comment_id,
            "body": body,
            "path": path,
            "line": line,
            "original_line": line,
            "user": {"login": login},
            "in_reply_to_id": None,
        }
        self.review_comments.setdefault((owner, name, number), []).append(comment)
        return comment_id

    def add_review(
        self, owner: str, name: str, number: int, body: str, login: str, state: str = "COMMENTED"
    ) -> int:
        """A submitted review of the pull request, with its body; its id."""
        review_id = next(self._ids)
        review = {"id": review_id, "body": body, "state": state, "user": {"login": login}}
        self.reviews.setdefault((owner, name, number), []).append(review)
        return review_id

    def bare_path(self, owner: str, name: str) -> Path:
        return self.root / owner / f"{name}.git"

    def _store(self, owner: str, name: str, description: str, private: bool) -> dict[str, Any]:
        path = self.bare_path(owner, name)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
        repo = {
            "id": next(self._ids),
            "name": name,
            "full_name": f"{owner}/{name}",
            "owner": {"login": owner},
            "private": private,
            "description": description,
            "html_url": f"{self.base_url}/{owner}/{name}",
            "clone_url": f"{self.base_url}/{owner}/{name}.git",
        }
        self.repos[(owner, name)] = repo
        return repo

    base_url: str = ""


def _basic_credentials(header: str) -> str | None:
    """The token of an `Authorization: Basic base64(user:token)` header (the scheme is
    case-insensitive, as in HTTP)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded).decode().partition(":")[2]
    except ValueError:
        return None


def build_app(state: GitHubState) -> Starlette:
    def valid_tokens() -> set[str]:
        return {state.token, *state.installation_tokens}

    def authenticated(request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "token") and value in valid_tokens()

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse(
            {"message": message, "documentation_url": "https://docs.github.com/rest"},
            status_code=status,
            headers=headers,
        )

    def outage(request: Request, endpoint: str) -> Response | None:
        statuses = state.server_errors.get((request.method, endpoint))
        if not statuses:
            return None
        status = statuses.pop(0)
        return Response(f"<html>{status} GitHub is unavailable</html>", status_code=status)

    def api(
        handler: Callable[[Request], Awaitable[Response]],
        endpoint_name: str,
        scope_needed: str | None = None,
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            state.requests.append(
                (request.method, request.url.path, request.headers.get("authorization", ""))
            )
            if (down := outage(request, endpoint_name)) is not None:
                return down
            if not authenticated(request):
                return error(401, "Bad credentials")
            if state.rate_limit_next and state.rate_limit_next[0][0] == request.method:
                kind = state.rate_limit_next.pop(0)[1]
                if kind == "retry-after":
                    return error(
                        429, "You have exceeded a secondary rate limit.", **{"retry-after": "1"}
                    )
                return error(
                    403,
                    "API rate limit exceeded",
                    **{
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": str(int(time.time()) + 1),
                    },
                )
            if scope_needed and scope_needed not in state.scopes.split(", "):
                return error(
                    403,
                    "Resource not accessible by personal access token",
                    **{"x-accepted-oauth-scopes": scope_needed, "x-oauth-scopes": state.scopes},
                )
            return await handler(request)

        return endpoint

    async def get_user(request: Request) -> Response:
        account = state.accounts.get(request.path_params["owner"])
        if account is None:
            return error(404, "Not Found")
        return JSONResponse({"login": account.login, "type": account.kind})

    async def get_repo(request: Request) -> Response:
        if request.path_params["name"] in state.stale_reads:
            state.stale_reads.discard(request.path_params["name"])
            return error(404, "Not Found")
        repo = state.repos.get((request.path_params["owner"], request.path_params["name"]))
        return JSONResponse(repo) if repo else error(404, "Not Found")

    async def create(request: Request, owner: str) -> Response:
        body = await request.json()
        if (owner, body["name"]) in state.repos:
            return JSONResponse(
                {
                    "message": "Repository creation failed.",
                    "errors": [
                        {
                            "resource": "Repository",
                            "code": "custom",
                            "field": "name",
                            "message": "name already exists on this account",
                        }
                    ],
                    "documentation_url": "https://docs.github.com/rest/repos/repos",
                },
                status_code=422,
            )
        repo = state._store(
            owner, body["name"], body.get("description") or "", body.get("private", False)
        )
        if state.lost_creates:
            if state.lost_create_reads_stale:
                state.stale_reads.add(body["name"])
            return error(state.lost_creates.pop(0), "Server Error")
        return JSONResponse(repo, status_code=201)

    async def create_for_user(request: Request) -> Response:
        # The authenticated user: the first User account.
        login = next(a.login for a in state.accounts.values() if a.kind == "User")
        return await create(request, login)

    async def create_for_org(request: Request) -> Response:
        org = request.path_params["org"]
        if state.accounts.get(org, Account(org, "")).kind != "Organization":
            return error(404, "Not Found")
        return await create(request, org)

    def pull_list(request: Request) -> list[dict[str, Any]] | None:
        key = (request.path_params["owner"], request.path_params["name"])
        return state.pulls.setdefault(key, []) if key in state.repos else None

    async def list_pulls(request: Request) -> Response:
        pulls = pull_list(request)
        if pulls is None:
            return error(404, "Not Found")
        if state.stale_pull_lists:
            state.stale_pull_lists -= 1
            return JSONResponse([])
        query = request.query_params
        wanted = query.get("state", "open")
        found = [
            p
            for p in reversed(pulls)
            if (wanted == "all" or p["state"] == wanted)
            and query.get("head", p["head"]["label"]) == p["head"]["label"]
            and query.get("base", p["base"]["ref"]) == p["base"]["ref"]
        ]
        return JSONResponse(found)

    async def create_pull(request: Request) -> Response:
        pulls = pull_list(request)
        if pulls is None:
            return error(404, "Not Found")
        owner, name = request.path_params["owner"], request.path_params["name"]
        body = await request.json()
        label = f"{owner}:{body['head']}"
        exists = subprocess.run(
            [
                "git",
                f"--git-dir={state.bare_path(owner, name)}",
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{body['head']}",
            ],
            capture_output=True,
        )
        if exists.returncode != 0:
            return validation_failed(
                {"resource": "PullRequest", "field": "head", "code": "invalid"}
            )
        if any(p["state"] == "open" and p["head"]["label"] == label for p in pulls):
            return validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {label}.",
                }
            )
        number = len(pulls) + 1
        pull = {
            "number": number,
            "state": "open",
            "title": body["title"],
            "body": body.get("body"),
            "html_url": f"{state.base_url}/{owner}/{name}/pull/{number}",
            "head": {"ref": body["head"], "label": label},
            "base": {"ref": body["base"]},
            "merged_at": None,
        }
        pulls.append(pull)
        return JSONResponse(pull, status_code=201)

    async def update_pull(request: Request) -> Response:
        pulls = pull_list(request) or []
        number = int(request.path_params["number"])
        pull = next((p for p in pulls if p["number"] == number), None)
        if pull is None:
            return error(404, "Not Found")
        body = await request.json()
        if body.get("state") == "open" and (pull["merged_at"] or number in state.unreopenable):
            return validation_failed(
                {"resource": "PullRequest", "code": "custom", "message": "merged"}
            )
        pull.update({k: v for k, v in body.items() if k in ("state", "title", "body")})
        return JSONResponse(pull)

    def pull_key(request: Request) -> tuple[str, str, int] | None:
        owner, name = request.path_params["owner"], request.path_params["name"]
        number = int(request.path_params["number"])
        pulls = state.pulls.get((owner, name), [])
        return (owner, name, number) if any(p["number"] == number for p in pulls) else None

    def page_of(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        size = int(request.query_params.get("per_page", "30"))
        page = int(request.query_params.get("page", "1"))
        return JSONResponse(items[(page - 1) * size : page * size])

    async def list_review_comments(request: Request) -> Response:
        if (key := pull_key(request)) is None:
            return error(404, "Not Found")
        return page_of(request, state.review_comments.get(key, []))

    async def list_reviews(request: Request) -> Response:
        if (key := pull_key(request)) is None:
            return error(404, "Not Found")
        return page_of(request, state.reviews.get(key, []))

    async def reply_to_comment(request: Request) -> Response:
        if (key := pull_key(request)) is None:
            return error(404, "Not Found")
        thread = state.review_comments.get(key, [])
        parent = next((c for c in thread if c["id"] == int(request.path_params["id"])), None)
        if parent is None:
            return error(404, "Not Found")
        reply = {
            "id": next(state._ids),
            "body": (await request.json())["body"],
            "path": parent["path"],
            "line": parent["line"],
            "original_line": parent["line"],
            "user": {"login": "appgen-bot"},
            "in_reply_to_id": parent["id"],
        }
        thread.append(reply)
        return JSONResponse(reply, status_code=201)

    async def comment_on_issue(request: Request) -> Response:
        if (key := pull_key(request)) is None:
            return error(404, "Not Found")
        comment = {"id": next(state._ids), "body": (await request.json())["body"]}
        state.issue_comments.setdefault(key, []).append(comment)
        return JSONResponse(comment, status_code=201)

    def validation_failed(*errors: dict[str, Any]) -> JSONResponse:
        return JSONResponse(
            {
                "message": "Validation Failed",
                "errors": list(errors),
                "documentation_url": "https://docs.github.com/rest/pulls/pulls",
            },
            status_code=422,
        )

    async def installation_token(request: Request) -> Response:
        state.requests.append(
            (request.method, request.url.path, request.headers.get("authorization", ""))
        )
        if (down := outage(request, "access_token")) is not None:
            return down
        token = request.headers.get("authorization", "").partition(" ")[2]
        assert state.app_public_key is not None, "no GitHub App on this stand-in"
        try:
            claims = jwt.decode(token, state.app_public_key, algorithms=["RS256"])
        except jwt.PyJWTError:
            return error(401, "A JSON web token could not be decoded")
        if claims["iss"] != state.app_id or int(request.path_params["id"]) != state.installation_id:
            return error(404, "Not Found")
        granted = f"ghs_installation{len(state.installation_tokens):04d}{os.urandom(8).hex()}"
        state.installation_tokens.append(granted)
        expires = time.gmtime(time.time() + state.installation_token_lifetime)
        return JSONResponse(
            {"token": granted, "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", expires)},
            status_code=201,
        )

    async def git(request: Request) -> Response:
        """`git http-backend` for the bare repositories, behind a credential check."""
        credential = request.headers.get("authorization", "")
        state.requests.append((request.method, request.url.path, credential))
        if _basic_credentials(credential) not in valid_tokens():
            return Response(
                "Authentication failed",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
            )
        service = request.query_params.get("service") or request.url.path.rsplit("/", 1)[-1]
        if "receive-pack" in service and request.method == "POST" and state.fail_next_push:
            state.fail_next_push = False
            return Response("GitHub is having a moment", status_code=503)
        body = await request.body()
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(state.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": "127.0.0.1",
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.url.path,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        if "content-encoding" in request.headers:
            env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
        if state.push_protection and "receive-pack" in service:
            env |= {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "core.hooksPath",
                "GIT_CONFIG_VALUE_0": str(_push_protection_hooks(state)),
            }
        completed = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True
        )
        if "receive-pack" in service and request.method == "POST" and state.hold_pushes:
            state.push_landed.set()
            await anyio.to_thread.run_sync(state.release_push.wait, 120)
        head, _, payload = completed.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value
        return Response(payload, status_code=status, headers=headers)

    return Starlette(
        routes=[
            Route("/api/v3/users/{owner}", api(get_user, "user")),
            Route("/api/v3/repos/{owner}/{name}", api(get_repo, "repo")),
            Route("/api/v3/repos/{owner}/{name}/pulls", api(list_pulls, "pulls")),
            Route(
                "/api/v3/repos/{owner}/{name}/pulls",
                api(create_pull, "pulls", "repo"),
                methods=["POST"],
            ),
            Route(
                "/api/v3/repos/{owner}/{name}/pulls/{number}",
                api(update_pull, "pulls", "repo"),
                methods=["PATCH"],
            ),
            Route(
                "/api/v3/repos/{owner}/{name}/pulls/{number}/comments",
                api(list_review_comments, "review"),
            ),
            Route(
                "/api/v3/repos/{owner}/{name}/pulls/{number}/reviews", api(list_reviews, "review")
            ),
            Route(
                "/api/v3/repos/{owner}/{name}/pulls/{number}/comments/{id}/replies",
                api(reply_to_comment, "review", "repo"),
                methods=["POST"],
            ),
            Route(
                "/api/v3/repos/{owner}/{name}/issues/{number}/comments",
                api(comment_on_issue, "review", "repo"),
                methods=["POST"],
            ),
            Route("/api/v3/user/repos", api(create_for_user, "create", "repo"), methods=["POST"]),
            Route(
                "/api/v3/orgs/{org}/repos", api(create_for_org, "create", "repo"), methods=["POST"]
            ),
            Route(
                "/api/v3/app/installations/{id}/access_tokens", installation_token, methods=["POST"]
            ),
            Route("/{owner}/{repo}.git/{rest:path}", git, methods=["GET", "POST"]),
        ]
    )


# A pre-receive hook that answers as GitHub's push protection does: the secret types
# found, each with the commit and path:line of its locations, and exit 1 (git then
# reports "[remote rejected] ... (pre-receive hook declined)").
_PUSH_PROTECTION_HOOK = """#!{python}
import json, re, subprocess, sys

RULES = json.loads({rules!r})
found = {{}}
for update in sys.stdin.read().splitlines():
    old, new, ref = update.split()
    if set(new) == {{"0"}}:
        continue
    for name, pattern in RULES.items():
        grep = subprocess.run(
            ["git", "grep", "-n", "-I", "-P", "-e", pattern, new],
            capture_output=True, text=True,
        )
        for hit in grep.stdout.splitlines():
            _, path, line = hit.split(":", 3)[:3]
            found.setdefault(name, []).append((new, path + ":" + line))
if not found:
    sys.exit(0)
out = sys.stderr
print("error: GH013: Repository rule violations found for " + ref + ".", file=out)
print("", file=out)
print("- GITHUB PUSH PROTECTION", file=out)
print("  " + "\u2014" * 41, file=out)
print("    Resolve the following violations before pushing again", file=out)
print("", file=out)
print("    - Push cannot contain secrets", file=out)
print("", file=out)
for name, locations in found.items():
    print("      \u2014\u2014 " + name + " " + "\u2014" * 20, file=out)
    print("       locations:", file=out)
    for commit, where in locations:
        print("         - commit: " + commit, file=out)
        print("           path: " + where, file=out)
    print("", file=out)
    print("       (?) To push, remove secret from commit(s) or follow this URL to allow "
          "the secret.", file=out)
    print("       https://github.com/unblock-secret/standin", file=out)
sys.exit(1)
"""


def _push_protection_hooks(state: GitHubState) -> Path:
    """The hooks directory that makes receive-pack apply ``state.push_protection``."""
    import json
    import sys

    hooks = state.root.parent / f"{state.root.name}-push-protection"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "pre-receive"
    hook.write_text(
        _PUSH_PROTECTION_HOOK.format(python=sys.executable, rules=json.dumps(state.push_protection))
    )
    hook.chmod(0o755)
    return hooks


class GitHubStandIn:
    """Runs the stand-in on 127.0.0.1 in a background thread."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.git_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.git_url}/api/v3"
        self.root = root
        self.state = GitHubState(root=root)
        self._server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.state), host="127.0.0.1", port=self.port, log_level="warning"
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def reset(self, root: Path) -> GitHubState:
        """A clean account state for one test (same server)."""
        fresh = GitHubState(root=root, base_url=self.git_url)
        self.state.__dict__.update(fresh.__dict__)
        return self.state

    def __enter__(self) -> GitHubStandIn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the GitHub stand-in did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
