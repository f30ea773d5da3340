"""Attacks on what oneoff reads: swapped files, forged caches, ignored flags, planted bytecode.

The attacker is an operator with their own key (alice, dave) who can also write the app's
``.oneoff/`` directory but not its code, as on a shared bastion. Each test plays one
attack of issue 10 (items 4, 5, 7, 9, 10) and asserts the refusal, the exit code and the
audit event; each succeeded before the fix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _access_kit import MANIFEST, NOTIFY, POLICIES, Keys, events, keygen, release, signers_text
from oneoff.testing import CliResult, invoke, make_app, run_cli

pytest_plugins = ["_access_kit"]

PERMIT_ALL = '@id("anything-goes")\npermit (principal, action, resource);\n'


def bound_app(
    root: Path,
    keys: Keys,
    *,
    git: bool = False,
    notify: str | None = None,
    files: dict[str, str] | None = None,
    extra: str = "",
) -> Path:
    """The access kit's app, but with people and policies part of every release.

    ``notify`` replaces the break-glass notifier table; ``files`` adds files.
    """
    release_key = keys["alice"].parent / "release.key"
    if not release_key.exists():
        from oneoff._audit.checkpoint import generate_keypair

        generate_keypair(release_key, release_key.with_suffix(".pub"))
    from oneoff._release.settings import public_key_line

    trusted = public_key_line(release_key.with_suffix(".pub"))
    manifest = MANIFEST.format(ttl="1h", trusted=trusted, notify=NOTIFY).replace(
        'ignore = ["policies/", "people/", "notified"]', 'ignore = ["notified"]'
    )
    if notify is not None:
        start = manifest.index("break_glass = {")
        end = manifest.index("\n", start)
        manifest = manifest[:start] + f"break_glass = {notify}" + manifest[end:]
    base = {
        ".env": "GREETING=hi\n",
        ".env.production": "DATABASE_URL=sqlite:///x\n",
        "job.py": "print('the released job, as verified')\n",
    }
    make_app(root, manifest + extra, {**base, **POLICIES, **(files or {})})
    (root / "people").mkdir()
    (root / "people" / "allowed_signers").write_text(signers_text(keys))
    if git:
        for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "app"]):
            subprocess.run(
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", *argv], cwd=root, check=True
            )
    release(root, "production", release_key)
    return root


def oneoff(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
    """``oneoff ARGS`` in this process, from the app's root."""
    monkeypatch.chdir(root)
    return invoke(list(args))


def last(root: Path, kind: str) -> Any:
    found = events(root, kind)
    assert found, f"no {kind} event"
    return found[-1]


# -- item 4: time of check / time of use on people and policies ---------------------------


def swap_after_check(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> None:
    """The attacker wins the race: ``path`` changes right after the release check ran."""
    from oneoff._release import check

    real = check.drift

    def drift_then_swap(*args: Any, **kwargs: Any) -> list[str]:
        lines = real(*args, **kwargs)
        path.write_text(text)
        return lines

    monkeypatch.setattr(check, "drift", drift_then_swap)


def test_policy_swapped_after_the_release_check_does_not_decide(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permit-all policy swapped in after the release check is not the one evaluated."""
    root = bound_app(tmp_path / "app", keys)
    swap_after_check(monkeypatch, root / "policies" / "base.cedar", PERMIT_ALL)
    done = oneoff(root, monkeypatch, "run", "noop", "--env", "production", "--key",
                  str(keys["dave"]))  # fmt: skip
    assert done.exit_code == 3, done.stderr
    assert "noop ran" not in done.stdout
    decided = last(root, "access.decided")
    assert (decided.actor, decided.payload["allowed"]) == ("dave", False)


def test_people_swapped_after_the_release_check_do_not_count(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving oneself into a permitted group after the release check changes nothing."""
    root = bound_app(tmp_path / "app", keys)
    promoted = signers_text(keys, {"alice": "developers", "dave": "developers"})
    swap_after_check(monkeypatch, root / "people" / "allowed_signers", promoted)
    done = oneoff(root, monkeypatch, "run", "noop", "--env", "production", "--key",
                  str(keys["dave"]))  # fmt: skip
    assert done.exit_code == 3, done.stderr
    decided = last(root, "access.decided")
    assert (decided.actor, decided.payload["allowed"]) == ("dave", False)


def test_untracked_policy_file_is_refused_in_git_mode(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untracked ``policies/*.cedar`` (invisible to git's listing) refuses the run."""
    root = bound_app(tmp_path / "app", keys, git=True)
    (root / "policies" / "zz-extra.cedar").write_text(PERMIT_ALL)
    done = oneoff(root, monkeypatch, "run", "noop", "--env", "production", "--key",
                  str(keys["dave"]))  # fmt: skip
    assert done.exit_code == 6, done.stderr
    assert "policies/zz-extra.cedar" in done.stderr
    assert "noop ran" not in done.stdout
    assert "policies/zz-extra.cedar" in last(root, "release.verify_failed").payload["error"]


# -- item 5: caches in .oneoff/ --------------------------------------------------------------


def read_cache(path: Path) -> tuple[bytes, Any]:
    """A JSON cache file as an attacker sees it: (any authentication line, the JSON)."""
    data = path.read_bytes()
    if data.startswith(b"{"):
        return b"", json.loads(data)
    mac, _, body = data.partition(b"\n")
    return mac + b"\n", json.loads(body)


def write_cache(path: Path, prefix: bytes, value: Any) -> None:
    path.write_bytes(prefix + json.dumps(value, separators=(",", ":")).encode())


def fingerprint(pub: Path) -> str:
    blob = base64.b64decode(pub.read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def test_forged_signers_cache_adds_no_approvers(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two invented dba members written into the signers cache cannot approve."""
    root = bound_app(tmp_path / "app", keys)
    made = oneoff(root, monkeypatch, "request", "migrate", "--env", "production", "--key",
                  str(keys["alice"]))  # fmt: skip
    assert made.exit_code == 0, made.stderr
    rid = made.stdout.strip()
    cache = root / ".oneoff" / "access-signers.json"
    prefix, value = read_cache(cache)
    (people,) = value["signers"].values()
    template = next(iter(people.values()))
    invented = [keygen(tmp_path, name) for name in ("eve1", "eve2")]
    for key in invented:
        pub = Path(f"{key}.pub")
        blob = pub.read_text().split()[1]
        people[blob] = {**template, "name": key.name, "groups": ["dba"],
                        "fingerprint": fingerprint(pub), "public_key": blob}  # fmt: skip
    write_cache(cache, prefix, value)
    approved = oneoff(root, monkeypatch, "approve", rid, "--yes", "--key", str(invented[0]))
    assert approved.exit_code == 3, approved.stderr
    refused = last(root, "approval.refused")
    assert refused.actor == "key:" + fingerprint(Path(f"{invented[0]}.pub"))
    assert not events(root, "approval.granted")


def test_forged_decision_cache_does_not_turn_deny_into_allow(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached deny flipped to allow in .oneoff/ is not believed."""
    root = bound_app(tmp_path / "app", keys)
    argv = ("run", "noop", "--env", "production", "--key", str(keys["dave"]))
    assert oneoff(root, monkeypatch, *argv).exit_code == 3
    cache = root / ".oneoff" / "access-decisions.json"
    prefix, value = read_cache(cache)
    assert value["decisions"]
    for decision in value["decisions"].values():
        decision.update(allowed=True, reasons=["anything-goes"], message="")
    write_cache(cache, prefix, value)
    done = oneoff(root, monkeypatch, *argv)
    assert done.exit_code == 3, done.stderr
    assert "noop ran" not in done.stdout
    decided = last(root, "access.decided")
    assert (decided.actor, decided.payload["allowed"]) == ("dave", False)


def forge_stat_cache(root: Path, rel: str) -> None:
    """Make .oneoff/statcache vouch for ``rel`` as it is now, under the old digest.

    The attacker uses the key they find in .oneoff/, or plants their own there.
    """
    from oneoff._release import statcache
    from oneoff._release.lstats import KEY, stat_key

    key_file = root / ".oneoff" / "statcache.key"
    if not key_file.exists():
        key_file.write_bytes(os.urandom(32))
    key = key_file.read_bytes()
    path = root / ".oneoff" / "statcache"
    data = bytearray(path.read_bytes())
    header = statcache._CACHE_HEADER
    count = header.unpack_from(data)[1]
    start = header.size
    blob = bytes(data[start + count * (KEY.size + 32) :])
    index = blob.split(b"\x00").index(rel.encode())
    at = start + index * KEY.size
    data[at : at + KEY.size] = stat_key(os.lstat(root / rel))
    mac = hmac.new(key, bytes(data[: start - 32]) + bytes(data[start:]), hashlib.sha256)
    data[start - 32 : start] = mac.digest()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("rel", "text"),
    [
        ("policies/base.cedar", PERMIT_ALL),  # a same-size permit-all policy
        ("job.py", "print('a planted job')"),  # any released file
    ],
)
def test_forged_stat_cache_hides_no_change(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch, rel: str, text: str
) -> None:
    """A stat cache re-keyed in .oneoff/ to vouch for a modified file is not believed."""
    root = bound_app(tmp_path / "app", keys)
    assert oneoff(root, monkeypatch, "release", "verify", "--env", "production").exit_code == 0
    path = root / rel
    size = path.stat().st_size
    text = (text + " " * size)[: size - 1] + "\n"  # same size: only the stat cache can tell
    path.write_text(text)
    forge_stat_cache(root, rel)
    done = oneoff(root, monkeypatch, "release", "verify", "--env", "production")
    assert done.exit_code == 6, done.stdout
    assert rel in done.stderr
    assert rel in last(root, "release.verify_failed").payload["error"]


def test_release_verify_no_cache_trusts_no_cache(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``release verify --no-cache`` hashes every file even when the stat cache vouches."""
    root = bound_app(tmp_path / "app", keys)
    assert oneoff(root, monkeypatch, "release", "verify", "--env", "production").exit_code == 0
    (root / "job.py").write_text("print('a planted job!')\n")
    forge_stat_cache(root, "job.py")
    done = oneoff(root, monkeypatch, "release", "verify", "--env", "production", "--no-cache")
    assert done.exit_code == 6, done.stderr
    assert "job.py" in last(root, "release.verify_failed").payload["error"]


# -- item 9: the app named is the app acted on ------------------------------------------------


APP_TOML = """
[environments.development]
[tasks.where]
argv = ["python", "-c", "import os; print('ran in', os.getcwd())"]
"""


def test_app_before_the_command_is_the_app_acted_on(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """``oneoff --app DIR run`` runs in DIR, not in the app of the working directory."""
    named = make_app(tmp_path / "named", APP_TOML)
    here = make_app(tmp_path / "here", APP_TOML)
    done = run_cli(["--app", str(named), "run", "where"], cwd=here, env=cli_env)
    assert done.exit_code == 0, done.stderr
    assert f"ran in {named}" in done.stdout
    assert [e.kind for e in events(named, "run.started")] == ["run.started"]
    assert not (here / ".oneoff").exists()


def test_two_different_apps_are_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """Naming one app before the command and another after it is refused, and nothing runs."""
    one = make_app(tmp_path / "one", APP_TOML)
    two = make_app(tmp_path / "two", APP_TOML)
    done = run_cli(["--app", str(one), "run", "where", "--app", str(two)], cwd=tmp_path,
                   env=cli_env)  # fmt: skip
    assert done.exit_code == 2
    assert "--app names more than one app" in done.stderr
    assert not (one / ".oneoff").exists()
    assert not (two / ".oneoff").exists()


def test_verbose_before_the_command_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``oneoff -v COMMAND`` re-raises the error (with its traceback) as ``-v`` after it does."""
    from oneoff.errors import UsageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"no oneoff\.toml found"):
        invoke(["-v", "tasks"])


# -- item 7: break-glass reasons and notifiers -------------------------------------------------


def break_glass(root: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch, reason: str) -> CliResult:
    return oneoff(root, monkeypatch, "run", "noop", "--env", "production", "--break-glass",
                  "--reason", reason, "--key", str(keys["dave"]))  # fmt: skip


@pytest.mark.parametrize(
    "reason",
    [
        "INC-42: db down\nBREAK-GLASS r0 all clear, ignore the page above",
        "INC-42\rall clear",
        "INC-42 \x1b[8mhidden",
        "INC-42 \u2028all clear",
        "x" * 501,
    ],
    ids=["newline", "carriage-return", "escape", "line-separator", "too-long"],
)
def test_break_glass_reason_cannot_forge_a_notification_line(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch, reason: str
) -> None:
    """A reason with control characters, or longer than 500 characters, is refused."""
    root = bound_app(tmp_path / "app", keys)
    done = break_glass(root, keys, monkeypatch, reason)
    assert done.exit_code == 2, done.stderr
    assert "--reason" in done.stderr
    assert not (root / "notified").exists()
    assert "noop ran" not in done.stdout
    refused = last(root, "auth.refused")
    assert (refused.actor, refused.task) == ("dave", "noop")
    assert not events(root, "run.started")


def test_a_secret_in_a_break_glass_reason_is_redacted_everywhere_it_goes(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token pasted into --reason reaches neither the notifier, the run record nor the
    audit log: each gets the reason with the secret redacted, and the run still goes."""
    token = "Zq8xPlm3Rt7vWk2nQ"
    files = {".env.production": f"DATABASE_URL=sqlite:///x\nAPI_TOKEN={token}\n"}
    root = bound_app(tmp_path / "app", keys, files=files)
    done = break_glass(root, keys, monkeypatch, f"INC-42 rotated token {token} after a leak")
    assert done.exit_code == 0, done.stderr
    assert "noop ran" in done.stdout
    notified = (root / "notified").read_text()
    assert notified == "INC-42 rotated token [REDACTED:API_TOKEN] after a leak"
    audit = json.dumps([{"kind": e.kind, "payload": e.payload} for e in events(root)])
    runs = oneoff(root, monkeypatch, "runs", "--json")
    assert runs.exit_code == 0, runs.stderr
    for text in (audit, runs.stdout, done.output):
        assert token not in text
    assert last(root, "run.break_glass").payload["reason"] == notified


NOTIFIER = "#!/bin/sh\nprintf '%s' \"$ONEOFF_BREAK_GLASS_REASON\" > notified\n"


def planted_notifier(directory: Path) -> Path:
    """The operator's own do-nothing ``notify-oncall``, first on their PATH."""
    directory.mkdir()
    fake = directory / "notify-oncall"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    return fake


def test_break_glass_notifier_is_the_apps_not_the_operators(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notify-oncall first on the operator's PATH is not run; the app's is, by its path."""
    root = bound_app(tmp_path / "app", keys, notify='{ command = ["notify-oncall"] }',
                     files={"bin/notify-oncall": NOTIFIER})  # fmt: skip
    manifest = root / "oneoff.toml"
    (root / "bin" / "notify-oncall").chmod(0o755)
    fake = planted_notifier(tmp_path / "evil")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    # The app puts its bin/ on the task PATH ([app] path): only there is notify-oncall.
    manifest.write_text('[app]\npath = ["bin"]\n' + manifest.read_text())
    from _access_kit import release as make_release

    make_release(root, "production", keys["alice"].parent / "release.key")
    done = break_glass(root, keys, monkeypatch, "INC-42: db down")
    assert done.exit_code == 0, done.stderr
    assert (root / "notified").read_text() == "INC-42: db down"
    notified = last(root, "break_glass.notified")
    assert notified.payload["target"] == str(root / "bin" / "notify-oncall")


def test_break_glass_notifier_only_on_the_operators_path_is_refused(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notifier the app's PATH cannot find refuses the run: unannounced, it does not run."""
    root = bound_app(tmp_path / "app", keys, notify='{ command = ["notify-oncall"] }')
    fake = planted_notifier(tmp_path / "evil")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    done = break_glass(root, keys, monkeypatch, "INC-42: db down")
    assert done.exit_code == 3, done.stderr
    assert "notification failed" in done.stderr
    assert "noop ran" not in done.stdout
    failed = last(root, "break_glass.notify_failed")
    assert "command not found: notify-oncall" in failed.payload["error"]
    assert not events(root, "run.started")


def test_break_glass_notifier_failure_refuses_the_run(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notifier that exits non-zero refuses the break-glass run, audited as a failure."""
    root = bound_app(tmp_path / "app", keys,
                     notify='{ command = ["python", "-c", "raise SystemExit(1)"] }')  # fmt: skip
    done = break_glass(root, keys, monkeypatch, "INC-42: db down")
    assert done.exit_code == 3, done.stderr
    assert "noop ran" not in done.stdout
    failed = last(root, "break_glass.notify_failed")
    assert (failed.actor, failed.task) == ("dave", "noop")
    assert not events(root, "run.started")
    assert not events(root, "break_glass.notified")


# -- item 10: bytecode that is not part of the release -----------------------------------------

JOB = """
[processes]
web = ["python", "-c", "import job"]

[tasks.job]
argv = ["python", "-c", "import job"]
"""


def plant_bytecode(root: Path, module: str) -> None:
    """Put a ``__pycache__`` pyc that Python takes for ``module``.py's compiled form.

    Compiled from other source of the same size and mtime, so its header matches the real
    file; ``__pycache__`` is git-ignored and not part of any release.
    """
    source = root / f"{module}.py"
    st = source.stat()
    evil = "print('PLANTED bytecode ran')"
    evil += " " * (st.st_size - len(evil) - 1) + "\n"
    fake = root.parent / "elsewhere" / f"{module}.py"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(evil)
    os.utime(fake, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert fake.stat().st_size == st.st_size
    cache = root / "__pycache__" / f"{module}.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(
        str(fake), cfile=str(cache), doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
    )  # fmt: skip


def test_planted_bytecode_does_not_run_in_a_verified_production_run(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted ``__pycache__/*.pyc`` is not what a verified production run executes."""
    root = bound_app(tmp_path / "app", keys, extra=JOB)
    plant_bytecode(root, "job")
    verified = oneoff(root, monkeypatch, "release", "verify", "--env", "production")
    assert verified.exit_code == 0, verified.stderr  # __pycache__ is not part of a release
    done = oneoff(root, monkeypatch, "run", "job", "--env", "production", "--key",
                  str(keys["alice"]))  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert "the released job" in done.stdout
    assert "PLANTED" not in done.stdout
    finished = last(root, "run.finished")
    assert (finished.task, finished.payload["exit_code"]) == ("job", 0)


def test_planted_bytecode_does_not_run_in_exec(
    tmp_path: Path, keys: Keys, cli_env: dict[str, str]
) -> None:
    """``oneoff exec`` (a long-running process type) does not execute planted bytecode."""
    root = bound_app(tmp_path / "app", keys, extra=JOB)
    plant_bytecode(root, "job")
    done = run_cli(["exec", "web", "--env", "production"], cwd=root, env=cli_env)
    assert done.exit_code == 0, done.stderr
    assert "the released job" in done.stdout
    assert "PLANTED" not in done.stdout
    assert last(root, "process.exec").payload["process"] == "web"


def test_planted_bytecode_does_not_run_through_the_daemon(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """A run served by the preloaded runner does not execute planted bytecode either."""
    root = make_app(
        tmp_path / "app",
        "[environments.development]\n" + JOB.split("[tasks.job]")[1].join(["[tasks.job]", ""]),
        {"job.py": "print('the released job, as verified')\n"},
    )
    plant_bytecode(root, "job")
    oneoff_bin = str(Path(sys.executable).parent / "oneoff")
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    env = {**cli_env, "ONEOFF_DAEMON_DIR": str(directory)}
    env.pop("ONEOFF_DAEMON", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([oneoff_bin, *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    started = cli("daemon", "start", "--idle", "120")
    assert started.returncode == 0, started.stderr
    try:
        done = cli("run", "job", "--env", "development")
        status = cli("daemon", "status")
    finally:
        cli("daemon", "stop")
    assert done.returncode == 0, done.stderr
    assert "1 runs served" in status.stdout
    assert "the released job" in done.stdout
    assert "PLANTED" not in done.stdout
    assert last(root, "run.finished").task == "job"
