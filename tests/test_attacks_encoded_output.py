"""A task printing a secret through real encoders (coreutils, busybox, xxd, Python's own) never
shows it, in any form, on the terminal or in the stored log that ``oneoff logs`` replays.

Each encoder runs inside a real ``oneoff run``; its output is read back the way a person
would (line breaks and indents taken out, hex dumps decoded) and must not hold the secret.
"""

from __future__ import annotations

import html
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

import _hexdumps
from oneoff._dotenv import format_dotenv
from oneoff._redact_forms import _b64_cores
from oneoff.testing import make_app, run_cli
from test_redact_encoders import _dumped, b32_cores

# Printable, with every character shell and HTML quoting change; no '-' (the filler).
TOKEN = "Zx9'q<7>&\"Lm2/K+vR8wT4pN6yB3cDj5Hs"
KEY_LINES = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "q1Zx9Lm2K8wT4pN6yB3cDj5Hs0"]
TLS_KEY = "\n".join(["-----BEGIN PRIVATE KEY-----", *KEY_LINES, "-----END PRIVATE KEY-----"])

MANIFEST = """
[environments.development]
config = [{ dotenv = ".env" }]
secrets = ["API_TOKEN", "TLS_KEY"]

[tasks.leak]
argv = ["python", "leak.py", "{encoder}"]
params.encoder = { type = "string", pattern = "[a-z0-9_]+" }
"""

# What a dump tool prints, for a machine without it (`dump(data, kind)`).
DUMP = Path(_hexdumps.__file__).read_text()
# The task: prints the secret through the encoder its param names (TOOLS = ... goes first).
LEAK = r"""
import base64, html, os, shlex, subprocess, sys

tok = os.environ["API_TOKEN"]
key = os.environ["TLS_KEY"]
raw = tok.encode()
inner = b"\x00prefix:" + raw + b":suffix"  # the secret inside a larger encoded blob


def tool(name, argv, data, fallback):
    # What the installed tool prints for data; else what Python prints the same way.
    path = TOOLS.get(name)
    if path is None:
        return fallback(data)
    return subprocess.run([path, *argv], input=data, capture_output=True, check=True).stdout


def wrap(text, width, newline=b"\n"):
    return newline.join(text[i : i + width] for i in range(0, len(text), width)) + newline


def b64(d, width, urlsafe=False, newline=b"\n"):
    return wrap((base64.urlsafe_b64encode if urlsafe else base64.b64encode)(d), width, newline)


PRINTERS = {
    "shlex": lambda: ("cmd --token " + shlex.quote(tok) + "\n").encode(),
    "html": lambda: ('<input value="' + html.escape(tok) + '">\n').encode(),
    "html_noquote": lambda: ("<p>" + html.escape(tok, quote=False) + "</p>\n").encode(),
    "base64_w40": lambda: tool("base64", ["-w", "40"], inner, lambda d: b64(d, 40)),
    "busybox_base64_w7": lambda: tool("busybox", ["base64", "-w", "7"], raw, lambda d: b64(d, 7)),
    "base64url_w30": lambda: tool(
        "basenc", ["--base64url", "-w", "30"], inner, lambda d: b64(d, 30, urlsafe=True)
    ),
    "base64url_crlf": lambda: b64(inner, 52, urlsafe=True, newline=b"\r\n"),
    "base32": lambda: tool("base32", [], inner, lambda d: wrap(base64.b32encode(d), 76)),
    "base32_alone": lambda: base64.b32encode(raw) + b"\n",
    "xxd": lambda: tool("xxd", [], inner, lambda d: dump(d, "xxd")),
    "xxd_g1_upper": lambda: tool("xxd", ["-g1", "-u"], inner, lambda d: dump(d, "xxd").upper()),
    "busybox_xxd": lambda: tool("busybox", ["xxd"], inner, lambda d: dump(d, "xxd")),
    "hexdump_c": lambda: tool("hexdump", ["-C"], inner, lambda d: dump(d, "hexdump -C")),
    "busybox_hexdump_c": lambda: tool(
        "busybox", ["hexdump", "-C"], inner, lambda d: dump(d, "hexdump -C")
    ),
    "od_x1z": lambda: tool("od", ["-A", "x", "-t", "x1z"], inner, lambda d: dump(d, "od")),
    "od_x1": lambda: tool("od", ["-t", "x1"], inner, lambda d: dump(d, "od")),
    "xxd_p": lambda: tool("xxd", ["-p"], inner, lambda d: wrap(d.hex().encode(), 60)),
    "yaml_key": lambda: ("tls:\n  key: |\n    " + key.replace("\n", "\n    ") + "\n").encode(),
    "yaml_key_tab": lambda: ("\t" + key.replace("\n", "\n\t") + "\n").encode(),
}
out = sys.stdout.buffer
out.write(b"before\n")
out.write(PRINTERS[sys.argv[1]]())
out.write(b"after\n")
out.flush()
"""

TOOLS = {
    name: shutil.which(name)
    for name in ("base64", "base32", "basenc", "busybox", "xxd", "hexdump", "od")
}


def _cores(raw: bytes) -> list[bytes]:
    cores = [core for core, _, _ in _b64_cores(raw)]
    return cores + [core.translate(bytes.maketrans(b"+/", b"-_")) for core in cores]


_B64 = _cores(TOKEN.encode())
_B32 = b32_cores(TOKEN.encode())
# A dump read back (its hex, then its text columns): neither holds the secret, nor its half.
_DUMPED = [
    TOKEN.encode().hex().encode(),
    TOKEN.encode()[: len(TOKEN) // 2].hex().encode(),
    TOKEN.encode()[len(TOKEN) // 2 :].hex().encode(),
    TOKEN.encode()[:8],
    TOKEN.encode()[-8:],
]
# encoder -> the forms of TOKEN it would show, each as a person would read it back (wrapped
# and dumped forms once their layout is taken out)
NEEDLES: dict[str, list[bytes]] = {
    "base64_w40": _B64,
    "busybox_base64_w7": _B64,
    "base64url_w30": _B64,
    "base64url_crlf": _B64,
    "xxd_p": [TOKEN.encode().hex().encode()],
    **{
        name: _DUMPED
        for name in (
            "xxd",
            "xxd_g1_upper",
            "busybox_xxd",
            "hexdump_c",
            "busybox_hexdump_c",
            "od_x1z",
            "od_x1",
        )
    },
    "base32": _B32,
    "base32_alone": _B32,
    "shlex": [shlex.quote(TOKEN).encode(), shlex.quote(TOKEN)[1:-1].encode()],
    "html": [html.escape(TOKEN).encode()],
    "html_noquote": [html.escape(TOKEN, quote=False).encode()],
    "yaml_key": [line.encode() for line in KEY_LINES],
    "yaml_key_tab": [line.encode() for line in KEY_LINES],
}


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tools = {name: path for name, path in TOOLS.items() if path}
    return make_app(
        tmp_path_factory.mktemp("encoded") / "app",
        MANIFEST,
        {
            ".env": format_dotenv({"API_TOKEN": TOKEN, "TLS_KEY": TLS_KEY}),
            "leak.py": f"TOOLS = {tools!r}\n{DUMP}\n{LEAK}",
        },
    )


def shown_and_stored(app: Path, env: dict[str, str], encoder: str) -> list[str]:
    """The terminal output of ``oneoff run leak`` and what ``oneoff logs`` replays of it."""
    result = run_cli(["run", "leak", "-p", f"encoder={encoder}", "-q"], cwd=app, env=env)
    assert result.exit_code == 0, result.stderr
    assert "before" in result.stdout
    assert "after" in result.stdout
    assert "[REDACTED:" in result.stdout
    runs = json.loads(run_cli(["runs", "--json", "--limit", "1"], cwd=app, env=env).stdout)
    replayed = run_cli(["logs", str(runs[0]["id"])], cwd=app, env=env)
    assert replayed.exit_code == 0, replayed.stderr
    return [result.stdout + result.stderr, replayed.stdout]


@pytest.mark.parametrize("encoder", sorted(NEEDLES))
def test_a_secret_printed_by_a_real_encoder_never_shows(
    leaky: Path, cli_env: dict[str, str], encoder: str
) -> None:
    """Neither the terminal nor the stored log holds the secret as the encoder printed it."""
    for text in shown_and_stored(leaky, cli_env, encoder):
        shown = text.encode()
        unwrapped = re.sub(rb"[\r\n\t ]", b"", shown)
        dumped = _dumped(shown.lower())
        assert TOKEN.encode() not in shown
        for needle in NEEDLES[encoder]:
            assert needle not in shown, (encoder, needle)
            assert needle not in unwrapped, (encoder, needle)
            assert needle not in dumped, (encoder, needle)
