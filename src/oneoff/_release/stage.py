"""The pipeline's release stage, with a fast path: nothing to verify costs one store query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import UsageError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._environ import Materialized
    from oneoff._manifest import Environment
    from oneoff._release.document import Release

__all__ = ["Checked", "verify_stage"]


@dataclass(frozen=True)
class Checked:
    """The outcome of the verify stage: the release used (if any) and any allowed drift."""

    release: Release | None
    drift: tuple[str, ...] = ()
    allow_drift: bool = False

    @property
    def release_id(self) -> str | None:
        return None if self.release is None else self.release.id


def verify_stage(
    app: App, environment: Environment, ref: str | None, env: Materialized, allow_drift: bool
) -> Checked:
    """``oneoff._release.check.verify_for_run``, without loading it when there is no release.

    Hashing, signature and dependency code costs tens of milliseconds to import; an
    unprotected environment without a release (a laptop) must not pay for it on every run.
    """
    if allow_drift and environment.protected:
        raise UsageError(
            f"--allow-drift is not allowed on protected environment {environment.name!r}"
        )
    if ref is None and not environment.protected:
        from oneoff._release.settings import env_settings

        no_release = app.store.current_release_id(environment.name) is None
        if no_release and not env_settings(app.project, environment).require_signed:
            return Checked(None, (), allow_drift)
    from oneoff._release.check import verify_for_run

    return verify_for_run(app, environment, ref, env, allow_drift)
