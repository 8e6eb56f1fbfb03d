"""Failures of the Prefect API, said in one line: what went wrong, where, and what
to do, without the API's credentials and without a traceback.

Prefect's client leaves these to its caller as httpx errors (sometimes raised from
inside its own, as its version check does). Every command that talks to the API
maps them here, and only errors of requests to the configured API count: a Git
host's or S3's errors stay theirs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.errors import PrefectApiError

if TYPE_CHECKING:
    import httpx

# How many ``raise … from`` links to follow to the httpx error.
_CAUSE_DEPTH = 4


@contextlib.contextmanager
def prefect_api_errors() -> Iterator[None]:
    """Raise a Prefect API failure inside the block as a ``PrefectApiError`` that
    names the API and says what to do."""
    try:
        yield
    except Exception as exc:
        if (problem := prefect_api_problem(exc)) is None:
            raise
        raise PrefectApiError(problem) from None


def prefect_api_problem(exc: BaseException) -> str | None:
    """What went wrong with the Prefect API, if that is what ``exc`` (or an error it
    was raised from) says; else None."""
    if "httpx" not in sys.modules:  # Prefect's client was never used
        return None
    import httpx

    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None or isinstance(cause, httpx.TransportError | httpx.HTTPStatusError):
            break
        cause = cause.__cause__
    if not isinstance(cause, httpx.TransportError | httpx.HTTPStatusError):
        return None
    from prefect.settings import get_current_settings

    try:
        request = cause.request
    except RuntimeError:  # an error raised without its request
        return None
    api = httpx.URL(get_current_settings().api.url or "")
    if not _under(request.url, api):
        return None  # another service's (a Git host's, say)
    shown = api.copy_with(userinfo=b"", query=None, fragment=None)
    if isinstance(cause, httpx.TransportError):
        what = f"cannot be reached ({str(cause) or type(cause).__name__})"
    else:
        response = cause.response
        what = (
            f"answered {response.status_code} {response.reason_phrase} to {request.method} "
            f"{request.url.path.removeprefix(api.path.rstrip('/'))}"
        )
        if response.status_code in (401, 403):
            return (
                f"the Prefect API at {shown} {what}: check PREFECT_API_KEY (or "
                "PREFECT_API_AUTH_STRING) for it"
            )
        if response.status_code not in (502, 503, 504):
            return f"the Prefect API at {shown} {what}{_detail(response)}"
    return (
        f"the Prefect API at {shown} {what}; start that server, or point PREFECT_API_URL "
        "(or the active Prefect profile) at one that runs; without either, appgen "
        "runs its own local server"
    )


def _under(url: httpx.URL, api: httpx.URL) -> bool:
    base = api.path.rstrip("/") + "/"
    return (url.scheme, url.host, url.port) == (api.scheme, api.host, api.port) and (
        url.path + "/"
    ).startswith(base)


def _detail(response: httpx.Response) -> str:
    """Prefect's own account of an error answer, shortened."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return ""
    return f": {str(detail)[:300]}" if detail else ""
