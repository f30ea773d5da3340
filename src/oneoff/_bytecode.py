"""Tasks execute the release's source, never bytecode planted beside it.

Python prefers ``__pycache__/*.pyc`` over the source it was compiled from whenever the
pyc's recorded source mtime and size match. ``__pycache__`` is not part of a release
(``release verify`` ignores it, rightly: it is written at run time and depends on the
interpreter), so anyone who can write there (a group-writable checkout, a git-ignored
directory on a shared bastion) could run code inside a "verified" production run.

The defence: every process oneoff starts for an app (``run``, ``exec``, runs through the
daemon, consoles) gets ``PYTHONPYCACHEPREFIX`` pointing at a directory of the OS user's
own, outside the app: ``$XDG_STATE_HOME/oneoff/pycache/<app>``, mode 0700 and checked to
be ours alone (see ``oneoff._userkey``). Python, and every Python process the task
starts, then reads and writes bytecode only there and ignores every ``__pycache__`` in
the tree. Only our own runs write there, compiling the source they were verified against.

Why not the alternatives: ``-B``/``PYTHONDONTWRITEBYTECODE`` only stops *writing*, planted
bytecode is still *read*; verifying ``__pycache__`` would mean hashing interpreter-specific
output on every run; a fresh prefix per run is as safe but recompiles the whole app and
its dependencies on every start (seconds for a large framework). When no private
directory can be had, a fresh private temporary one is used per process: slower, not
weaker.

One cache per verified release, and one for everything unverified: Python trusts a cached
pyc whose recorded source mtime and size match, so a development run (no release) or a
drift-allowed one, compiling a modified file that kept the released file's size and had
its mtime set back, would otherwise leave bytecode that a later *verified* run of the
restored file executes. A release's cache is written only by runs verified against it
with no drift. (A file swapped between the check and the import still wins that one run,
and its bytecode stays in that release's cache: whoever can write the tree while a run
starts is beyond what a release check can stop.) The newest ``KEEP_RELEASES`` release
caches of an app are kept, by last use; an older one is removed when a run needs a new one.

A *sourceless* ``name.pyc`` (outside ``__pycache__``), imported when no ``name.py``
exists, is refused by the release check instead (``oneoff._release.strays``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["bytecode_env"]


#: Release caches kept per app (the newest by use), besides the unverified one: a rollback
#: to a recent release finds its bytecode; older ones are removed when a new one is made.
KEEP_RELEASES = 3


def _prefix(app_root: Path, release: str | None) -> str:
    from oneoff._userkey import private_dir

    app_tag = hashlib.sha256(os.fsencode(os.path.realpath(app_root))).hexdigest()[:24]
    tag = "unverified" if release is None else hashlib.sha256(release.encode()).hexdigest()[:24]
    directory = private_dir("pycache", app_tag, tag)
    if directory is not None:
        if release is not None:
            _prune(directory)
        return str(directory)
    import tempfile

    return tempfile.mkdtemp(prefix="oneoff-pycache-")  # mode 0700, new: nothing planted


def _prune(current: Path) -> None:
    """Keep the newest ``KEEP_RELEASES`` release caches of this app (by last use)."""
    import contextlib
    import shutil

    with contextlib.suppress(OSError):
        os.utime(current)  # this use counts as the newest
        siblings = [p for p in current.parent.iterdir() if p.name not in ("unverified",)]
        if len(siblings) <= KEEP_RELEASES:
            return
        siblings.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in siblings[KEEP_RELEASES:]:
            if stale != current:
                shutil.rmtree(stale, ignore_errors=True)


def bytecode_env(app_root: Path, release: str | None = None) -> dict[str, str]:
    """What to add to a task's environment so it runs no bytecode from the app's tree.

    ``release``: the release this run's tree was verified against with no drift, or None
    (no release, or drift allowed). Each gets a cache of its own: see the module docstring.
    """
    return {"PYTHONPYCACHEPREFIX": _prefix(app_root, release)}
