"""`oneoff completion bash|zsh|fish` completes commands and options in the real shells."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from oneoff.cli._completion import script


def _shell(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is not installed (.ci/run installs it)"
    return found


CASES = [
    (["ru"], {"run", "runs"}),
    (["release", "ve"], {"verify"}),
    (["--app", "x", "runs", "--st"], {"--status"}),
    (["audit", "export", "--fo"], {"--format"}),
    (["completion", "--h"], {"--help"}),
]


def bash_complete(tmp_path: Path, words: list[str]) -> set[str]:
    path = tmp_path / "oneoff.bash"
    path.write_text(script("bash"))
    words_text = " ".join(f"'{w}'" for w in ["oneoff", *words])
    code = (
        f"source {path}; COMP_WORDS=({words_text}); COMP_CWORD={len(words)}; _oneoff; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        [_shell("bash"), "--norc", "-c", code], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def zsh_complete(tmp_path: Path, words: list[str]) -> set[str]:
    # compadd and compdef stubbed (they need a live completion widget); the script's own
    # logic runs in real zsh, and the stub applies compadd's prefix matching.
    path = tmp_path / "oneoff.zsh"
    path.write_text(script("zsh"))
    words_text = " ".join(f"'{w}'" for w in ["oneoff", *words])
    code = (
        "compdef() { :; }; "
        'compadd() { shift; for w in "$@"; do [[ $w == ${PREFIX}* ]] && print -- $w; done; }; '
        f"source {path}; words=({words_text}); CURRENT={len(words) + 1}; "
        f"PREFIX='{words[-1]}'; _oneoff; true"
    )
    done = subprocess.run(
        [_shell("zsh"), "-f", "-c", code], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def fish_complete(tmp_path: Path, words: list[str]) -> set[str]:
    path = tmp_path / "oneoff.fish"
    path.write_text(script("fish"))
    line = " ".join(["oneoff", *words])
    done = subprocess.run(
        [_shell("fish"), "--no-config", "-c", f"source {path}; complete -C '{line}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {row.split("\t")[0] for row in done.stdout.splitlines() if row}


@pytest.mark.parametrize("complete", [bash_complete, zsh_complete, fish_complete])
@pytest.mark.parametrize(("words", "expected"), CASES)
def test_completion_offers_commands_and_options(
    tmp_path: Path, complete: object, words: list[str], expected: set[str]
) -> None:
    """Each shell's script completes subcommands at every level and each command's own
    options, from the same parser the CLI uses."""
    offered = complete(tmp_path, words)  # type: ignore[operator]
    assert expected <= offered, offered
    assert all(w.startswith(words[-1]) for w in offered), offered
