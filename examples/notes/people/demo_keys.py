"""Make throw-away demo people for the notes app: ssh-keygen keys plus allowed_signers lines.

Usage: python people/demo_keys.py DIR
Writes DIR/<name> and DIR/<name>.pub for alice (developers), bob and carol (dba) and
dave (oncall), and appends their lines to people/allowed_signers. Never commit demo keys.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEOPLE = {"alice": "developers", "bob": "dba", "carol": "dba,developers", "dave": "oncall"}


def main(directory: Path, signers: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, groups in PEOPLE.items():
        key = directory / name
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@demo", "-f", key],
                check=True,
            )
        kind, blob = Path(f"{key}.pub").read_text().split()[:2]
        lines.append(f"{name} {kind} {blob} {name}@demo groups={groups}\n")
    with signers.open("a") as fh:
        fh.writelines(lines)
    print(f"keys in {directory}; people added to {signers}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parent / "allowed_signers")
