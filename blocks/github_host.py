"""GitHub (or GitHub Enterprise) as the Git host.

Repositories are created idempotently: a repository carries a marker of its request
in its description, so a re-run recognises and reuses its own repository, while a
name held by anyone else moves on to ``name-2``, ``name-3`` … The credential (a token,
or a GitHub App's installation token) travels only in HTTP headers: for the REST API
through httpx, for git through ``GIT_CONFIG_*`` environment variables — never in a
URL, a file, a command line, a log line or an error message.

GitHub's own failures are survived within bounds: rate limits are waited out (within
``max_rate_limit_wait_seconds``), and 5xx answers, connection errors and timeouts are
retried with exponential backoff (``RetryPolicy``). Every call the REST client makes
is safe to repeat: reads, minting an installation token, and creating a repository —
a create whose response was lost answers 422 "name already exists" when retried, and
the repository is then found again by its request marker. Replies to review feedback
are the exception: a reply whose answer was lost may be posted twice.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import jwt
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger
from pydantic import PrivateAttr, model_validator

from blocks.git_hosts import MAX_NAME_ATTEMPTS, GitHost, candidate_names
from core.errors import InvalidRequest, PublishError
from core.models import PullRequest, RemoteRepository, ReviewNote, RunLogger
from core.options import GitHubOptions
from core.redaction import redact, register_secret

_API_VERSION = "2022-11-28"
# Mint a new installation token when the cached one has less than this left.
_TOKEN_REFRESH_MARGIN_SECONDS = 300
_JWT_LIFETIME_SECONDS = 540  # GitHub allows at most 10 minutes
_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_PAGE_SIZE = 100
# In every comment appgen writes, so that it never reads its own replies as feedback.
REPLY_MARKER = "<!-- appgen:reply -->"


@dataclass(frozen=True)
class RetryPolicy:
    """How a REST call is retried after a 5xx answer, a connection error or a timeout:
    at most ``attempts`` tries, waiting ``first_delay`` seconds then twice as long each
    time (at most ``max_delay``), and no retry that would take the call past
    ``budget`` seconds since its first failure. The defaults wait 0.5 + 1 + 2 + 4 s."""

    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 60.0

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first)."""
        return min(self.max_delay, self.first_delay * 2.0 ** (retry - 1))


RETRY_POLICY = RetryPolicy()


def request_marker(request_id: int) -> str:
    """The token in a repository's description that says which request owns it."""
    return f"[appgen:request={request_id}]"


class GitHubHost(GitHost, GitHubOptions):
    """Publishes to GitHub or GitHub Enterprise under one owner (user or
    organisation), authenticated with a token or as a GitHub App installation.

    Example:
        ```python
        from blocks.github_host import GitHubHost

        host = GitHubHost.load("BLOCK_NAME")
        ```
    """

    _block_type_name = "Appgen GitHub Host"
    _block_type_slug = "appgen-github-host"
    _description = "Creates repositories on GitHub and pushes to them without exposing the token."

    _installation_token: tuple[str, float] | None = PrivateAttr(default=None)
    _token_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> GitHubHost:
        app = (self.app_id, self.app_private_key, self.installation_id)
        if self.token is None and not all(app):
            raise ValueError(
                "GitHub needs a token or a GitHub App (app id, private key and installation "
                "id): the appgen-github-host block's fields, or APPGEN_GITHUB_TOKEN, "
                "APPGEN_GITHUB_APP_ID, APPGEN_GITHUB_APP_PRIVATE_KEY and "
                "APPGEN_GITHUB_INSTALLATION_ID"
            )
        return self

    # -- GitHost -------------------------------------------------------------------

    def ensure_repository(
        self, name: str, request_id: int, known_id: str | None = None
    ) -> RemoteRepository:
        # Only a holder of the token creates repositories here (never an agent), so the
        # marker in the description identifies the request's own; ``known_id`` (the
        # numeric id returned before) is not needed to tell them apart.
        marker = request_marker(request_id)
        with self._api() as api:
            owner_type = api.call("GET", f"/users/{self.owner}", what="look up the owner")
            for candidate in candidate_names(name):
                repository = api.repository(self.owner, candidate)
                if repository is None:
                    repository = self._create(api, candidate, marker, owner_type["type"])
                if repository is not None and marker in (repository.get("description") or ""):
                    return RemoteRepository(
                        name=repository["name"],
                        url=repository["html_url"],
                        push_url=repository["clone_url"],
                        id=str(repository["id"]),
                    )
        raise PublishError(
            f"the names {name!r} to {name}-{MAX_NAME_ATTEMPTS} are all taken under "
            f"{self.owner}; choose another --app-name"
        )

    def git_config(self) -> dict[str, str]:
        credential = base64.b64encode(f"x-access-token:{self._current_token()}".encode()).decode()
        register_secret(credential)
        return {
            f"http.{self.git_url.rstrip('/')}/.extraheader": f"AUTHORIZATION: basic {credential}"
        }

    def open_pull_request(
        self, repository: RemoteRepository, branch: str, *, title: str, body: str
    ) -> PullRequest:
        """The branch's one pull request against main: an open one is kept (the push
        updated it; its body is brought up to date), a closed one is reopened, and a
        new one is opened when there is none or the last was merged (or cannot be
        reopened). A create that answers
        422 because one exists already (a lost response, a lagging list) finds it."""
        pulls = f"/repos/{self.owner}/{repository.name}/pulls"
        what = f"open a pull request from {branch} in {self.owner}/{repository.name}"
        with self._api() as api:
            earlier = self._pull_requests(api, pulls, branch, "all", what)
            if pull := next((p for p in earlier if p["state"] == "open"), None):
                if pull.get("body") != body:  # a revision adds itself to the list
                    api.call("PATCH", f"{pulls}/{pull['number']}", what=what, json={"body": body})
                return _pull_request(pull, "updated")
            closed = next((p for p in earlier if not p.get("merged_at")), None)
            if closed is not None:
                reopened = api.send(
                    "PATCH",
                    f"{pulls}/{closed['number']}",
                    what=what,
                    json={"state": "open", "body": body},
                )
                if reopened.is_success:
                    return _pull_request(reopened.json(), "reopened")
                _log().warning(
                    "could not reopen pull request #%d (%d %s); opening a new one",
                    closed["number"],
                    reopened.status_code,
                    _error_message(reopened),
                )
            request = {"title": title, "head": branch, "base": "main", "body": body}
            created = api.send("POST", pulls, what=what, json=request)
            if created.status_code == 422:
                # "A pull request already exists for owner:branch": find it again.
                found = self._pull_requests(api, pulls, branch, "open", what, looks=3)
                if found:
                    return _pull_request(found[0], "updated")
            return _pull_request(api.check(created, what), "opened")

    def review_feedback(self, repository: RemoteRepository, branch: str) -> list[ReviewNote]:
        what = f"read the review feedback on {branch} of {self.owner}/{repository.name}"
        with self._api() as api:
            base, number = self._open_pull(api, repository, branch, what)
            comments = _all_pages(api, f"{base}/pulls/{number}/comments", what)
            reviews = _all_pages(api, f"{base}/pulls/{number}/reviews", what)
        notes = [
            ReviewNote(
                kind="comment",
                id=comment["id"],
                author=(comment.get("user") or {}).get("login", "someone"),
                body=comment.get("body") or "",
                path=comment.get("path"),
                line=comment.get("line") or comment.get("original_line"),
            )
            for comment in comments
        ] + [
            ReviewNote(
                kind="review",
                id=review["id"],
                author=(review.get("user") or {}).get("login", "someone"),
                body=review.get("body") or "",
            )
            for review in reviews
        ]
        return [n for n in notes if n.body.strip() and REPLY_MARKER not in n.body]

    def reply_to_review(
        self, repository: RemoteRepository, branch: str, notes: list[ReviewNote], text: str
    ) -> None:
        what = f"reply to the review of {branch} in {self.owner}/{repository.name}"
        body = f"{text}\n\n{REPLY_MARKER}"
        with self._api() as api:
            base, number = self._open_pull(api, repository, branch, what)
            for note in notes:
                if note.kind == "comment":
                    replies = f"{base}/pulls/{number}/comments/{note.id}/replies"
                    api.call("POST", replies, what=what, json={"body": body})
            reviewers = sorted({n.author for n in notes if n.kind == "review"})
            if reviewers:
                about = f"The reviews by {', '.join(reviewers)}: {text}"
                api.call(
                    "POST",
                    f"{base}/issues/{number}/comments",
                    what=what,
                    json={"body": f"{about}\n\n{REPLY_MARKER}"},
                )

    # -- internals -------------------------------------------------------------------

    def _open_pull(
        self, api: _GitHubAPI, repository: RemoteRepository, branch: str, what: str
    ) -> tuple[str, int]:
        """The repository's API path and the number of ``branch``'s open pull request."""
        base = f"/repos/{self.owner}/{repository.name}"
        found = self._pull_requests(api, f"{base}/pulls", branch, "open", what, looks=3)
        if not found:
            raise InvalidRequest(
                f"{self.owner}/{repository.name} has no open pull request from {branch}, so "
                "there is no review feedback to read: publish the request in pull-request "
                "mode (APPGEN_PUBLISH_MODE=pull-request), or revise it with --prompt"
            )
        return base, int(found[0]["number"])

    def _pull_requests(
        self, api: _GitHubAPI, pulls: str, branch: str, state: str, what: str, looks: int = 1
    ) -> list[dict[str, Any]]:
        """The pull requests from ``branch`` into main, newest first; ``looks`` tries
        while the list is empty (GitHub's lists lag behind its writes)."""
        query = {"head": f"{self.owner}:{branch}", "base": "main", "state": state}
        for look in range(1, looks + 1):
            found: list[dict[str, Any]] = api.call(
                "GET", pulls, what=what, params=query | {"per_page": 100}
            )
            if found or look == looks:
                return found
            time.sleep(api.retry_delay(look))
        return []

    def _create(
        self, api: _GitHubAPI, name: str, marker: str, owner_type: str
    ) -> dict[str, Any] | None:
        """Create the repository; None when the name turned out to be taken."""
        path = f"/orgs/{self.owner}/repos" if owner_type == "Organization" else "/user/repos"
        body = {
            "name": name,
            "private": self.private,
            "auto_init": False,
            "description": f"Generated by appgen {marker}",
        }
        what = f"create the repository {self.owner}/{name}"
        response = api.send("POST", path, what=what, json=body)
        if response.status_code == 422:
            # "name already exists on this account": taken, possibly by our own earlier
            # attempt (a create retried after its response was lost) that the caller is
            # about to recognise by its marker. Right after a create, GitHub's reads may
            # still say 404: look again for a while before calling it someone else's.
            return api.repository(self.owner, name, looks=3)
        repository: dict[str, Any] = api.check(response, what)
        _log().info("created %s (id %s)", repository["html_url"], repository["id"])
        return repository

    def _api(self) -> _GitHubAPI:
        return _GitHubAPI(
            self.api_url, self._current_token(), self.max_rate_limit_wait_seconds, RETRY_POLICY
        )

    def _current_token(self) -> str:
        if self.token is not None:
            token = self.token.get_secret_value()
            register_secret(token)
            return token
        with self._token_lock:
            cached = self._installation_token
            if cached is None or cached[1] - time.time() < _TOKEN_REFRESH_MARGIN_SECONDS:
                cached = self._mint_installation_token()
                self._installation_token = cached
            return cached[0]

    def _mint_installation_token(self) -> tuple[str, float]:
        assert self.app_private_key is not None
        now = int(time.time())
        app_jwt = jwt.encode(
            {"iat": now - 60, "exp": now + _JWT_LIFETIME_SECONDS, "iss": str(self.app_id)},
            self.app_private_key.get_secret_value(),
            algorithm="RS256",
        )
        register_secret(app_jwt)
        with _GitHubAPI(
            self.api_url, app_jwt, self.max_rate_limit_wait_seconds, RETRY_POLICY
        ) as api:
            granted = api.call(
                "POST",
                f"/app/installations/{self.installation_id}/access_tokens",
                what="get an installation token for the GitHub App",
            )
        register_secret(granted["token"])
        expires = datetime.fromisoformat(granted["expires_at"].replace("Z", "+00:00"))
        return granted["token"], expires.timestamp()


class _GitHubAPI:
    """A REST client that waits out rate limits (within a budget), retries GitHub's
    transient failures (``RetryPolicy``) and turns every other failure into a
    PublishError that says what to fix. Only for calls that are safe to repeat."""

    def __init__(self, base_url: str, token: str, max_wait: float, retry: RetryPolicy) -> None:
        self._base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self._base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": _API_VERSION,
                "User-Agent": "appgen-orchestrator",
            },
            timeout=_TIMEOUT,
        )
        self._max_wait = max_wait
        self._waited = 0.0
        self._retry = retry

    def __enter__(self) -> _GitHubAPI:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._client.close()

    def send(
        self, method: str, path: str, *, what: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """The response to one call, after waiting out rate limits and retrying 5xx
        answers, connection errors and timeouts; any other answer is returned as is."""
        failures, first_failure = 0, 0.0
        response: httpx.Response | None
        cause: httpx.TransportError | None
        while True:
            try:
                response = self._client.request(method, path, **kwargs)
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                raise PublishError(redact(f"GitHub API {method} {path} failed: {exc}")) from exc
            except httpx.TransportError as exc:  # connection refused or reset, timeouts …
                response, cause = None, exc
            else:
                delay = _rate_limit_delay(response)
                if delay is not None:
                    self._wait_for_rate_limit(method, path, delay)
                    continue
                if response.status_code not in _RETRIED_STATUSES:
                    return response
                cause = None
            failures += 1
            first_failure = first_failure or time.monotonic()
            elapsed, delay = time.monotonic() - first_failure, self._retry.delay(failures)
            if failures >= self._retry.attempts or elapsed + delay > self._retry.budget:
                error = self._gave_up(method, path, what, response, cause, failures, elapsed)
                raise error from cause
            failure = (
                f"answered {response.status_code}"
                if response is not None
                else f"failed ({cause!r})"
            )
            _log().warning(
                "GitHub API %s %s %s: retrying in %.1fs (attempt %d of %d)",
                method,
                path,
                redact(failure),
                delay,
                failures + 1,
                self._retry.attempts,
            )
            time.sleep(delay)

    def _wait_for_rate_limit(self, method: str, path: str, delay: float) -> None:
        if self._waited + delay > self._max_wait:
            raise PublishError(
                f"GitHub rate limit on {method} {path}: it would take {delay:.0f}s more "
                f"than the {self._max_wait:.0f}s allowed; run the publish again later"
            )
        _log().warning("GitHub rate limit on %s %s: waiting %.1fs", method, path, delay)
        time.sleep(delay)
        self._waited += delay

    def _gave_up(
        self,
        method: str,
        path: str,
        what: str | None,
        response: httpx.Response | None,
        cause: httpx.TransportError | None,
        attempts: int,
        elapsed: float,
    ) -> PublishError:
        tried = f"tried {attempts} times" + (
            f" (retried {attempts - 1} times over {elapsed:.1f}s)" if attempts > 1 else ""
        )
        if response is not None:
            failure = (
                f"GitHub API {method} {path} answered {response.status_code} "
                f"{_error_message(response)}; {tried}. GitHub seems to be having trouble: "
                "check its status page, then run the publish again"
            )
        else:
            failure = (
                f"cannot reach the GitHub API at {self._base_url}: {method} {path} failed "
                f"with {type(cause).__name__}: {cause or 'no detail'}; {tried}. Check "
                "APPGEN_GITHUB_API_URL and the network, then run the publish again"
            )
        return PublishError(redact(f"could not {what}: {failure}" if what else failure))

    def call(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        """The answer's JSON: an object, or a list for a listing."""
        return self.check(self.send(method, path, what=what, **kwargs), what)

    def retry_delay(self, retry: int) -> float:
        return self._retry.delay(retry)

    def repository(self, owner: str, name: str, *, looks: int = 1) -> dict[str, Any] | None:
        """The repository, or None if it still reads as 404 after ``looks`` tries."""
        what = f"look up {owner}/{name}"
        for look in range(1, looks + 1):
            response = self.send("GET", f"/repos/{owner}/{name}", what=what)
            if response.status_code != 404:
                found: dict[str, Any] = self.check(response, what)
                return found
            if look < looks:
                time.sleep(self._retry.delay(look))
        return None

    @staticmethod
    def check(response: httpx.Response, what: str) -> Any:
        if response.is_success:
            return response.json()
        message = _error_message(response)
        if response.status_code == 401:
            hint = "check APPGEN_GITHUB_TOKEN (or the GitHub App's id, key and installation)"
        elif response.status_code == 403:
            needs = response.headers.get("x-accepted-oauth-scopes") or response.headers.get(
                "x-accepted-github-permissions"
            )
            has = response.headers.get("x-oauth-scopes")
            hint = (
                f"the token lacks the permission: this needs {needs!r}"
                f"{f' and the token has {has!r}' if has is not None else ''}"
                if needs
                else "the token or App may lack access to the owner"
            )
        else:
            hint = "see GitHub's status page or the message above"
        raise PublishError(
            redact(f"GitHub refused to {what} ({response.status_code} {message}): {hint}")
        )


def _all_pages(api: _GitHubAPI, path: str, what: str) -> list[dict[str, Any]]:
    """Every item of a listing, page by page (oldest first, as GitHub lists them)."""
    items: list[dict[str, Any]] = []
    for page in range(1, 1000):
        found = api.call("GET", path, what=what, params={"per_page": _PAGE_SIZE, "page": page})
        items += found
        if len(found) < _PAGE_SIZE:
            break
    return items


def _pull_request(pull: dict[str, Any], action: str) -> PullRequest:
    return PullRequest(number=pull["number"], url=pull["html_url"], action=action)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.reason_phrase


def _rate_limit_delay(response: httpx.Response) -> float | None:
    """Seconds GitHub asks us to wait, or None if this is not a rate limit."""
    if response.status_code not in (403, 429):
        return None
    retry_after = response.headers.get("retry-after")
    if retry_after is not None and retry_after.isdigit():
        return float(retry_after)
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(0.0, int(reset) - time.time()) + 1.0
    return None


def _log() -> RunLogger:
    """The run's logger inside a flow or task run, this module's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("appgen.github")
