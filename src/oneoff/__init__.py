"""oneoff: run a twelve-factor app's one-off admin processes securely.

The library API (what the CLI and a future server call)::

    from oneoff import open_app, RunRequest, run_task, make_plan

Names are imported on first use so that ``import oneoff`` stays cheap on the CLI's path.
"""

from __future__ import annotations

from oneoff._version import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs milliseconds on the CLI's path
if TYPE_CHECKING:
    from typing import Any

    from oneoff._app import App, open_app
    from oneoff._manifest import Project, load_project
    from oneoff._pipeline import RunOutcome, RunRequest, make_plan, run_task
    from oneoff._plan import Plan

__all__ = [
    "App",
    "Plan",
    "Project",
    "RunOutcome",
    "RunRequest",
    "__version__",
    "load_project",
    "make_plan",
    "open_app",
    "run_task",
]

_LAZY = {
    "App": "oneoff._app",
    "open_app": "oneoff._app",
    "Project": "oneoff._manifest",
    "load_project": "oneoff._manifest",
    "Plan": "oneoff._plan",
    "RunOutcome": "oneoff._pipeline",
    "RunRequest": "oneoff._pipeline",
    "make_plan": "oneoff._pipeline",
    "run_task": "oneoff._pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'oneoff' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
