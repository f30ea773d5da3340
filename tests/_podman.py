"""Podman for the executor tests: the machine's engine settings and an image built offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "echo", "cat", "id", "ls", "touch", "sleep", "head", "tr", "env", "true", "wc")


def why_podman_cannot_run() -> str | None:
    """None when podman and busybox-static are here; otherwise the reason to skip."""
    if shutil.which("podman") is None:
        return "podman is not installed (.ci/run installs podman runc busybox-static)"
    if not BUSYBOX.is_file():
        return "busybox-static is not installed (.ci/run installs it)"
    return None


def write_engine_conf(directory: Path) -> dict[str, str]:
    """Debian's podman on this kind of machine: runc (crun fails on its cgroups), and no
    default ulimits (raising them is refused here). Returns the operator's environment."""
    conf = directory / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def build_busybox_image(workdir: Path, env: dict[str, str]) -> str:
    """Import a rootfs holding a static busybox (no registry); returns name@sha256:..."""
    tar_path = workdir / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for directory in ("bin", "tmp", "app", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(BUSYBOX, "bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    name = f"localhost/oneoff-test-{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["podman", "import", "--quiet", "--change", "ENV PATH=/bin", str(tar_path), name],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    digest = subprocess.run(
        ["podman", "image", "inspect", name, "--format", "{{.Digest}}"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return f"{name}@{digest}"


def remove_image(reference: str, env: dict[str, str]) -> None:
    name = reference.split("@", 1)[0]
    subprocess.run(["podman", "rmi", "--force", name], env=env, capture_output=True, check=False)
