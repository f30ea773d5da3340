"""Benchmark the auth path: load 1,000 signers + 100 policies, then verify one SSHSIG + decide.

Usage: python bench/bench_auth.py [--quick]
Prints medians against the 10 ms per-request target, and what the naive cedarpy use (policy
text re-parsed and every person passed as an entity on each call) would cost instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from oneoff._auth import PolicySet, Signers, TaskInfo, sign, verify

TARGET_MS = 10.0
ACTIONS = ("plan", "run", "approve", "console", "release", "audit-export")
GROUPS = [f"team{i}" for i in range(20)]
NOW = datetime(2024, 1, 3, 14, 0, tzinfo=UTC)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm caches and lazy imports
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def write_people(directory: Path, count: int) -> Path:
    lines = []
    for i in range(count):
        key = Ed25519PrivateKey.generate()
        if i == 0:
            (directory / "signer").write_bytes(
                key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
            )
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + raw
        groups = ",".join(sorted({GROUPS[i % 20], GROUPS[(i * 7) % 20]}))
        lines.append(f"person{i} ssh-ed25519 {base64.b64encode(blob).decode()} groups={groups}")
    path = directory / "allowed_signers"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_policies(directory: Path, count: int) -> Path:
    policy_dir = directory / "policies"
    policy_dir.mkdir()
    for file_no in range(10):
        rules = []
        for n in range(count // 10):
            i = file_no * (count // 10) + n
            group, action = GROUPS[i % 20], ACTIONS[i % 6]
            if i % 5 == 4:
                rules.append(
                    f'@id("guard-{i}")\nforbid (principal, action == Oneoff::Action::"{action}", '
                    f"resource)\nwhen {{ context.protected && context.hour == {i % 24} "
                    f'&& resource.locks.contains("lock{i}") && !context.break_glass }};'
                )
            else:
                rules.append(
                    f'permit (principal in Oneoff::Group::"{group}", '
                    f'action == Oneoff::Action::"{action}", resource)\n'
                    f'when {{ context.environment != "env{i}" && resource.risk != "r{i}" }};'
                )
        (policy_dir / f"p{file_no:02}.cedar").write_text("\n\n".join(rules) + "\n")
    return policy_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    runs_load, runs_request = (5, 200) if args.quick else (21, 2000)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        signers_path = write_people(directory, 1000)
        policy_dir = write_policies(directory, 100)
        data = b"oneoff run migrate --env production"
        sig = sign(data, namespace="oneoff", key_path=directory / "signer")

        signers_ms = median_ms(lambda: Signers.load(signers_path), runs_load)
        policies_ms = median_ms(lambda: PolicySet.load(policy_dir), runs_load)
        signers = Signers.load(signers_path)
        policies = PolicySet.load(policy_dir)
        task = TaskInfo("migrate", "high", locks=("lock4",), environments=("production",))

        def request() -> bool:
            person = verify(data, sig, namespace="oneoff", allowed=signers)
            decision = policies.decide(
                person.name,
                sorted(person.groups),
                "run",
                task,
                "production",
                protected=True,
                break_glass=False,
                now=NOW,
            )
            return decision.allowed

        def verify_only() -> object:
            return verify(data, sig, namespace="oneoff", allowed=signers)

        def decide_only() -> object:
            return policies.decide(
                "person0", ["team0"], "run", task, "production",
                protected=True, break_glass=False, now=NOW,
            )  # fmt: skip

        request_ms = median_ms(request, runs_request)
        verify_ms = median_ms(verify_only, runs_request)
        decide_ms = median_ms(decide_only, runs_request)
        naive_ms = median_ms(_naive(policy_dir, signers), max(runs_request // 20, 10))

    print(f"people: 1000, policies: {len(policies)}")
    print(f"load 1000 signers            median {signers_ms:8.2f} ms")
    print(f"load 100 policies (validated) median {policies_ms:7.2f} ms")
    print(
        f"load signers + policies      total  {signers_ms + policies_ms:8.2f} ms  "
        "(once per process, not per request)"
    )
    print(f"verify SSHSIG                median {verify_ms:8.3f} ms")
    print(f"decide                       median {decide_ms:8.3f} ms")
    verdict = "OK" if request_ms <= TARGET_MS else "OVER TARGET"
    print(
        f"verify + decide              median {request_ms:8.3f} ms  target <= {TARGET_MS} ms "
        f"({request_ms / TARGET_MS:.1%} of budget) {verdict}"
    )
    print(
        f"naive decide (text + all)    median {naive_ms:8.3f} ms  "
        f"({naive_ms / decide_ms:.0f}x the cached decide)"
    )


def _naive(policy_dir: Path, signers: Signers) -> Callable[[], object]:
    """cedarpy as the README shows it: policy text re-parsed, every person passed each call."""
    import cedarpy

    text = "\n".join(p.read_text() for p in sorted(policy_dir.glob("*.cedar")))
    entities = [
        {
            "uid": {"type": "Oneoff::Person", "id": name},
            "attrs": {},
            "parents": [{"type": "Oneoff::Group", "id": g} for g in signers.person(name).groups],
        }
        for name in signers.names()
    ]
    entities += [
        {"uid": {"type": "Oneoff::Group", "id": g}, "attrs": {}, "parents": []} for g in GROUPS
    ]
    entities.append(
        {
            "uid": {"type": "Oneoff::Task", "id": "migrate"},
            "attrs": {"risk": "high", "locks": ["lock4"], "environments": [], "interactive": False},
            "parents": [],
        }
    )
    entities_json = json.dumps(entities)
    request = {
        "principal": 'Oneoff::Person::"person0"',
        "action": 'Oneoff::Action::"run"',
        "resource": 'Oneoff::Task::"migrate"',
        "context": {
            "environment": "production",
            "protected": True,
            "break_glass": False,
            "hour": 14,
            "weekday": 3,
        },
    }
    return lambda: cedarpy.is_authorized(request, text, entities_json)


if __name__ == "__main__":
    main()
