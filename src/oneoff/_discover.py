"""What `oneoff init` learns from an existing app: Django, Flask, its virtualenv.

Read-only and import-free: the app's code is parsed (``ast``), never imported or run, so
``init`` in an unknown checkout executes nothing of it.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from oneoff._params import NAME_RE
from oneoff._record import dataclass

__all__ = ["DjangoApp", "FlaskApp", "find_django", "find_flask", "find_python"]

_SKIP_DIRS = {"node_modules", "site-packages", "__pycache__", "build", "dist"}
_MAX_DEPTH = 5
_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DjangoApp:
    """A Django project: its settings and WSGI modules and its own management commands."""

    settings: str | None
    wsgi: str | None
    commands: tuple[str, ...]


@dataclass(frozen=True)
class FlaskApp:
    """A Flask app: the ``--app`` value and its CLI commands (argv after ``flask --app X``)."""

    app: str
    factory: bool
    commands: Mapping[str, tuple[str, ...]]
    migrate: bool  # Flask-Migrate is used: `flask db upgrade` exists


def _walk(root: Path) -> Iterator[Path]:
    """The app's own .py files: no hidden dirs, virtualenvs or vendored packages."""
    for directory, dirs, names in os.walk(root):
        here = Path(directory)
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and d not in _SKIP_DIRS and depth < _MAX_DEPTH
            and not (here / d / "pyvenv.cfg").exists()
        )  # fmt: skip
        yield from (here / n for n in sorted(names) if n.endswith(".py"))


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_BYTES:
            return ""
        return path.read_text("utf-8", errors="replace")
    except OSError:
        return ""


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def find_django(root: Path) -> DjangoApp | None:
    """The Django project at ``root`` (it has manage.py), or None."""
    manage = root / "manage.py"
    if not manage.is_file():
        return None
    match = re.search(r"DJANGO_SETTINGS_MODULE['\"]\s*,\s*['\"]([\w.]+)['\"]", _read(manage))
    settings = match.group(1) if match else None
    wsgi = None
    settings_file = _module_file(root, settings) if settings else None
    if settings_file is not None:
        found = re.search(
            r"^WSGI_APPLICATION\s*=\s*['\"]([\w.]+)\.\w+['\"]", _read(settings_file), re.M
        )
        wsgi = found.group(1) if found else None
    if wsgi is None and settings and _module_file(root, settings.rpartition(".")[0] + ".wsgi"):
        wsgi = settings.rpartition(".")[0] + ".wsgi"
    commands = sorted(
        {
            path.stem
            for path in _walk(root)
            if path.parent.name == "commands"
            and path.parent.parent.name == "management"
            and not path.stem.startswith("_")
        }
    )
    return DjangoApp(settings=settings, wsgi=wsgi, commands=tuple(commands))


def find_flask(root: Path) -> FlaskApp | None:
    """The Flask app under ``root``: a ``create_app`` factory (in a package or a module) or
    a module-level ``app = Flask(...)``, with its ``@app.cli.command``/``@click.command``
    commands; None if there is no Flask app."""
    target: tuple[str, bool] | None = None
    commands: dict[str, tuple[str, ...]] = {}
    registered: set[str] = set()
    click_commands: dict[str, tuple[str, ...]] = {}
    migrate = False
    for path in _walk(root):
        text = _read(path)
        if "flask" not in text.lower() and "click" not in text:
            continue
        try:
            tree = ast.parse(text, str(path))
        except (SyntaxError, ValueError):
            continue
        module = _module_name(root, path)
        migrate = migrate or "flask_migrate" in text
        blueprints = _blueprints(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "create_app":
                if node.col_offset == 0 and (target is None or not target[1]):
                    target = (f"{module}:create_app", True)
            elif isinstance(node, ast.Assign) and _calls(node.value, "Flask"):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
                if names and target is None and node.col_offset == 0:
                    target = (f"{module}:{names[0]}", False)
            elif isinstance(node, ast.Call) and _attr_name(node.func) == "add_command":
                registered.update(a.id for a in node.args if isinstance(a, ast.Name))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for decorator in node.decorator_list:
                    _command(node, decorator, blueprints, commands, click_commands)
    if target is None:
        return None
    for function, path_ in click_commands.items():
        if function in registered:
            commands[path_[-1]] = path_
    return FlaskApp(app=target[0], factory=target[1], commands=commands, migrate=migrate)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] == "src" and len(parts) > 1:
        parts.pop(0)
    return ".".join(parts)


def _attr_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _calls(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Call) and _attr_name(node.func) == name


def _blueprints(tree: ast.Module) -> dict[str, str]:
    """Variables bound to ``Blueprint("name", ...)``: their commands live under that group."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            call = node.value
            if _attr_name(call.func) != "Blueprint" or not call.args:
                continue
            group = _const_str(call.args[0])
            for keyword in call.keywords:
                if keyword.arg == "cli_group":
                    group = _const_str(keyword.value)
            for target in node.targets:
                if isinstance(target, ast.Name) and group:
                    found[target.id] = group
    return found


def _const_str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _command(
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    decorator: ast.expr,
    blueprints: Mapping[str, str],
    commands: dict[str, tuple[str, ...]],
    click_commands: dict[str, tuple[str, ...]],
) -> None:
    call = decorator if isinstance(decorator, ast.Call) else None
    func = call.func if call else decorator
    if not isinstance(func, ast.Attribute) or func.attr != "command":
        return
    name = _click_name(function.name)
    if call is not None:
        if call.args and _const_str(call.args[0]):
            name = str(_const_str(call.args[0]))
        for keyword in call.keywords:
            if keyword.arg == "name" and _const_str(keyword.value):
                name = str(_const_str(keyword.value))
    owner = func.value
    # @app.cli.command / @bp.cli.command: registered by being declared.
    if isinstance(owner, ast.Attribute) and owner.attr == "cli":
        base = owner.value
        group = blueprints.get(base.id) if isinstance(base, ast.Name) else None
        commands[f"{group}-{name}" if group else name] = (group, name) if group else (name,)
    # @click.command: a command only once some app.cli.add_command(fn) registers it.
    elif isinstance(owner, ast.Name) and owner.id == "click":
        click_commands[function.name] = (name,)


def _click_name(function: str) -> str:
    # Click 8.2+: lower case, suffixes _command/_cmd/_group/_grp dropped, _ becomes -.
    name = function.lower()
    for suffix in ("_command", "_cmd", "_group", "_grp"):
        if name.endswith(suffix) and name != suffix:
            name = name[: -len(suffix)]
            break
    return name.replace("_", "-")


def task_name(name: str) -> str | None:
    """``name`` as a task name, or None if it cannot be one."""
    candidate = name.lower().replace(".", "-")
    return candidate if NAME_RE.match(candidate) else None


def find_python(root: Path, environ: Mapping[str, str]) -> str | None:
    """The app's own interpreter, as ``[app] python`` would say it, or None.

    In order: a virtualenv in the app (``.venv``, ``venv``: uv's, Poetry's in-project and
    pipenv's PIPENV_VENV_IN_PROJECT convention), the one active when ``init`` runs
    (``VIRTUAL_ENV``) unless it is oneoff's own, then Poetry's and pipenv's per-user
    caches when exactly one matches the app.
    """
    for name in (".venv", "venv"):
        if (root / name / "pyvenv.cfg").is_file() and (root / name / "bin" / "python").exists():
            return f"{name}/bin/python"
    active = environ.get("VIRTUAL_ENV")
    # oneoff's own virtualenv (pipx style) is not the app's: it lacks the app's packages.
    if (
        active
        and (Path(active) / "bin" / "python").exists()
        and Path(active).resolve() != Path(sys.prefix).resolve()
    ):
        return _relative_or_absolute(root, Path(active) / "bin" / "python")
    home = Path(environ.get("HOME", "~")).expanduser()
    caches = []
    if (root / "poetry.lock").is_file():
        project = re.sub(r"[^a-z0-9]+", "-", root.name.lower())
        caches.append(home / ".cache" / "pypoetry" / "virtualenvs" / f"{project}-")
    if (root / "Pipfile").is_file():
        caches.append(home / ".local" / "share" / "virtualenvs" / f"{root.name}-")
    for prefix in caches:
        found = sorted(prefix.parent.glob(prefix.name + "*/bin/python"))
        if len(found) == 1:
            return str(found[0])
    return None


def _relative_or_absolute(root: Path, python: Path) -> str:
    try:
        return python.absolute().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(python.absolute())
