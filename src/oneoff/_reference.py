"""Every table and key of oneoff.toml: the data docs/reference.md is generated from.

``python -m oneoff._reference > docs/reference.md`` writes the document;
tests/test_reference.py checks that the file is that output and that each table's keys
here are exactly the keys the loader accepts (read from its unknown-key error), so the
reference cannot drift from the code in either direction.
"""

from __future__ import annotations

from oneoff._record import dataclass

__all__ = ["TABLES", "Key", "Table", "render"]


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    text: str
    example: str


@dataclass(frozen=True)
class Table:
    """One table; ``probe`` is a manifest (TOML) with ``ZZ`` marking where an unknown key
    is put to ask the loader which keys it accepts there."""

    title: str
    text: str
    keys: tuple[Key, ...]
    probe: str


_ENV = "[environments.development]\n"
_TASK = '[tasks.t]\nargv = ["true"]\n'

TABLES: tuple[Table, ...] = (
    Table(
        "top level",
        "`oneoff.toml` at the app's root, or the same tables under `[tool.oneoff]` in "
        "pyproject.toml. Only `[environments]` is required.",
        (
            Key("app", "table", "{}", "the app itself: [app]", '[app]\nname = "notes"'),
            Key("processes", "table", "the Procfile", "long-running process types", "[processes]"),
            Key("environments", "table", "required", "deploy targets", "[environments.staging]"),
            Key("tasks", "table", "{}", "admin tasks", "[tasks.migrate]"),
            Key("release", "table", "{}", "release signing and ignores", "[release]"),
            Key("audit", "table", "{}", "the audit log and stored output", "[audit]"),
            Key("access", "table", "none (zero setup)", "identities and policies", "[access]"),
            Key("store", "table", "SQLite", "where runs and the audit log live", "[store]"),
            Key("server", "table", "none (local)", "the team server the CLI asks", "[server]"),
        ),
        "ZZ = 1\n" + _ENV,
    ),
    Table(
        "[app]",
        "The app's name and interpreter.",
        (
            Key(
                "name",
                "string",
                "the root directory's name",
                "the app's name in plans and records",
                'name = "notes"',
            ),
            Key(
                "python",
                "string (path)",
                "oneoff's own interpreter",
                "the app's Python, "
                "relative to the root; its directory goes on tasks' PATH (so `python`, "
                "`flask`, `gunicorn` are the app's); `oneoff init` finds the virtualenv",
                'python = ".venv/bin/python"',
            ),
            Key(
                "path",
                "list of strings",
                "[]",
                "app directories put first on tasks' PATH",
                'path = ["bin"]',
            ),
        ),
        "[app]\nZZ = 1\n" + _ENV,
    ),
    Table(
        "[environments.NAME]",
        "A deploy target. NAME matches `[a-z][a-z0-9_-]{0,63}`.",
        (
            Key(
                "config",
                "list of config sources",
                "[]",
                "where variables come from, in order, later wins (see the next three tables)",
                'config = [{ dotenv = ".env" }, { inherit = ["DATABASE_URL"] }]',
            ),
            Key(
                "secrets",
                "list of strings",
                "[]",
                "more variable names that are secret",
                'secrets = ["SENTRY_DSN"]',
            ),
            Key(
                "secret_patterns",
                "list of strings",
                "[]",
                "more secret name patterns "
                "(fnmatch, any case), besides *PASSWORD, *_PWD, *_TOKEN, *_SECRET, *_KEY, "
                "SECRET_*, ...",
                'secret_patterns = ["*_DSN"]',
            ),
            Key(
                "not_secret",
                "list of strings",
                "[]",
                "variable names exempt from secret_patterns (never from secrets), such as SORT_KEY",
                'not_secret = ["SORT_KEY"]',
            ),
            Key(
                "protected",
                "boolean",
                "false",
                "never a default target; critical tasks ask to confirm; needs a signed release",
                "protected = true",
            ),
            Key(
                "allow_os_user",
                "boolean",
                "not protected",
                "accept the bare OS user without a key (never in a protected environment)",
                "allow_os_user = false",
            ),
            Key(
                "unsafe_allow_env",
                "list of strings",
                "[]",
                "code-loading variables "
                "(PYTHONPATH, LD_*, ...) dotenv/command config may set anyway",
                'unsafe_allow_env = ["PYTHONPATH"]',
            ),
            Key(
                "description", "string", '""', "shown in listings", 'description = "the live site"'
            ),
            Key(
                "approvals",
                "table",
                "none",
                "a quorum for every task here (next tables)",
                'approvals = { quorum = 2, group = "dba" }',
            ),
            Key(
                "break_glass",
                "boolean or notifier",
                "[access] break_glass",
                "who to tell about break-glass runs here",
                'break_glass = { webhook = "https://chat.example/hook" }',
            ),
            Key(
                "release",
                "table",
                "{}",
                "release rules for this environment",
                "release = { require_signed = true }",
            ),
            Key(
                "executor",
                "table",
                '{ kind = "local" }',
                "where tasks run: local, sandbox, container or kubernetes (README, Executors)",
                'executor = { kind = "sandbox", writable = ["var"] }',
            ),
        ),
        "[environments.development]\nZZ = 1\n",
    ),
    Table(
        "config source: dotenv",
        "A dotenv file inside the app.",
        (
            Key("dotenv", "string (path)", "required", "the file", 'dotenv = ".env"'),
            Key("optional", "boolean", "false", "a missing file is empty", "optional = true"),
        ),
        _ENV + 'config = [{ dotenv = ".env", ZZ = 1 }]\n',
    ),
    Table(
        "config source: inherit",
        "Named variables (or `PREFIX_*`) from the environment oneoff itself runs in, such "
        "as a platform container's; never a bare `*`.",
        (
            Key(
                "inherit",
                "list of strings",
                "required",
                "names or prefixes",
                'inherit = ["DATABASE_URL", "APP_*"]',
            ),
        ),
        _ENV + 'config = [{ inherit = ["A"], ZZ = 1 }]\n',
    ),
    Table(
        "config source: command",
        "A program printing dotenv, such as a secrets manager's CLI.",
        (
            Key(
                "command",
                "list of strings (argv)",
                "required",
                "the program",
                'command = ["vault", "kv", "get", "-format=dotenv", "app"]',
            ),
            Key("timeout", "number (seconds)", "30", "how long it may take", "timeout = 10"),
            Key(
                "pass_env",
                "list of strings",
                "[]",
                "variables it gets from oneoff's "
                "environment (it gets only PATH and HOME otherwise)",
                'pass_env = ["VAULT_ADDR", "VAULT_TOKEN"]',
            ),
        ),
        _ENV + 'config = [{ command = ["true"], ZZ = 1 }]\n',
    ),
    Table(
        "[environments.NAME] release",
        "Release rules for one environment.",
        (
            Key(
                "require_signed",
                "boolean",
                "protected",
                "refuse runs without a release signed by a trusted key",
                "require_signed = true",
            ),
            Key(
                "trusted_keys",
                "list of strings",
                "[release] trusted_keys",
                "replaces the app-wide trusted keys here",
                'trusted_keys = ["keys/staging.pub"]',
            ),
        ),
        _ENV + "release = { ZZ = 1 }\n",
    ),
    Table(
        "[environments.NAME] approvals",
        "A quorum every task needs in this environment (a task's own rule wins).",
        (
            Key("quorum", "integer 1-20", "required", "approvals needed", "quorum = 2"),
            Key(
                "group",
                "string",
                "anyone else",
                "approvers must be in this signers group",
                'group = "dba"',
            ),
            Key(
                "risks",
                "list of low/high/critical",
                "all",
                "only tasks of these risks",
                'risks = ["high", "critical"]',
            ),
            Key(
                "ttl",
                "duration",
                "[access] approval_ttl",
                "how long an approval stays valid here (from its signed time; at most 366 days)",
                'ttl = "15m"',
            ),
        ),
        _ENV + "approvals = { quorum = 1, ZZ = 1 }\n",
    ),
    Table(
        "[tasks.NAME]",
        "An admin process. NAME matches `[a-z][a-z0-9_-]{0,63}`.",
        (
            Key(
                "argv",
                "list of strings",
                "required",
                "the program and its arguments, "
                "never a shell string; `{param}` fills one whole element or part of one, "
                "`{{`/`}}` are literal braces",
                'argv = ["python", "manage.py", "migrate"]',
            ),
            Key(
                "params",
                "table of params",
                "{}",
                "typed parameters (see params.NAME)",
                'params.target = { type = "string", pattern = "[0-9]{4}" }',
            ),
            Key(
                "description",
                "string",
                '""',
                "shown in plans and listings",
                'description = "Apply migrations"',
            ),
            Key(
                "timeout",
                "duration",
                '"1h" ("4h" if interactive)',
                "then SIGTERM, grace, SIGKILL of the whole tree",
                'timeout = "30m"',
            ),
            Key("grace", "duration", '"10s"', "between SIGTERM and SIGKILL", 'grace = "30s"'),
            Key(
                "risk",
                "low, high or critical",
                '"low"',
                "what policies and approvals "
                "see; critical asks to confirm on protected environments",
                'risk = "high"',
            ),
            Key(
                "locks",
                "list of strings",
                "[]",
                "named resources shared with other runs",
                'locks = ["database"]',
            ),
            Key(
                "environments",
                "list of strings",
                "all",
                "where it may run",
                'environments = ["staging"]',
            ),
            Key(
                "interactive",
                "boolean",
                "false",
                "a console: gets the terminal, recorded",
                "interactive = true",
            ),
            Key(
                "cwd", "string (path)", '"."', "working directory inside the app", 'cwd = "backend"'
            ),
            Key(
                "approvals",
                "table",
                "none",
                "a quorum for this task (next table)",
                'approvals = { quorum = 2, group = "dba" }',
            ),
            Key(
                "network",
                "boolean",
                "false",
                "the task needs the network (sandbox and container executors deny it otherwise)",
                "network = true",
            ),
        ),
        _ENV + '[tasks.t]\nargv = ["true"]\nZZ = 1\n',
    ),
    Table(
        "[tasks.NAME] approvals",
        "A quorum this task needs, in protected environments unless `environments` says.",
        (
            Key("quorum", "integer 1-20", "required", "approvals needed", "quorum = 2"),
            Key(
                "group",
                "string",
                "anyone else",
                "approvers must be in this signers group",
                'group = "dba"',
            ),
            Key(
                "environments",
                "list of strings",
                "protected ones",
                "where the rule applies",
                'environments = ["staging", "production"]',
            ),
        ),
        _ENV + _TASK + "approvals = { quorum = 1, ZZ = 1 }\n",
    ),
    Table(
        "[tasks.NAME] params.PARAM",
        "A typed parameter. PARAM matches `[a-z][a-z0-9_-]{0,63}`; every non-secret param "
        "must appear in argv. Secret params never go in argv: they reach the task in its "
        "environment or on stdin, and are read from a file, stdin or a prompt.",
        (
            Key(
                "type",
                "string, int, bool, choice, date, path or secret",
                '"string"',
                "how the value is checked",
                'type = "int"',
            ),
            Key(
                "description",
                "string",
                '""',
                "shown in prompts and listings",
                'description = "migration to go to"',
            ),
            Key(
                "required", "boolean", "true unless a default", "must be given", "required = false"
            ),
            Key(
                "default",
                "string, integer, boolean or date",
                "none (not for secrets)",
                "used when not given",
                'default = "latest"',
            ),
            Key(
                "pattern",
                "string (regex)",
                "none",
                "string or secret: the whole value must match (a secret is never echoed), "
                "matched by RE2 in linear time; Python re syntax, ASCII \\d \\w \\s \\b; "
                "no backreferences, lookaround or possessive repetition; at most 1,000 "
                "characters (README Limits); without it a string may not contain shell "
                "metacharacters",
                'pattern = "[0-9]{4}"',
            ),
            Key("max_length", "integer", "256 (secret: 4096)", "longest value", "max_length = 64"),
            Key("min_length", "integer", "0 (secret: 8)", "shortest value", "min_length = 12"),
            Key("min", "integer", "none", "int: smallest value", "min = 1"),
            Key("max", "integer", "none", "int: largest value", "max = 100"),
            Key(
                "choices",
                "list of strings",
                "required for choice",
                "choice: the values",
                'choices = ["eu", "us"]',
            ),
            Key(
                "must_exist", "boolean", "false", "path: must exist in the app", "must_exist = true"
            ),
            Key(
                "deliver",
                "env or stdin",
                '"env"',
                "secret: how it reaches the task",
                'deliver = "stdin"',
            ),
            Key(
                "env",
                "string",
                "ONEOFF_PARAM_<NAME>",
                "secret: the variable it is "
                "delivered as; refused if the environment's config sets it too",
                'env = "DJANGO_SUPERUSER_PASSWORD"',
            ),
        ),
        _ENV + _TASK + 'params.p = { type = "secret", ZZ = 1 }\n',
    ),
    Table(
        "[release]",
        "Release signing and what a release's code digest leaves out.",
        (
            Key(
                "trusted_keys",
                "list of strings",
                "[]",
                "Ed25519 public keys (file paths "
                "in the app, or ed25519:<base64>) that may sign releases",
                'trusted_keys = ["keys/release.pub"]',
            ),
            Key(
                "ignore",
                "list of strings",
                "[]",
                "gitignore-style patterns left out of the code digest (besides .git and .oneoff)",
                'ignore = ["var/", "*.log"]',
            ),
        ),
        "[release]\nZZ = 1\n" + _ENV,
    ),
    Table(
        "[audit]",
        "The audit log and stored task output.",
        (
            Key(
                "output_cap",
                "integer (bytes) or size string",
                '"16MiB"',
                "output stored per run; beyond it output is shown, not stored",
                'output_cap = "64MiB"',
            ),
        ),
        "[audit]\nZZ = 1\n" + _ENV,
    ),
    Table(
        "[access]",
        "Identities (SSH keys) and Cedar policies; see docs/access.md.",
        (
            Key(
                "signers",
                "string (path)",
                '"people/allowed_signers"',
                "ssh-keygen allowed_signers file, groups in the comment",
                'signers = "team/signers"',
            ),
            Key(
                "policies",
                "string (path)",
                '"policies"',
                "directory of *.cedar files",
                'policies = "policies"',
            ),
            Key(
                "approval_ttl",
                "duration",
                '"1h"',
                "how long an approval stays valid (at most 366 days)",
                'approval_ttl = "15m"',
            ),
            Key(
                "break_glass",
                "notifier",
                "none",
                'announce break-glass runs: { command = [...] } or { webhook = "https://..." }',
                'break_glass = { command = ["notify-oncall"] }',
            ),
        ),
        "[access]\nZZ = 1\n" + _ENV,
    ),
    Table(
        "[store]",
        "Where runs, output and the audit log live. `ONEOFF_STORE_URL` overrides it; "
        "prefer the variable for a password, since the manifest is committed.",
        (
            Key(
                "url",
                "string",
                "SQLite in .oneoff/",
                "a postgresql:// URL",
                'url = "postgresql://oneoff@db/oneoff"',
            ),
        ),
        "[store]\nZZ = 1\n" + _ENV,
    ),
    Table(
        "[server]",
        "The team server the CLI asks instead of this app's store (request, approve, deny, "
        "requests, runs, show, logs, locks, audit verify|witness|export). `ONEOFF_SERVER` "
        "overrides it, and `--server URL` overrides both.",
        (
            Key(
                "url",
                "string",
                "none: local mode",
                "https://, or http:// to a loopback host only",
                'url = "https://oneoff.internal"',
            ),
        ),
        "[server]\nZZ = 1\n" + _ENV,
    ),
)

_HEADER = """\
# oneoff.toml reference

<!-- Generated by `python -m oneoff._reference > docs/reference.md`; do not edit by hand.
tests/test_reference.py fails when this file and the loader disagree. -->

Every table and key oneoff.toml accepts (or `[tool.oneoff]` in pyproject.toml). An unknown
key is an error that lists the valid keys. Durations are seconds or strings like `"90s"`,
`"10m"`, `"2h"`. `[processes]` maps each process type to an argv list (`web =
["gunicorn", "app.wsgi"]`); without it, a `Procfile` is read, and its `release:` line is
the task `release`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """docs/reference.md."""
    out = [_HEADER]
    for table in TABLES:
        out += [f"## {table.title}", "", table.text, ""]
        out += ["| key | type | default | meaning | example |", "| --- | --- | --- | --- | --- |"]
        for key in table.keys:
            example = _cell(key.example.replace("\n", " "))
            cells = (f"`{key.name}`", _cell(key.type), _cell(key.default), _cell(key.text))
            out.append("| " + " | ".join(cells) + f" | `{example}` |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(render())
