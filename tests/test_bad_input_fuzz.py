"""Hypothesis drives the CLI with generated bad manifests, dotenv files, params, ids and
store damage: it answers with an exit code and a one-line message, never a traceback, and
never hangs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from oneoff.testing import CliResult, invoke, make_app

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]

[tasks.hello]
argv = ["python", "-c", "print('hi')", "{name}", "{count}"]
timeout = "10m"
locks = ["database"]
params.name = { type = "string", default = "world" }
params.count = { type = "int", min = 1, max = 9, default = "1" }
"""
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HANG_SECONDS = 10


class Hung(Exception):
    """The CLI did not answer within HANG_SECONDS."""


def _hung(signum: int, frame: FrameType | None) -> None:
    raise Hung(f"the command did not finish within {HANG_SECONDS}s")


@contextlib.contextmanager
def fresh_app(manifest: str = MANIFEST, dotenv: bytes = b"GREETING=hi\n") -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = make_app(Path(tmp) / "app", manifest)
        (root / ".env").write_bytes(dotenv)
        yield root


def cli(root: Path, *args: str) -> CliResult:
    """``oneoff --app ROOT ARGS`` in this process, failing the example if it hangs."""
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        return invoke(["--app", str(root), *args])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_clean(result: CliResult, allowed: set[int]) -> None:
    """Exit code in ``allowed``; a refusal is one error line (plus a hint), no traceback."""
    assert result.exit_code in allowed, result.output
    assert "Traceback" not in result.output
    assert "no oneoff.toml found" not in result.stderr  # the app itself was found
    if result.exit_code == 0:
        return
    lines = result.stderr.splitlines()
    assert lines, "a refusal without a message"
    if lines[0].startswith("usage: "):  # argparse's own usage error: usage, then one line
        assert ": error: " in lines[-1], lines
        return
    assert lines[0].startswith("oneoff: error: "), lines
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), lines


@contextlib.contextmanager
def text_logs() -> Iterator[None]:
    saved = os.environ.get("ONEOFF_LOG_FORMAT")
    os.environ["ONEOFF_LOG_FORMAT"] = "text"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ONEOFF_LOG_FORMAT"]
        else:
            os.environ["ONEOFF_LOG_FORMAT"] = saved


# --- generated TOML values -----------------------------------------------------------

_NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
)
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
# Keys a value may carry: never `command` or `argv`, so nothing generated gets executed.
_KEYS = st.sampled_from(["dotenv", "optional", "inherit", "type", "min", "max", "x", "name"])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)  # fmt: skip
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"


_VALUES = st.recursive(
    st.one_of(st.booleans(), _NUMBERS, _TEXT, st.just("")),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)
# Every setting of the base manifest a generated value may replace, as its TOML line.
_SETTINGS = [
    "config", "protected", "allow_os_user", "secrets", "description", "unsafe_allow_env",
    "approvals", "argv", "timeout", "grace", "locks", "risk", "interactive", "cwd",
    "environments", "params.name", "params.count", "params.count.min", "params.name.pattern",
    "params.name.type", "params.name.default",
]  # fmt: skip


def _with_setting(key: str, value: str) -> str:
    env_keys = {"config", "protected", "allow_os_user", "secrets", "unsafe_allow_env"}
    lines = [ln for ln in MANIFEST.splitlines() if not ln.startswith(f"{key} =")]
    table = "[environments.development]" if key in env_keys else "[tasks.hello]"
    lines.insert(lines.index(table) + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def test_the_unfuzzed_app_works() -> None:
    """The base every generator varies is valid, so a refusal below comes from the input."""
    with text_logs(), fresh_app() as root:
        for args in (["tasks"], ["plan", "hello"], ["env"], ["run", "hello"], ["runs"]):
            assert cli(root, *args).exit_code == 0, args


@FUZZ
@given(key=st.sampled_from(_SETTINGS), value=_VALUES)
def test_a_manifest_setting_with_any_value_is_accepted_or_refused_cleanly(
    key: str, value: Any
) -> None:
    """Whatever value a manifest setting holds, loading and planning give exit 0 or 2."""
    with text_logs(), fresh_app(_with_setting(key, _toml_value(value))) as root:
        for args in (["tasks"], ["plan", "hello"]):
            assert_clean(cli(root, *args), {0, 2})


@FUZZ
@given(at=st.integers(min_value=0, max_value=len(MANIFEST)), junk=st.binary(max_size=12))
def test_a_manifest_with_stray_bytes_is_accepted_or_refused_cleanly(at: int, junk: bytes) -> None:
    """Bytes (not UTF-8, NUL, brackets...) inserted anywhere in oneoff.toml give exit 0 or 2."""
    with text_logs(), fresh_app() as root:
        data = MANIFEST.encode()
        (root / "oneoff.toml").write_bytes(data[:at] + junk + data[at:])
        assert_clean(cli(root, "tasks"), {0, 2})


@FUZZ
@given(depth=st.integers(min_value=30, max_value=3000), kind=st.sampled_from("[{"))
def test_deep_nesting_is_refused(depth: int, kind: str) -> None:
    """Arrays or inline tables nested past the limit are refused with exit 2."""
    opening, closing = ("[", "]") if kind == "[" else ("{ a = ", "}")
    nested = opening * depth + "1" + closing * depth
    with text_logs(), fresh_app(MANIFEST + f"\n[app]\npath = {nested}\n") as root:
        result = cli(root, "tasks")
        assert_clean(result, {2})


_FILE_KINDS = st.sampled_from(["bytes", "fifo", "directory", "loop", "dangling", "outside"])


@FUZZ
@given(kind=_FILE_KINDS, content=st.binary(max_size=200))
def test_any_dotenv_file_is_read_or_refused_cleanly(kind: str, content: bytes) -> None:
    """A dotenv file of any bytes, or a FIFO, directory or symlink in its place, gives
    exit 0 or 2 at once."""
    with text_logs(), fresh_app(dotenv=content) as root:
        env = root / ".env"
        if kind != "bytes":
            env.unlink()
        if kind == "fifo":
            os.mkfifo(env)
        elif kind == "directory":
            env.mkdir()
        elif kind == "loop":
            os.symlink(".env", env)
        elif kind == "dangling":
            os.symlink("missing", env)
        elif kind == "outside":
            os.symlink("/etc/hostname", env)
        assert_clean(cli(root, "env"), {0, 2} if kind == "bytes" else {2})


def _argv_text() -> st.SearchStrategy[str]:
    """Text as argv may carry it: any character, and undecodable bytes as surrogates."""
    return st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
        st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")),
    ).filter(lambda s: "\x00" not in s)  # no OS can pass a NUL in argv


@FUZZ
@given(name=_argv_text(), value=_argv_text(), param=st.sampled_from(["name", "count", "x"]))
def test_any_param_is_accepted_or_refused_cleanly(name: str, value: str, param: str) -> None:
    """`plan -p NAME=VALUE` with any name and value gives exit 0 or 2."""
    with text_logs(), fresh_app() as root:
        assert_clean(cli(root, "plan", "hello", f"--param={param}={value}"), {0, 2})
        assert_clean(cli(root, "plan", "hello", f"--param={name}"), {0, 2})


@FUZZ
@given(ident=_argv_text(), number=st.integers(min_value=-(2**70), max_value=2**70))
def test_any_run_id_filter_or_count_is_answered_cleanly(ident: str, number: int) -> None:
    """Run ids, filters and counts of any shape give exit 0 (a filter matching nothing) or 2;
    a run id that names no run is always 2."""
    with text_logs(), fresh_app() as root:
        assert_clean(cli(root, "show", "--", ident), {2})
        assert_clean(cli(root, "logs", "--", ident), {2})
        for args in (
            [f"--task={ident}"], [f"--env={ident}"], [f"--status={ident}"],
            [f"--limit={number}"],
        ):  # fmt: skip
            assert_clean(cli(root, "runs", *args), {0, 2})
        assert_clean(cli(root, "audit", "export", f"--run={ident}"), {0, 2})
        assert_clean(cli(root, "audit", "export", f"--since={number}"), {0, 2})
        assert_clean(cli(root, "audit", "prove", str(number)), {0, 2, 8})


_TABLES = {
    "locks": ["expires_at", "runner_pid", "runner_host", "acquired_at", "run_id"],
    "runs": ["status", "runner_pid", "started_at", "exit_code", "params", "runner_host"],
}
_CELLS = st.one_of(
    st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
    st.text(max_size=12), st.binary(max_size=12),
)  # fmt: skip


@FUZZ
@given(
    table=st.sampled_from(sorted(_TABLES)),
    column=st.integers(min_value=0, max_value=4),
    cell=_CELLS,
)
def test_a_damaged_store_row_is_answered_cleanly(table: str, column: int, cell: object) -> None:
    """A lock or run row holding garbage gives exit 0, 2 or 7 (damaged store), not a crash."""
    with text_logs(), fresh_app() as root:
        assert cli(root, "run", "hello").exit_code == 0
        name = _TABLES[table][column]
        db = sqlite3.connect(root / ".oneoff" / "state.db")
        with db:
            if table == "locks":
                db.execute(
                    "INSERT INTO locks (name, run_id, holder, runner_host, runner_pid, "
                    "acquired_at, expires_at) VALUES ('database', 'r1', 'os:x', 'elsewhere', "
                    "1, '2026-01-01T00:00:00Z', '2999-01-01T00:00:00Z')"
                )
            try:
                db.execute(f"UPDATE {table} SET {name} = ?", (cell,))
                stored = True
            except sqlite3.IntegrityError:  # damage SQLite itself refuses to store
                stored = False
        db.close()
        if not stored:
            reject()
        for args in (["runs"], ["locks"], ["run", "hello", "--wait=0"]):
            assert_clean(cli(root, *args), {0, 2, 5, 7})
