"""Release snapshots: the code tree, the installed dependencies and keyed config digests."""

from oneoff._release.configdigest import ConfigSnapshot, config_digest, diff_config
from oneoff._release.deps import DepsSnapshot, Distribution, diff_deps, snapshot_deps
from oneoff._release.tree import (
    DEFAULT_IGNORE,
    Change,
    Entry,
    StatCache,
    TreeSnapshot,
    describe,
    diff,
    ensure_unchanged,
    snapshot,
    verify,
)

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
