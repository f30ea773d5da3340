"""The people and policy files, read once: the bytes checked are the bytes evaluated.

Reading a file twice (once to check it against the release, once to parse it) lets
whoever can swap the file between the two reads have a run decided by a policy that is
not in the release. So each process reads the access files exactly once, into an
``AccessFiles``; the release check compares *these bytes* with the release, and the gate
parses and evaluates *these bytes*, never the disk again.

Imported on the release check's path: standard library only.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from oneoff._record import dataclass
from oneoff.errors import ManifestError

if TYPE_CHECKING:
    from oneoff._access import AccessConfig

__all__ = ["AccessFiles", "read_access_files"]


@dataclass(frozen=True)
class AccessFiles:
    """The signers file (None when missing) and every ``*.cedar`` file, as read once."""

    root: Path
    signers_path: Path
    signers: bytes | None
    policies_dir: Path
    policies: tuple[tuple[str, bytes], ...]  # (file name, bytes), sorted by name

    def version(self) -> str:
        """A digest of everything that decides access (approvals bind it)."""
        digest = hashlib.sha256()
        files = [(self.signers_path, self.signers)]
        files += [(self.policies_dir / name, data) for name, data in self.policies]
        for path, data in files:
            body = b"<missing>" if data is None else data
            name = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else path
            digest.update(f"{name}\x00{len(body)}\x00".encode())
            digest.update(body)
        return "pv:" + digest.hexdigest()[:32]

    def policies_digest(self) -> str:
        digest = hashlib.sha256()
        for name, data in self.policies:
            digest.update(f"{name}\x00{len(data)}\x00".encode() + data)
        return digest.hexdigest()

    def signers_digest(self) -> str | None:
        return None if self.signers is None else hashlib.sha256(self.signers).hexdigest()

    def signers_text(self) -> str:
        """The signers file as text; ManifestError (as ``Signers.load`` raises) otherwise."""
        if self.signers is None:
            raise ManifestError(f"{self.signers_path}: allowed signers file not found")
        try:
            return self.signers.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"{self.signers_path}: cannot read allowed signers file: {exc}"
            ) from None

    def policy_sources(self) -> dict[str, str]:
        sources = {}
        for name, data in self.policies:
            try:
                sources[name] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                path = self.policies_dir / name
                raise ManifestError(f"{path}: cannot read policy file: {exc}") from None
        return sources

    def by_release_path(self) -> dict[str, bytes | None]:
        """Every file read, by its path relative to the app root (as a release lists it)."""
        out: dict[str, bytes | None] = {}
        for path, data in [(self.signers_path, self.signers)] + [
            (self.policies_dir / name, data) for name, data in self.policies
        ]:
            out[_rel(self.root, path)] = data
        return out

    def policy_prefix(self) -> str:
        """The policy directory's release path with a trailing slash."""
        return _rel(self.root, self.policies_dir).rstrip("/") + "/"


def _rel(root: Path, path: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _read(path: Path, what: str) -> bytes | None:
    # O_NOFOLLOW: a symlink swapped in for a policy file is refused, not followed elsewhere.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read {what}: {exc.strerror}") from None


def read_access_files(config: AccessConfig) -> AccessFiles:
    """Read the signers file and ``policies/*.cedar`` once (a missing directory: none)."""
    signers = _read(config.signers, "allowed signers file")
    directory = config.policies
    names = sorted(p.name for p in directory.glob("*.cedar")) if directory.is_dir() else []
    policies = []
    for name in names:
        data = _read(directory / name, "policy file")
        if data is not None:  # removed since the listing: as if it was never there
            policies.append((name, data))
    return AccessFiles(config.root, config.signers, signers, directory, tuple(policies))
