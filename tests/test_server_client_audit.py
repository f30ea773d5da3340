"""The audit API and `oneoff audit ... --server`: same output as local mode, proofs that
verify offline, co-signatures checked before they are kept."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from _access_kit import events
from _serverproc import ServerProc
from oneoff.cli import main

KEYS = dict[str, Path]
EXPORT_POLICY = (
    '@id("dba-export")\npermit (principal in Oneoff::Group::"dba", '
    'action == Oneoff::Action::"audit-export", resource);\n'
)


@pytest.fixture
def served(server_app: Path, server_factory: Callable[..., ServerProc]) -> ServerProc:
    """A server whose pinned policies let the dba group export the audit log."""
    (server_app / "policies" / "audit.cedar").write_text(EXPORT_POLICY)
    return server_factory(server_app)


def url(server: ServerProc) -> str:
    return f"http://127.0.0.1:{server.port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_prints_the_same_lines_locally_and_through_the_server(
    served: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit export` through the server prints, for every event both saw, the very line
    the local export prints (jsonl and OCSF); filters work the same."""
    app = str(served.app_dir)
    bob = str(server_keys["bob"])
    for fmt in ("jsonl", "ocsf"):
        code, local, _ = run(capsys, "audit", "export", "--app", app, "--key", bob, "--format", fmt)
        assert code == 0
        code, remote, err = run(
            capsys, "audit", "export", "--server", url(served), "--key", bob, "--format", fmt
        )
        assert code == 0, err
        local_lines, remote_lines = local.splitlines(), remote.splitlines()
        assert len(local_lines) > 3
        assert remote_lines[: len(local_lines)] == local_lines
    code, local, _ = run(
        capsys, "audit", "export", "--app", app, "--key", bob, "--kind", "server.pinned"
    )
    code, remote, _ = run(
        capsys, "audit", "export", "--server", url(served), "--key", bob, "--kind", "server.pinned"
    )
    assert local == remote
    assert local.count("\n") == 1


def test_export_refused_by_policy_is_exit_3_in_both_modes(
    served: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str]
) -> None:
    """alice (developers) may not export: exit 3 and the same message, locally and remotely."""
    alice = str(server_keys["alice"])
    code, out, err_local = run(
        capsys, "audit", "export", "--app", str(served.app_dir), "--key", alice
    )
    assert (code, out) == (3, "")
    code, out, err_remote = run(capsys, "audit", "export", "--server", url(served), "--key", alice)
    assert (code, out) == (3, "")
    assert "denied alice to audit-export oneoff:app in *" in err_local
    assert "denied alice to audit-export oneoff:app in *" in err_remote


def test_verify_reports_the_same_fields_locally_and_through_the_server(
    served: ServerProc, server_keys: KEYS, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`audit verify --json` has the same fields in both modes; the remote one says it
    extended the checkpoint it remembered the second time."""
    monkeypatch.setenv("ONEOFF_SIGNING_KEY", str(server_keys["carol"]))
    served.call("GET", "/v1/audit/checkpoint")  # the server signs a checkpoint
    code, local, _ = run(capsys, "audit", "verify", "--app", str(served.app_dir), "--json")
    assert code == 0
    code, first, err = run(capsys, "audit", "verify", "--server", url(served), "--json")
    assert code == 0, err
    assert set(json.loads(first)) == set(json.loads(local))
    code, second, _ = run(capsys, "audit", "verify", "--server", url(served))
    assert code == 0
    assert second.startswith("OK: ")
    assert "hash chain intact" in second
    assert "verified here before" in second


def test_an_inclusion_proof_from_the_server_verifies_offline(
    served: ServerProc, server_keys: KEYS, tmp_path: Path
) -> None:
    """The inclusion proof the API returns checks with `audit verify-proof` against the
    server's announced key, for the event it returns."""
    from oneoff._audit.checkpoint import InclusionProofDoc, load_public_key, verify_proof_doc

    served.call("GET", "/v1/audit/checkpoint")
    answer = served.read(server_keys["bob"], "/v1/audit/proof/inclusion", query="seq=1")
    assert answer.status == 200, answer
    doc = InclusionProofDoc.from_dict(answer.json["proof"])
    event = answer.json["event"]
    key = load_public_key(served.call("GET", "/v1/server").json["audit_public_key"].encode())
    leaf = bytes.fromhex(event["prev_hash"]) + event["body"].encode()
    assert verify_proof_doc(doc, key, leaf_data=leaf).startswith("OK: event 1 ")
    refused = served.read(server_keys["alice"], "/v1/audit/proof/inclusion", query="seq=1")
    assert refused.status == 403
    assert refused.error["exit"] == 3


def test_consistency_proof_parameters_are_checked(served: ServerProc) -> None:
    """first > second, a size with no checkpoint, or no numbers at all are refused cleanly."""
    size = served.call("GET", "/v1/audit/checkpoint").json["checkpoint"]["size"]
    good = served.call("GET", "/v1/audit/proof/consistency", query=f"first=1&second={size}")
    assert good.status == 200
    assert good.json["second"] == size
    bad = served.call("GET", "/v1/audit/proof/consistency", query=f"first={size + 1}&second={size}")
    assert bad.status == 400
    assert bad.error["exit"] == 2
    missing = served.call("GET", "/v1/audit/proof/consistency", query=f"first=0&second={size + 99}")
    assert missing.error["exit"] == 8
    assert "no checkpoint of size" in missing.error["message"]
    garbage = served.call("GET", "/v1/audit/proof/consistency", query="first=x&second=1")
    assert garbage.status == 422


def test_a_forged_cosignature_is_refused_and_audited(
    served: ServerProc, server_keys: KEYS, tmp_path: Path
) -> None:
    """A co-signature that does not verify over the stored checkpoint is refused (exit 8)
    and audited; a valid one is kept once, then reported as already stored."""
    from oneoff._audit.checkpoint import Checkpoint, generate_keypair, load_private_key
    from oneoff._audit.witness import cosign

    generate_keypair(tmp_path / "w.key", tmp_path / "w.pub")
    witness = load_private_key(tmp_path / "w.key")
    cp = Checkpoint.from_dict(served.call("GET", "/v1/audit/checkpoint").json["checkpoint"])
    cos = cosign(cp, witness, 1_800_000_000)
    raw = witness.public_key().public_bytes_raw()
    body = {
        "size": cp.size, "timestamp": cos.timestamp,
        "signature": base64.b64encode(cos.signature).decode(),
        "public_key": base64.b64encode(raw).decode(),
    }  # fmt: skip
    forged = {**body, "timestamp": cos.timestamp + 1}
    answer = served.signed(server_keys["alice"], "POST", "/v1/audit/cosignatures", forged)
    assert answer.error["exit"] == 8, answer
    assert events(served.app_dir, "audit.cosignature_refused")[-1].actor == "alice"
    first = served.signed(server_keys["alice"], "POST", "/v1/audit/cosignatures", body)
    again = served.signed(server_keys["alice"], "POST", "/v1/audit/cosignatures", body)
    assert (first.status, first.json["stored"], again.json["stored"]) == (200, True, False)
    unsigned = served.call("POST", "/v1/audit/cosignatures", body=json.dumps(body).encode())
    assert unsigned.status == 401
