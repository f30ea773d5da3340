"""What oneoff knows of an environment's secrets without running anything.

Text people type (a denial reason, a server's copy of a runner's output) can hold a secret
pasted by mistake. The redactor here covers the secret keys of the environment's dotenv
sources in this checkout: no config command is run and nothing of this process's own
environment is read, so it is cheap and has no side effects, and it knows fewer secrets
than a run's own redactor (which sees every source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from oneoff.errors import OneoffError

if TYPE_CHECKING:
    from oneoff._app import App
    from oneoff._manifest import Environment
    from oneoff._redact import Redactor

__all__ = ["known_secrets"]


def known_secrets(app: App, environment: Environment) -> Redactor:
    """A redactor over ``environment``'s secrets found in its dotenv sources."""
    from oneoff._environ import Materialized, is_secret_key, read_source
    from oneoff._redact import MIN_SAFE_LENGTH, Redactor

    values: dict[str, str] = {}
    for source in environment.sources:
        if source.kind == "dotenv":
            try:
                values.update(read_source(app.project, source, {}))
            except OneoffError:
                continue  # not in this checkout: the runner's redaction counts
    known = Materialized(
        values=values, origin=dict.fromkeys(values, "dotenv"),
        secret_keys=frozenset(k for k in values if is_secret_key(environment, k)),
        plain_keys=frozenset(k for k in environment.not_secret if k in values),
    )  # fmt: skip
    return Redactor(known.secret_values(), min_length=MIN_SAFE_LENGTH, skip_short=True)
