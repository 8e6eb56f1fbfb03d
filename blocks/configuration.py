"""Which blocks a run uses.

Each part of a run (generator, Git host, artifact store, database) is the saved
block a flow parameter names (``"block-type-slug/name"``); else the saved
``appgen-<type>/default`` of the kind the settings choose (``APPGEN_GENERATOR``,
``APPGEN_GIT_HOST``); else the block the settings describe. So a block edited in
the Prefect UI is what the next run uses, and a worker with saved blocks needs no
credential in its environment. Every secret of a chosen block is registered for
redaction as soon as it is chosen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prefect.blocks.core import Block
from pydantic import BaseModel, SecretStr, ValidationError

from blocks import defaults
from blocks.artifact_stores import ArtifactStore, VolumeArtifactStore
from blocks.database import Database
from blocks.generators import GeneratorBlock
from blocks.git_hosts import GitHost
from core.errors import InvalidRequest
from core.models import ConfiguredPart
from core.redaction import register_secret
from core.secret_scan import KnownSecret, url_password
from core.settings import Settings

DEFAULT_BLOCK_NAME = "default"
B = TypeVar("B", bound=Block)


@dataclass(frozen=True)
class RunBlocks:
    """The blocks one run uses, and where each came from."""

    generator: GeneratorBlock
    git_host: GitHost
    artifact_store: ArtifactStore
    database: Database
    parts: tuple[ConfiguredPart, ...]

    def chosen(self) -> Iterator[tuple[ConfiguredPart, Block]]:
        blocks = (self.generator, self.git_host, self.artifact_store, self.database)
        yield from zip(self.parts, blocks, strict=True)

    def describe(self) -> str:
        """One line per part: what it is and where it came from."""
        return "\n".join(
            f"  {part.part}: {part.kind} from the {part.source}" for part in self.parts
        )

    def known_secrets(self) -> list[KnownSecret]:
        """Every secret these blocks hold, named by where it is configured."""
        return [secret for part, block in self.chosen() for secret in _known_secrets(part, block)]


def run_blocks(
    settings: Settings,
    *,
    generator: str | None = None,
    git_host: str | None = None,
    artifact_store: str | None = None,
    database: str | None = None,
) -> RunBlocks:
    """The blocks a run with these parameters uses (each a saved block's name or None)."""
    s3_store = functools.cache(lambda: _s3_store(settings, artifact_store))

    def generator_from_settings() -> GeneratorBlock:
        # Its store may be a saved block of its own; an incomplete ECS part is named
        # before the store's variables.
        if settings.generator == "ecs" and settings.ecs:
            return defaults.ecs_generator(settings, artifacts=s3_store()[0])  # type: ignore[arg-type]
        return defaults.generator(settings)

    generator_block, generator_part = _choose(
        "generator",
        generator,
        GeneratorBlock,  # type: ignore[type-abstract]  # its saved subclasses load through it
        defaults.generator_kind(settings),
        generator_from_settings,
    )
    store, store_part = _artifact_store(generator_block, generator_part, artifact_store, s3_store)
    if (
        store is not generator_block.artifact_store()
        and "artifacts" in type(generator_block).model_fields
    ):
        generator_block = generator_block.model_copy(update={"artifacts": store})
    host, host_part = _choose(
        "git_host",
        git_host,
        GitHost,  # type: ignore[type-abstract]  # its saved subclasses load through it
        defaults.git_host_kind(settings),
        lambda: defaults.git_host(settings),
    )
    database_block, database_part = choose_database(settings, database)
    return RunBlocks(
        generator=generator_block,
        git_host=host,
        artifact_store=store,
        database=database_block,
        parts=(generator_part, host_part, store_part, database_part),
    )


def choose_database(settings: Settings, name: str | None = None) -> tuple[Database, ConfiguredPart]:
    """The database a run with ``database=name`` records its request in."""
    return _choose("database", name, Database, Database, lambda: defaults.database(settings))


def _artifact_store(
    generator: GeneratorBlock,
    generator_part: ConfiguredPart,
    name: str | None,
    s3_store: Callable[[], tuple[ArtifactStore, ConfiguredPart]],
) -> tuple[ArtifactStore, ConfiguredPart]:
    """An ECS generator's S3 store (its ``artifacts``) may be a block of its own; the
    other generators leave the app in their workspace, which implies the store."""
    if "artifacts" not in type(generator).model_fields:
        if name:
            raise InvalidRequest(
                f"artifact_store={name!r}: the {type(generator).__name__} leaves the app in "
                "its workspace; an artifact store is chosen only for the ECS generator"
            )
        return generator.artifact_store(), ConfiguredPart(
            part="artifact_store",
            kind=VolumeArtifactStore.__name__,
            block=generator_part.block,
            env_prefix=generator_part.env_prefix,
        )
    if name is None and generator_part.block:
        # A saved ECS generator brings its own store (a reference to a saved one).
        store = generator.artifact_store()
        return store, ConfiguredPart(
            part="artifact_store", kind=type(store).__name__, block=generator_part.block
        )
    return s3_store()


def _s3_store(settings: Settings, name: str | None) -> tuple[ArtifactStore, ConfiguredPart]:
    """The S3 store named, else the saved default, else the settings' (APPGEN_S3_*)."""
    from blocks.s3_artifact_store import S3ArtifactStore  # boto3, for the runs that use S3

    return _choose(
        "artifact_store",
        name,
        S3ArtifactStore,
        S3ArtifactStore,
        lambda: defaults.s3_artifact_store(settings),
    )


def _choose(
    part: str,
    name: str | None,
    kind: type[B],
    default_kind: type[B],
    from_settings: Callable[[], B],
) -> tuple[B, ConfiguredPart]:
    if name:
        block = _load(part, name, kind)
        chosen = ConfiguredPart(part=part, kind=type(block).__name__, block=name)
    else:
        default_name = f"{default_kind.get_block_type_slug()}/{DEFAULT_BLOCK_NAME}"
        saved = read_saved_block(default_name)
        if saved is not None:
            block = saved  # type: ignore[assignment]
            chosen = ConfiguredPart(part=part, kind=type(block).__name__, block=default_name)
        else:
            block = from_settings()
            chosen = ConfiguredPart(
                part=part,
                kind=type(block).__name__,
                env_prefix=defaults.env_prefix(block.get_block_type_slug()),
            )
    for secret in _known_secrets(chosen, block):
        register_secret(secret.value)
    return block, chosen


def _load(part: str, name: str, kind: type[B]) -> B:
    slug, _, document = name.partition("/")
    if not slug or not document:
        raise InvalidRequest(
            f"{part}={name!r}: name a saved block as 'block-type-slug/name', for example "
            f"'appgen-local-git-host/{DEFAULT_BLOCK_NAME}' (`prefect block ls` lists them)"
        )
    block = read_saved_block(name)
    if block is None:
        raise InvalidRequest(f"{part}: no saved block {name!r} (`prefect block ls` lists them)")
    if not isinstance(block, kind):
        raise InvalidRequest(
            f"{part}: the saved block {name!r} is a {type(block).__name__}, not a {kind.__name__}"
        )
    return block


def block_fields(block: Block, mode: str = "python") -> dict[str, Any]:
    """A block's own fields, without what Prefect adds to a loaded block's dump
    (its document id and name, its type slug)."""
    dumped = block.model_dump(mode=mode, exclude={"block_type_slug"})
    return {name: value for name, value in dumped.items() if not name.startswith("_")}


def read_saved_block(name: str) -> Block | None:
    """The saved block ``name``, or None when there is none."""
    defaults.block_type(name.partition("/")[0])  # its class must be known to load it
    try:
        return cast(Block, Block.load(name))  # Prefect's sync form: no event loop runs here
    except ValidationError as exc:
        if exc.title not in {name for _, name, _ in defaults.BLOCK_TYPES.values()}:
            raise  # not the block's data: Prefect's own settings, say
        problem = exc.errors()[0]
        raise InvalidRequest(
            f"the saved block {name!r} does not fit its type ({'.'.join(map(str, problem['loc']))}"
            f": {problem['msg']}); fix it in the Prefect UI or save it again with "
            "`appgen setup --overwrite`"
        ) from None
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise InvalidRequest(f"cannot load the saved block {name!r}: {exc}") from None


def _known_secrets(part: ConfiguredPart, block: BaseModel) -> list[KnownSecret]:
    """The secret fields' values; of a URL (the database's), only its password."""
    secrets = []
    for field, value in secret_fields(block):
        if "://" in value:
            value = url_password(value) or ""
        secrets.append(KnownSecret(part.field_label(field), value))
    return [secret for secret in secrets if secret.needles()]


def secret_fields(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted field name, value)`` of every set secret field of ``model``, nested
    models included (a generator's credentials, say)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            if value.get_secret_value():
                yield f"{prefix}{name}", value.get_secret_value()
        elif isinstance(value, BaseModel):
            yield from secret_fields(value, f"{prefix}{name}.")
