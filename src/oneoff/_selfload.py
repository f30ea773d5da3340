"""Finds app code that loads a ``.env`` file by itself, behind the planned environment's back.

oneoff gives a task exactly its environment's config. A settings module calling
django-environ's ``read_env()``, python-dotenv's ``load_dotenv()``, or importing
python-decouple (which reads ``.env`` on first use) adds whatever ``.env`` holds on the
machine where the task runs: a production run can pick up development values that
``oneoff plan`` never showed. oneoff cannot switch those libraries off (Flask's own loading
it does switch off, with ``FLASK_SKIP_DOTENV``), so ``plan`` warns, and a run verified
against a release refuses unless that ``.env`` is one of the release's own files
(``oneoff._release.check``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from oneoff._manifest import Environment, Project
from oneoff._record import dataclass

__all__ = ["SelfLoad", "find_self_loading"]

_LOADERS = (
    (re.compile(r"\bread_env\s*\("), "django-environ read_env()"),
    (re.compile(r"\bload_dotenv\s*\("), "python-dotenv load_dotenv()"),
    (re.compile(r"^\s*(?:from\s+decouple\s+import|import\s+decouple)\b", re.M), "python-decouple"),
)
_SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", "tests", "test", "migrations"}
_MAX_DEPTH = 3  # settings modules live at most a package or two below the root
_MAX_FILES = 2000
_MAX_BYTES = 512 * 1024


@dataclass(frozen=True)
class SelfLoad:
    """One place in the app's code that loads a dotenv file itself."""

    path: str  # relative to the app root
    line: int
    loader: str

    def warning(self, env: Environment) -> str:
        return (
            f"{self.path}:{self.line} loads .env by itself ({self.loader}): a run in "
            f"{env.name!r} also gets whatever .env holds where it runs, which this plan "
            "does not show"
        )


def find_self_loading(project: Project, env: Environment) -> list[SelfLoad]:
    """Places that load ``.env`` themselves, when a ``.env`` exists that ``env`` does not
    declare as a config source (if it does, the plan shows those values)."""
    declared = {(project.root / s.path).resolve() for s in env.sources if s.kind == "dotenv"}
    dotenv = (project.root / ".env").resolve()
    if not dotenv.is_file() or dotenv in declared:
        return []
    found: list[SelfLoad] = []
    for path in _python_files(project.root):
        try:
            if path.stat().st_size > _MAX_BYTES:
                continue
            text = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        for pattern, loader in _LOADERS:
            match = pattern.search(text)
            if match:
                line = text.count("\n", 0, match.start()) + 1
                found.append(SelfLoad(path.relative_to(project.root).as_posix(), line, loader))
                break
    return found


def _python_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for directory, dirs, names in os.walk(root):
        here = Path(directory)
        depth = len(here.relative_to(root).parts)
        # Hidden dirs (.git, .venv), virtualenvs and vendored packages are not the app's code.
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d not in _SKIP_DIRS
            and depth < _MAX_DEPTH and not (here / d / "pyvenv.cfg").exists()
        )  # fmt: skip
        files.extend(here / n for n in sorted(names) if n.endswith(".py"))
        if len(files) >= _MAX_FILES:
            break
    return files[:_MAX_FILES]
