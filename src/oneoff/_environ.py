"""Builds a process's environment from its environment's config sources, and nothing else."""

from __future__ import annotations

import fnmatch
import functools
import os
import pwd
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from oneoff._dotenv import parse_dotenv, read_dotenv_file
from oneoff._manifest import ConfigSource, Environment, Project, is_env_name
from oneoff._record import dataclass
from oneoff.errors import ConfigError

if TYPE_CHECKING:
    from oneoff._redact import Redactor

__all__ = ["DANGEROUS_VARS", "Materialized", "materialize"]

# Terminal niceties copied from the operator's session; none changes what code runs.
TERMINAL_VARS = ("TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "COLUMNS", "LINES", "NO_COLOR")
TERMINAL_PREFIXES = ("LC_",)

# Variables that make a process load code from elsewhere. They may not come from the
# operator, a param or an inherited source, and from app config only when the
# environment names them in unsafe_allow_env.
DANGEROUS_VARS = frozenset({
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "LD_DEBUG", "LD_PROFILE",
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONHOME", "PYTHONUSERBASE",
    "PYTHONEXECUTABLE", "PYTHONBREAKPOINT", "PYTHONWARNINGS", "PYTHONPLATLIBDIR",
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "CDPATH",
    "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "GCONV_PATH", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "MALLOC_CHECK_",
    "GIT_EXEC_PATH", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_PROXY_COMMAND", "GIT_ASKPASS",
    "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "SSH_ASKPASS", "EDITOR_OPTIONS",
    "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "GLIBC_TUNABLES", "LOCPATH",
    "NLSPATH", "ZDOTDIR", "LESSOPEN", "LESSCLOSE", "PERL5DB", "LUA_INIT", "LUA_PATH",
    "LUA_CPATH", "PHPRC", "PHP_INI_SCAN_DIR", "R_PROFILE", "R_PROFILE_USER", "TCLLIBPATH",
    "NODE_REPL_EXTERNAL_MODULE", "PYTHONPYCACHEPREFIX",
})  # fmt: skip
# GIT_CONFIG*: GIT_CONFIG_COUNT/KEY_n/VALUE_n and GIT_CONFIG_PARAMETERS set any git option,
# core.fsmonitor or core.sshCommand included (a command git runs); LUA_INIT_5_4 and kin.
DANGEROUS_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "GIT_CONFIG", "LUA_INIT_", "LUA_PATH_",
                      "LUA_CPATH_")  # fmt: skip
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"

# Set for every process unless its config sets them (config wins). FLASK_SKIP_DOTENV: the
# `flask` command and app.run() otherwise load .env/.flaskenv by themselves when
# python-dotenv is installed, so a run would see values its plan never showed.
# PYTHONUNBUFFERED: a task's stdout is a pipe, where Python buffers; without it output is
# late on the terminal and lost when a timed-out task is killed.
PROCESS_DEFAULTS = (("FLASK_SKIP_DOTENV", "1"), ("PYTHONUNBUFFERED", "1"))


def is_dangerous(name: str) -> bool:
    return name in DANGEROUS_VARS or name.startswith(DANGEROUS_PREFIXES)


@dataclass(frozen=True)
class Materialized:
    """A process environment, where each value came from, and which keys are secret."""

    values: Mapping[str, str]
    origin: Mapping[str, str]
    secret_keys: frozenset[str]
    # ``not_secret`` names: their values are not searched for embedded passwords either.
    plain_keys: frozenset[str] = frozenset()

    def secret_values(self) -> dict[str, str]:
        """Every secret that must never be shown: secret keys' values, embedded passwords.

        Passwords inside other values (URLs, DSNs, see ``oneoff._embedded``) are named
        ``KEY:password``, ``KEY:password2``... as written and percent-decoded.
        """
        from oneoff._embedded import embedded_passwords

        secrets = {k: v for k, v in self.values.items() if k in self.secret_keys and v}
        for key, value in self.values.items():
            if key in self.secret_keys or key in self.plain_keys:
                continue
            for i, password in enumerate(embedded_passwords(value)):
                secrets[f"{key}:password{i + 1 if i else ''}"] = password
        return secrets

    def masked(self, redactor: Redactor | None = None) -> dict[str, str]:
        """The values as they may be shown: secrets replaced, embedded passwords blanked,
        any secret's value inside another value redacted (by ``redactor``, if given)."""
        if redactor is None:
            from oneoff._redact import MIN_SAFE_LENGTH, Redactor

            # Short secrets are refused when a task runs; a display of config must not fail.
            redactor = Redactor(self.secret_values(), min_length=MIN_SAFE_LENGTH, skip_short=True)
        shown = {}
        for key, value in self.values.items():
            if key in self.secret_keys:
                shown[key] = "********"
            else:
                shown[key] = redactor.redact_text(mask_url(value))
        return shown


def url_password(value: str) -> str | None:
    """The (first, percent-decoded) password inside a ``scheme://user:password@host`` value."""
    from oneoff._embedded import password_spans

    for start, end, kind in password_spans(value):
        if kind == "url":
            return unquote(value[start:end])
    return None


def mask_url(value: str) -> str:
    """``value`` with every embedded password (URL userinfo, ``password=``) as ``****``."""
    from oneoff._embedded import password_spans

    spans = password_spans(value)
    if not spans:
        return value
    out, pos = [], 0
    for start, end, _ in spans:
        if start < pos:
            continue
        out += [value[pos:start], "****"]
        pos = end
    return "".join([*out, value[pos:]])


def is_secret_key(env: Environment, key: str) -> bool:
    if key in env.secrets:
        return True
    if key in env.not_secret:  # exempt from the name patterns, by the app's explicit word
        return False
    return secret_key_matcher(env.secret_patterns)(key) is not None


@functools.cache
def secret_key_matcher(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One compiled regex for all of an environment's secret-name patterns (fnmatch syntax,
    any case: ``db_password`` is as secret as ``DB_PASSWORD``): one match per key instead of
    one fnmatch per pattern."""
    import re

    if not patterns:
        return lambda key: None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), re.IGNORECASE).match


def default_path(project: Project) -> str:
    """PATH for tasks: the app's own bin dirs, its interpreter's dir, then the system's."""
    dirs = [str((project.root / p).resolve()) for p in project.path]
    python = app_python(project)
    dirs.append(str(Path(python).parent))
    dirs.append(SYSTEM_PATH)
    return ":".join(dict.fromkeys(dirs))


def app_python(project: Project) -> str:
    if project.python:
        return str((project.root / project.python).absolute())
    return sys.executable


def materialize(
    project: Project,
    env: Environment,
    *,
    run_vars: Mapping[str, str],
    operator_env: Mapping[str, str] | None = None,
) -> Materialized:
    """The complete environment of a one-off or long-running process of ``env``.

    Built from (in order, later wins): a fixed base (PATH, HOME of the OS user,
    ``PROCESS_DEFAULTS``, the terminal allow-list), the environment's config sources, and
    ``run_vars`` (only ``ONEOFF_*``). Nothing else of ``operator_env`` gets in.
    """
    shell = os.environ if operator_env is None else operator_env
    values: dict[str, str] = {}
    origin: dict[str, str] = {}

    def put(key: str, value: str, where: str) -> None:
        values[key] = value
        origin[key] = where

    put("PATH", default_path(project), "oneoff default")
    put("HOME", pwd.getpwuid(os.getuid()).pw_dir, "OS user")
    for key, value in PROCESS_DEFAULTS:
        put(key, value, "oneoff default")
    for key, value in shell.items():
        if key in TERMINAL_VARS or key.startswith(TERMINAL_PREFIXES):
            put(key, value, "terminal")
    for source in env.sources:
        for key, value in read_source(project, source, shell).items():
            where = source.describe()
            if not is_env_name(key):
                raise ConfigError(f"{where}: {key!r} is not a valid variable name")
            if key.startswith("ONEOFF_"):
                raise ConfigError(f"{where}: sets {key}; ONEOFF_* variables are reserved")
            if is_dangerous(key) and (source.kind == "inherit" or key not in env.unsafe_allow_env):
                raise ConfigError(
                    f"{where}: sets {key}, which makes the process load code from elsewhere",
                    hint=f"if the app really needs it, list it in [environments.{env.name}] "
                    "unsafe_allow_env (dotenv and command sources only)",
                )
            put(key, value, where)
    for key, value in run_vars.items():
        if not key.startswith("ONEOFF_"):
            raise ValueError(f"run variable {key} must start with ONEOFF_")
        put(key, value, "oneoff run")
    secret_keys = frozenset(k for k in values if is_secret_key(env, k))
    plain_keys = frozenset(k for k in env.not_secret if k in values)
    return Materialized(
        values=values, origin=origin, secret_keys=secret_keys, plain_keys=plain_keys
    )


def read_source(project: Project, source: ConfigSource, shell: Mapping[str, str]) -> dict[str, str]:
    """The variables one config source provides."""
    if source.kind == "dotenv":
        try:
            path = (project.root / source.path).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL
            raise ConfigError(f"dotenv {source.path}: cannot resolve the path") from None
        if project.root.resolve() not in path.parents:
            raise ConfigError(f"dotenv {source.path}: must be inside the app")
        text = read_dotenv_file(str(path), source.path)
        if text is None:
            if source.optional:
                return {}
            raise ConfigError(f"dotenv {source.path}: file not found")
        return parse_dotenv(text, source.path)
    if source.kind == "inherit":
        picked = {}
        for key, value in shell.items():
            if any(fnmatch.fnmatchcase(key, name) for name in source.names):
                if not (key + value).isascii() and not _is_utf8(key + value):
                    raise ConfigError(f"inherited variable {key}: not valid UTF-8")
                picked[key] = value
        return picked
    return _run_command_source(project, source, shell)


def _is_utf8(text: str) -> bool:
    # Undecodable bytes from the OS arrive as lone surrogates; nothing downstream takes them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _run_command_source(
    project: Project, source: ConfigSource, shell: Mapping[str, str]
) -> dict[str, str]:
    # The secrets tool gets a minimal environment too: only what the app named for it.
    env = {"PATH": default_path(project), "HOME": pwd.getpwuid(os.getuid()).pw_dir}
    env.update({k: shell[k] for k in source.pass_env if k in shell})
    where = source.describe()
    import subprocess  # only secrets-manager sources need it; keep it off the common path

    try:
        done = subprocess.run(
            list(source.argv),
            cwd=project.root,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=source.timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"{where}: command not found") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: timed out after {source.timeout:g}s") from None
    values: dict[str, str] = {}
    try:
        if done.returncode != 0:
            raise ConfigError(f"{where}: exited with {done.returncode}")
        try:
            text = done.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: printed non-UTF-8 output") from None
        values = parse_dotenv(text, where)
        return values
    finally:
        # What it was handed (pass_env: the secrets tool's own credentials) is redacted too.
        passed = {f"pass_env:{k}": shell[k] for k in source.pass_env if k in shell}
        _show_stderr(done.stderr, {**passed, **values})


def _show_stderr(data: bytes, values: Mapping[str, str]) -> None:
    """The config command's own messages, shown once it is done, with every value it
    printed redacted: a secrets CLI's debug output (``aws --debug`` prints the response
    body) would otherwise put the secrets on the terminal."""
    if not data:
        return
    from oneoff._embedded import embedded_passwords
    from oneoff._redact import MIN_SAFE_LENGTH, Redactor

    secrets = {key: value for key, value in values.items() if value}
    for key, value in values.items():
        for i, password in enumerate(embedded_passwords(value)):
            secrets[f"{key}:password{i + 1 if i else ''}"] = password
    redactor = Redactor(secrets, min_length=MIN_SAFE_LENGTH, skip_short=True)
    text = redactor.redact_text(data.decode("utf-8", "replace"))
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
