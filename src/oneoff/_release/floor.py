"""Revoking old releases: a signed, monotonic minimum version per environment.

A release may carry ``min_version`` in its signed document: every release of its
environment below it is revoked. The floor of an environment is the highest
``min_version`` among its stored releases whose signature verifies there, so

- it is signed: only a holder of a trusted release key can raise it, and editing a
  row's ``min_version`` changes the release's id, so that row no longer verifies;
- it never goes down through oneoff: a new release carries the floor forward, and
  ``--min-version`` below it is refused;
- old releases cannot undercut it: ``run --release v1``, a rollback to v1, or a store
  whose current pointer was moved back to v1 are all refused (exit 6, audited) while a
  verifying release with a higher floor is stored.

What it cannot do on its own: someone who can write ``.oneoff/`` can delete the newer
rows and the floor with them (docs/access.md, "Threat model"); a separate server that
keeps releases out of the operator's reach holds that line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import ReleaseError, UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._manifest import Environment
    from oneoff._release.document import Release

__all__ = ["Floor", "check_floor", "environment_floor", "next_floor"]


@dataclass(frozen=True)
class Floor:
    """The lowest version ``environment`` may use, and the release that set it (if any)."""

    version: int = 1
    set_by: Release | None = None


def environment_floor(app: App, environment: Environment) -> Floor:
    """The highest signed minimum among the environment's releases that verify here."""
    from oneoff._release.check import check_signature, from_record

    floor = Floor()
    for record in app.store.list_releases(environment.name):
        try:
            release = from_record(app, record)
            if release.min_version <= floor.version:
                continue
            check_signature(app, release, environment)
        except ReleaseError:
            continue  # a row that does not verify sets nothing (and is refused if used)
        floor = Floor(release.min_version, release)
    return floor


def check_floor(app: App, release: Release, environment: Environment) -> None:
    """Refuse ``release`` if a verifying release of its environment revoked it."""
    floor = environment_floor(app, environment)
    if release.version < floor.version and floor.set_by is not None:
        by = floor.set_by
        raise ReleaseError(
            f"release {release.label} is revoked: {by.label}, signed by key {by.key_id}, "
            f"allows only v{floor.version} and later in {environment.name!r}",
            hint="use the current release, or create a new one",
        )


def next_floor(app: App, environment: Environment, version: int, wanted: int | None) -> int:
    """The ``min_version`` a new release ``version`` carries: at least the current floor."""
    current = environment_floor(app, environment).version
    if wanted is None:
        return current
    if not 1 <= wanted <= version:
        raise UsageError(f"--min-version must be between 1 and the new version v{version}")
    if wanted < current:
        raise UsageError(
            f"--min-version {wanted} would lower {environment.name!r}'s floor (v{current}); "
            "a floor never goes down"
        )
    return wanted
