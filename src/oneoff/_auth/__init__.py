"""Identity and authorization: SSHSIG signatures, allowed signers with groups, Cedar policies."""

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
