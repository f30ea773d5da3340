"""Parsing allowed_signers files: people, groups, options, and the errors for bad lines."""

from __future__ import annotations

import base64
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oneoff._auth import Signers, sign, verify
from oneoff._auth.sshsig import public_key_blob
from oneoff.errors import ManifestError, NotPermitted


def new_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ssh-ed25519 " + base64.b64encode(public_key_blob(raw)).decode()


def test_people_groups_and_members_are_read_from_the_comment() -> None:
    """groups=a,b in the trailing comment gives each person their groups."""
    alice, bob, carol = new_key(), new_key(), new_key()
    signers = Signers.parse(
        "# the team\n"
        "\n"
        f"alice {alice} alice@laptop groups=dba,ops\n"
        f"   bob {bob} groups=ops\n"
        f"carol {carol}\n"
    )
    assert signers.names() == ("alice", "bob", "carol")
    assert signers.person("alice").groups == frozenset({"dba", "ops"})
    assert signers.person("carol").groups == frozenset()
    assert signers.members("ops") == ("alice", "bob")
    assert signers.members("dba") == ("alice",)
    assert signers.members("nobody") == ()
    assert signers.groups() == ("dba", "ops")
    assert signers.person("bob").line == 4
    assert "carol" in signers
    assert "dave" not in signers


def test_lookup_by_key_returns_that_keys_person_and_fingerprint() -> None:
    """by_key() finds the entry for a public key blob, with ssh-keygen's fingerprint format."""
    key = new_key()
    signers = Signers.parse(f"alice {key}\n")
    blob = base64.b64decode(key.split()[1])
    person = signers.by_key(blob)
    assert person is not None
    assert person.name == "alice"
    assert person.fingerprint.startswith("SHA256:")
    assert not person.fingerprint.endswith("=")
    assert signers.by_key(base64.b64decode(new_key().split()[1])) is None


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    """Fingerprints are exactly what `ssh-keygen -l` prints."""
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    assert Signers.parse(f"alice {pub}\n").person("alice").fingerprint == listed


def test_several_keys_of_one_person_share_the_union_of_groups() -> None:
    """A person with a laptop key and a token key has the groups of both lines on each."""
    laptop, token = new_key(), new_key()
    signers = Signers.parse(f"alice {laptop} groups=dba\nalice {token} groups=ops\n")
    assert len(signers.keys_of("alice")) == 2
    for entry in signers.keys_of("alice"):
        assert entry.groups == frozenset({"dba", "ops"})
    assert signers.members("ops") == ("alice",)
    assert len(signers) == 1


def test_options_are_parsed() -> None:
    """namespaces=, valid-after= and valid-before= are read, case-insensitively."""
    signers = Signers.parse(
        f'alice NAMESPACES="oneoff,file",valid-after="20240102Z",'
        f'Valid-Before="202412311830Z" {new_key()} groups=dba\n'
    )
    alice = signers.person("alice")
    assert alice.namespaces == ("oneoff", "file")
    assert alice.valid_after == datetime(2024, 1, 2, tzinfo=UTC)
    assert alice.valid_before == datetime(2024, 12, 31, 18, 30, tzinfo=UTC)
    assert alice.groups == frozenset({"dba"})


@pytest.mark.parametrize(
    ("patterns", "namespace", "allowed"),
    [
        ("oneoff", "oneoff", True),
        ("oneoff", "oneoffx", False),
        ("oneoff*", "oneoff@example.com", True),
        ("one?ff", "oneoff", True),
        ("*,!git", "oneoff", True),
        ("*,!git", "git", False),
        ("[o]neoff", "oneoff", False),
    ],
)
def test_namespaces_option_is_an_ssh_pattern_list(
    patterns: str, namespace: str, allowed: bool
) -> None:
    """namespaces= follows ssh_config PATTERNS: * and ?, with ! negating."""
    alice = Signers.parse(f'alice namespaces="{patterns}" {new_key()}\n').person("alice")
    assert alice.allows_namespace(namespace) is allowed


def test_documented_format_is_accepted_by_ssh_keygen(tmp_path: Path) -> None:
    """A file using options and a groups= comment verifies with real `ssh-keygen -Y verify`."""
    key = tmp_path / "alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(
        "# oneoff people\n"
        f'alice namespaces="oneoff",valid-after="20200101Z" {pub} alice@laptop groups=dba,ops\n'
        f"bob {new_key()} groups=ops\n"
    )
    sig = tmp_path / "data.sig"
    sig.write_bytes(sign(b"data", namespace="oneoff", key_path=key))
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "alice", "-n", "oneoff", "-s", sig],
        input=b"data",
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    signers = Signers.load(allowed)
    assert verify(b"data", sig.read_bytes(), namespace="oneoff", allowed=signers).name == "alice"
    assert signers.members("ops") == ("alice", "bob")


def test_unknown_person_is_not_permitted() -> None:
    """Asking for a person not in the file raises NotPermitted naming them."""
    with pytest.raises(NotPermitted, match="'dave' is not in"):
        Signers.parse(f"alice {new_key()}\n").person("dave")
    assert Signers.parse("").keys_of("dave") == ()


def test_duplicate_key_for_two_people_is_an_error() -> None:
    """The same key listed for two names is refused, naming both lines."""
    key = new_key()
    with pytest.raises(
        ManifestError, match=r"people:3: key SHA256:\S+ is already listed for alice on line 1"
    ):
        Signers.parse(f"alice {key}\nbob {new_key()}\nmallory {key}\n", source="people")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    """Loading a file that does not exist names it."""
    with pytest.raises(ManifestError, match="allowed_signers: allowed signers file not found"):
        Signers.load(tmp_path / "allowed_signers")


KEY = new_key()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "missing key type"),
        (f"*@example.com {KEY}", "patterns are not supported"),
        (f"al/ice {KEY}", "not a valid name"),
        ("alice ssh-ed25519", "missing base64 key"),
        ("alice ssh-ed25519 !!!notbase64", "malformed ssh-ed25519 key"),
        ("alice ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ==", "malformed ssh-ed25519 key"),
        (f'alice groups="dba" {KEY}', "unknown option 'groups'"),
        (f"alice namespaces=oneoff {KEY}", "needs a quoted value"),
        (f'alice namespaces="oneoff {KEY}', "missing closing quote"),
        (f'alice namespaces="" {KEY}', "at least one namespace"),
        (f'alice namespaces="a",,valid-after="20240101Z" {KEY}', "empty option"),
        (f'alice namespaces="a",namespaces="b" {KEY}', "given twice"),
        (f'alice valid-before="20241332Z" {KEY}', "not a real date"),
        (f'alice valid-after="2024-01-01" {KEY}', "YYYYMMDD"),
        (f"alice,alice {KEY}", "name someone twice"),
        (f"alice,*@example.com {KEY}", "patterns are not supported"),
        (f"alice bogus {KEY}", "unknown option 'bogus'"),
        (f"alice foo-key AAAA {KEY}", "unknown option"),
        (f"alice {KEY} groups=dba groups=ops", "more than once"),
        (f"alice {KEY} groups=dba,", "not a valid group name"),
        (f"alice {KEY} groups=d&a", "not a valid group name"),
    ],
)
def test_bad_lines_name_the_file_and_line(line: str, message: str) -> None:
    """Each malformed line is a ManifestError naming file, line number and the problem."""
    text = f"# header\nbob {new_key()}\n{line}\n"
    with pytest.raises(ManifestError, match=rf"people/allowed_signers:3: .*{message}"):
        Signers.parse(text, source="people/allowed_signers")


def test_git_style_file_with_aliases_certificates_and_rsa_keys_loads(tmp_path: Path) -> None:
    """A git allowed_signers file loads: comma-separated principals are one person (the
    first is the name), cert-authority and non-Ed25519 lines are skipped with a warning
    naming the line, and every other line still counts."""
    alice, ca, carol = new_key(), new_key(), new_key()
    path = tmp_path / "allowed_signers"
    path.write_text(
        f"alice,alice@example.com {alice} groups=dba\n"
        f"*@example.com cert-authority {ca}\n"
        "bob ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ==\n"
        f"carol {carol}\n"
    )
    signers = Signers.load(path)
    assert signers.names() == ("alice", "carol")
    assert signers.person("alice@example.com").name == "alice"
    assert "alice@example.com" in signers
    assert signers.keys_of("alice@example.com") == signers.keys_of("alice")
    assert signers.members("dba") == ("alice",)
    assert [reason.split(": ", 1)[0] for reason in signers.skipped] == [
        f"{path}:2",
        f"{path}:3",
    ]
    assert "cert-authority is not supported" in signers.skipped[0]
    assert "bob" not in signers
    assert signers.by_key(base64.b64decode(ca.split()[1])) is None


def test_an_alias_naming_someone_else_is_refused() -> None:
    """A principal listed for two different people is an error, never a guess."""
    with pytest.raises(ManifestError, match="names two people"):
        Signers.parse(f"alice,ops {new_key()}\nops {new_key()}\n")


def test_validity_without_z_is_local_time_and_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    """valid-after/valid-before without Z are read in the local time zone, as ssh-keygen
    reads them, and a signature outside the window is refused."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        signers = Signers.parse(
            f'alice valid-after="20240101",valid-before="202406301200" {new_key()}\n'
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    alice = signers.person("alice")
    assert alice.valid_after == datetime(2023, 12, 31, 15, 0, tzinfo=UTC)
    assert alice.valid_before == datetime(2024, 6, 30, 3, 0, tzinfo=UTC)
    alice.check_usable("oneoff", datetime(2024, 3, 1, tzinfo=UTC))
    with pytest.raises(NotPermitted, match="expired"):
        alice.check_usable("oneoff", datetime(2024, 7, 1, tzinfo=UTC))
    with pytest.raises(NotPermitted, match="not valid before"):
        alice.check_usable("oneoff", datetime(2023, 12, 31, 14, 0, tzinfo=UTC))
