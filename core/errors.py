"""The project's errors. Foreign errors (subprocess, git, SQLAlchemy, OS) are mapped
to one of these at the boundary, with a message that says what went wrong and what
to do about it.

    AppgenError
    ├── InvalidRequest       bad input from the caller: empty prompt, unsafe app name
    ├── GeneratorFailed      the generator exited non-zero, timed out or could not start
    ├── ArtifactError        the generator's output is missing, unreadable or hostile
    ├── PublishError         the Git host refused the repository or the push
    ├── DatabaseError        the request could not be read or recorded
    └── SetupError           an image, block or work pool could not be set up

An ``AppgenError`` is an *expected* failure: the CLI prints its message without a
traceback; anything else is a bug and keeps its traceback.
"""

from core.redaction import redact


class AppgenError(Exception):
    """Base of every expected failure; its message is meant for a person."""


class InvalidRequest(AppgenError, ValueError):
    """Raised before anything is created, when the caller's input cannot be used."""


class GeneratorFailed(AppgenError):
    """Raised when the generator ran but did not produce an app."""


class ArtifactError(AppgenError):
    """Raised when the generator's output cannot be fetched or staged safely."""


class PublishError(AppgenError):
    """Raised when the repository cannot be created or the push is refused."""


class DatabaseError(AppgenError):
    """Raised when the request's row cannot be read or written."""


class SetupError(AppgenError):
    """Raised when setting up infrastructure (an image, a block, a pool) fails."""


def describe(exc: BaseException) -> str:
    """The text recorded for a failure: an expected one's own message; for anything
    else, its type too, since that is a bug worth reporting. Secrets are masked."""
    text = str(exc) if isinstance(exc, AppgenError) else f"unexpected {type(exc).__name__}: {exc}"
    return redact(text)
