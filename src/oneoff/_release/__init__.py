"""Release snapshots: the code tree, the installed dependencies and keyed config digests.

Names are loaded on first use (PEP 562): the manifest loader imports
``oneoff._release.settings`` on every CLI call and must not pay for hashing machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DEFAULT_IGNORE",
    "Change",
    "ConfigSnapshot",
    "DepsSnapshot",
    "Distribution",
    "Entry",
    "StatCache",
    "TreeSnapshot",
    "config_digest",
    "describe",
    "diff",
    "diff_config",
    "diff_deps",
    "ensure_unchanged",
    "snapshot",
    "snapshot_deps",
    "verify",
]

_HOME = {
    "ConfigSnapshot": "configdigest",
    "config_digest": "configdigest",
    "diff_config": "configdigest",
    "DepsSnapshot": "deps",
    "Distribution": "deps",
    "diff_deps": "deps",
    "snapshot_deps": "deps",
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"oneoff._release.{_HOME.get(name, 'tree')}")
    return getattr(module, name)
