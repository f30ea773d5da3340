"""Identity and authorization: SSHSIG signatures, allowed signers with groups, Cedar policies.

Names are imported on first use: every run passes through ``oneoff._auth.grant``, and an
app without ``[access]`` must not pay for parsing signatures or policies it never reads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oneoff._auth.policy import (
        ACTIONS,
        Decision,
        Policy,
        PolicySet,
        TaskInfo,
        TestResult,
        format_test_results,
        run_policy_tests,
    )
    from oneoff._auth.signers import Person, Signers
    from oneoff._auth.sshsig import SshSignature, decode, sign, verify

__all__ = [
    "ACTIONS",
    "Decision",
    "Person",
    "Policy",
    "PolicySet",
    "Signers",
    "SshSignature",
    "TaskInfo",
    "TestResult",
    "decode",
    "format_test_results",
    "run_policy_tests",
    "sign",
    "verify",
]

_HOME = {
    **dict.fromkeys(
        ("ACTIONS", "Decision", "Policy", "PolicySet", "TaskInfo", "TestResult",
         "format_test_results", "run_policy_tests"),
        "oneoff._auth.policy",
    ),
    "Person": "oneoff._auth.signers",
    "Signers": "oneoff._auth.signers",
    **dict.fromkeys(("SshSignature", "decode", "sign", "verify"), "oneoff._auth.sshsig"),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
