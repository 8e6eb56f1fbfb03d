"""The project's errors. Foreign errors (subprocess, git, SQLAlchemy, OS) are mapped
to one of these at the boundary, with a message that says what went wrong and what
to do about it.

    AppgenError
    ├── InvalidRequest       bad input from the caller: empty prompt, unsafe app name
    ├── GeneratorFailed      the generator exited non-zero, timed out or could not start
    ├── ArtifactError        the generator's output is missing, unreadable or hostile
    ├── PublishError         the Git host refused the repository or the push
    │   ├── SecretsFound     the secret scan found secrets in the app (nothing was pushed)
    │   └── PushProtectionRejected  the Git host's push protection (GitHub GH013) refused
    ├── DatabaseError        the request could not be read or recorded
    ├── SetupError           an image, block or work pool could not be set up
    └── PrefectApiError      the Prefect API is unreachable or refused a call, or the
                             local server appgen manages could not be started or stopped

An ``AppgenError`` is an *expected* failure: the CLI prints its message without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.redaction import redact

if TYPE_CHECKING:
    from core.models import SecretFinding


class AppgenError(Exception):
    """Base of every expected failure; its message is meant for a person."""


class InvalidRequest(AppgenError, ValueError):
    """Raised before anything is created, when the caller's input cannot be used."""


class GeneratorFailed(AppgenError):
    """Raised when the generator ran but did not produce an app."""


class CrashedTooOften(AppgenError):
    """Raised when a resubmitted run has crashed more often than it may be resubmitted."""


class ArtifactError(AppgenError):
    """Raised when the generator's output cannot be fetched or staged safely."""


class PublishError(AppgenError):
    """Raised when the repository cannot be created or the push is refused."""


class SecretsFound(PublishError):
    """Raised before anything is created or pushed when the staged app holds secrets
    (APPGEN_SECRET_SCAN=block). ``findings`` say where and by which rule, never what."""

    def __init__(self, message: str, findings: list[SecretFinding] | None = None) -> None:
        super().__init__(message, findings or [])
        self.findings = findings or []

    def __str__(self) -> str:
        return str(self.args[0])


class PushProtectionRejected(PublishError):
    """Raised when the Git host's own push protection (GitHub's GH013 rule violation)
    refused the push because it found secrets; ``paths`` are the ones it named."""

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message, paths or [])
        self.paths = paths or []

    def __str__(self) -> str:
        return str(self.args[0])


class DatabaseError(AppgenError):
    """Raised when the request's row cannot be read or written."""


class SetupError(AppgenError):
    """Raised when setting up infrastructure (an image, a block, a pool) fails."""


class PrefectApiError(AppgenError):
    """Raised when there is no Prefect API to run on: the configured one cannot be
    reached or answers with an error, or the managed local server cannot be started,
    stopped or judged."""


def describe(exc: BaseException) -> str:
    """The text recorded for a failure: an expected one's own message; for anything
    else, its type too, since that is a bug worth reporting. Secrets are masked."""
    text = str(exc) if isinstance(exc, AppgenError) else f"unexpected {type(exc).__name__}: {exc}"
    return redact(text)
