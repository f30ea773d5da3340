"""Build the notes app's container image offline, from this machine's own Python.

Usage (in examples/notes): python container/build_image.py [--engine E] [--python P]

No registry and no base image: the root filesystem holds a Python interpreter (Debian's
/usr/bin/python3 by default), its standard library, the shared libraries they load (found
with ldd) and the app's code in /app. It is imported with `podman import` and the script
prints the image pinned by digest (name@sha256:...), ready for oneoff.toml's
``executor = { kind = "container", image = "..." }``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

APP = Path(__file__).resolve().parent.parent
NAME = "localhost/notes"
_LDD_PATH = re.compile(r"(/\S+) \(0x")


def interpreter_files(python: str) -> tuple[set[str], str]:
    """The interpreter, its standard library and every shared library they need."""
    probe = "import sys, sysconfig; print(sysconfig.get_paths()['stdlib']); print(sys.executable)"
    stdlib, executable = subprocess.run(
        [python, "-I", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    files = {os.path.realpath(executable)}
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = [
            d for d in dirnames if d not in ("test", "__pycache__", "idlelib", "tkinter")
        ]
        files.update(os.path.join(dirpath, f) for f in filenames)
    binaries = [f for f in files if f.endswith(".so") or f == os.path.realpath(executable)]
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
        for path in _LDD_PATH.findall(out) + re.findall(r"^\s*(/\S+) \(0x", out, re.M):
            files.add(path)
            files.add(os.path.realpath(path))
    return files, executable


def build_tar(python: str) -> bytes:
    files, executable = interpreter_files(python)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("tmp", "app", "app/var", "usr/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        # A merged-/usr system's /lib, /lib64 and /bin are symlinks: keep them so, and store
        # every file under its real directory, so each path the loader asks for resolves.
        for top in ("bin", "lib", "lib64", "sbin"):
            if os.path.islink(f"/{top}"):
                link = tarfile.TarInfo(top)
                link.type, link.linkname = tarfile.SYMTYPE, os.readlink(f"/{top}")
                tar.addfile(link)
        added: set[str] = set()
        for path in sorted(files):
            if not os.path.isfile(path):
                continue
            where = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
            if where in added:
                continue
            added.add(where)
            tar.add(path, where.lstrip("/"), recursive=False)
        for name in ("python", "python3"):
            link = tarfile.TarInfo(f"usr/bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, os.path.realpath(executable)
            tar.addfile(link)
        tar.add(APP / "notes", "app/notes", filter=_no_bytecode)
    return buf.getvalue()


def _no_bytecode(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name else info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--tag", default="latest")
    args = parser.parse_args()
    image = f"{NAME}:{args.tag}"
    subprocess.run(
        [args.engine, "import", "--quiet", "--change", "ENV PATH=/usr/bin:/bin",
         "--change", "WORKDIR /app", "-", image],
        input=build_tar(args.python), check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    digest = subprocess.run(
        [args.engine, "image", "inspect", image, "--format", "{{.Digest}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    print(f"{NAME}@{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
