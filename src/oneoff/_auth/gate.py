"""The access gate of one app: verify who signed, ask Cedar, and audit every answer."""

from __future__ import annotations

import base64
import datetime as _dt
import re
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from oneoff._canonical import canonical_json
from oneoff._identity import NAMESPACE_REQUEST, Principal, Signer, iso, request_statement, utc_now
from oneoff.errors import NotPermitted, OneoffError

if TYPE_CHECKING:
    from oneoff._access import AccessConfig
    from oneoff._app import App
    from oneoff._auth.cache import AccessCache
    from oneoff._auth.files import AccessFiles
    from oneoff._auth.policy import Decision, PolicySet, TaskInfo
    from oneoff._auth.signers import Signers
    from oneoff._manifest import Environment, Task

__all__ = ["MAX_SKEW", "Gate", "task_info"]

# A signed statement is good for this long either side of our clock, and its nonce is
# remembered at least that long, so a captured statement can never be replayed.
MAX_SKEW = _dt.timedelta(minutes=5)
_NONCE = re.compile(r"^[0-9a-f]{32}$")


class Gate:
    """Identity and policy for one app with an ``[access]`` section."""

    def __init__(self, app: App, config: AccessConfig) -> None:
        self.app = app
        self.config = config

    @cached_property
    def files(self) -> AccessFiles:
        """The people and policy files as this App read them, once (the release check
        compared exactly these bytes)."""
        return self.app.access_files(self.config)

    @cached_property
    def cache(self) -> AccessCache:
        return self._cache("access-decisions.json")

    @cached_property
    def signer_cache(self) -> AccessCache:
        # Apart from decisions: a run as the OS user never reads the (large) people index.
        return self._cache("access-signers.json")

    def _cache(self, name: str) -> AccessCache:
        from oneoff._auth.cache import AccessCache

        self.app.store  # noqa: B018 - creates the state directory the cache lives in
        # Authenticated with a key outside .oneoff/ (None: memoised in this process only).
        return AccessCache(self.app.state_dir / name, key=self.app.cache_key(name))

    @cached_property
    def signers(self) -> Signers:
        from oneoff._auth.cache import person_from_json, person_to_json
        from oneoff._auth.signers import Signers

        path, digest = self.config.signers, self.files.signers_digest()
        if digest is None:
            self.files.signers_text()  # raises the precise ManifestError
        cached = self.signer_cache.signers(str(digest))
        if cached is not None:
            return Signers([person_from_json(p) for p in cached.values()], source=str(path))
        signers = Signers.parse(self.files.signers_text(), source=str(path))
        if signers.skipped:
            from oneoff._log import log

            for reason in signers.skipped:
                log("signers.line_skipped", reason, level="warning")
        people = {base64.b64encode(p.public_key).decode(): person_to_json(p) for p in signers}
        self.signer_cache.put_signers(str(digest), people)
        self.signer_cache.save()
        return signers

    def signer_of(self, signature: bytes | str) -> Signers:
        """Just the entry for the key that made ``signature`` (all verifying needs), cheaply."""
        from oneoff._auth.cache import person_from_json
        from oneoff._auth.signers import Signers
        from oneoff._auth.sshsig import decode

        digest = self.files.signers_digest()
        try:
            cached = None if digest is None else self.signer_cache.signers(digest)
            key = base64.b64encode(decode(signature).public_key).decode()
        except OneoffError:
            cached = None
        if "signers" in self.__dict__ or cached is None:
            return self.signers
        entry = cached.get(key)
        people = [person_from_json(entry)] if entry is not None else []
        return Signers(people, source=str(self.config.signers))

    @cached_property
    def policies(self) -> PolicySet:
        from oneoff._auth.policy import PolicySet

        return PolicySet.from_sources(self.files.policy_sources(), source=str(self.config.policies))

    @cached_property
    def version(self) -> str:
        return self.files.version()

    @cached_property
    def policies_digest(self) -> str:
        return self.files.policies_digest()

    def _decide_cached(self, *args: Any, **kwargs: Any) -> Decision:
        """PolicySet.decide, memoized on the policy files' digest and the whole request."""
        import hashlib

        from oneoff._auth.policy import Decision

        when = kwargs["now"].astimezone(_dt.UTC)
        request = [repr(a) for a in args] + [
            kwargs["protected"],
            kwargs["break_glass"],
            when.hour,
            when.isoweekday(),
        ]
        key = hashlib.sha256(canonical_json([self.policies_digest, request])).hexdigest()
        hit = self.cache.decision(key)
        if hit is not None:
            return Decision(hit["allowed"], hit["reasons"], hit["errors"], hit["message"])
        decision = self.policies.decide(*args, **kwargs)
        self.cache.put_decision(
            key,
            {
                "allowed": decision.allowed,
                "reasons": decision.reasons,
                "errors": decision.errors,
                "message": decision.message,
            },
        )
        self.cache.save()
        return decision

    # -- audit ---------------------------------------------------------------------------

    def refuse(self, error: OneoffError, kind: str, *, actor: str, **fields: Any) -> NoReturn:
        """Record a refusal in the audit log, then raise it."""
        payload = {"reason": error.message, **fields.pop("payload", {})}
        self.app.audit.append(kind, actor=actor, payload=payload, **fields)
        raise error

    # -- identity ------------------------------------------------------------------------

    def identify(
        self,
        signer: Signer | None,
        action: str,
        *,
        task: str,
        environment: Environment,
        plan_hash: str,
        request_id: str | None = None,
    ) -> Principal:
        """Sign a fresh statement with the operator's key and verify it, or fall back to
        the OS user where the environment allows it."""
        if signer is None:
            if environment.allow_os_user:
                from oneoff._identity import os_user

                return Principal(os_user())
            error = NotPermitted(
                f"environment {environment.name!r} accepts only signed requests; "
                "no signing key was given",
                hint="pass --key ~/.ssh/id_ed25519, or set ONEOFF_SIGNING_KEY=~/.ssh/"
                "id_ed25519.pub with the key loaded in ssh-agent",
            )
            self.refuse(
                error, "auth.refused", actor="unknown", environment=environment.name, task=task
            )
        statement = request_statement(
            action,
            app=self.app.project.name,
            task=task,
            environment=environment.name,
            plan_hash=plan_hash,
            request_id=request_id,
        )
        signature = signer.sign(canonical_json(statement), NAMESPACE_REQUEST)
        # Signed and verified in this process, the statement never crossed a boundary where
        # it could be captured, so there is nothing to replay: skip storing its nonce.
        return self.authenticate(
            statement, signature, action=action, plan_hash=plan_hash, fresh_here=True
        )

    def authenticate(
        self,
        statement: dict[str, Any],
        signature: bytes | str,
        *,
        action: str,
        plan_hash: str,
        now: _dt.datetime | None = None,
        fresh_here: bool = False,
    ) -> Principal:
        """The person who signed ``statement``; every failure is audited and NotPermitted.

        This is what a server calls with a statement and signature sent by a client.
        """
        now = now or utc_now()
        task, env = statement.get("task"), statement.get("environment")
        actor = _key_of(signature)
        where = {
            "task": task if isinstance(task, str) else None,
            "environment": env if isinstance(env, str) else None,
        }
        from oneoff._auth.sshsig import verify

        try:
            person = verify(
                canonical_json(statement),
                signature,
                namespace=NAMESPACE_REQUEST,
                allowed=self.signer_of(signature),
                now=now,
            )
        except NotPermitted as exc:
            self.refuse(exc, "auth.refused", actor=actor, **where)
        problem = _statement_problem(statement, action, plan_hash, self.app.project.name, now)
        if problem is None and not fresh_here:
            with self.app.store.tx():
                self.app.store.forget_nonces(iso(now - 2 * MAX_SKEW))
                fresh = self.app.store.remember_nonce(statement["nonce"], person.name, iso(now))
            if not fresh:
                problem = "statement replayed: its nonce was already used"
        if problem is not None:
            self.refuse(
                NotPermitted(f"request from {person.name} refused: {problem}"),
                "auth.refused",
                actor=person.name,
                **where,
            )
        return Principal(person.name, person.groups, person.fingerprint)

    # -- policy --------------------------------------------------------------------------

    def decide_operation(
        self,
        principal: Principal,
        operation: str,
        task: Task | TaskInfo,
        environment: Environment,
        *,
        break_glass: bool = False,
        plan_hash: str | None = None,
        now: _dt.datetime | None = None,
        require: bool = True,
        audit_into: list[dict[str, Any]] | None = None,
    ) -> Decision:
        """Every Cedar action ``operation`` asks (see ``oneoff._auth.operations``), each
        audited; raises NotPermitted on the first denial (unless ``require`` is false).
        ``audit_into``: a list the decisions' audit events are added to instead of being
        appended now; the caller must append them (``AuditLog.append_all``) whatever
        happens next, with the event of its outcome.

        The only way commands ask Cedar; ``policy test`` asks through the same mapping.
        """
        from oneoff._auth.operations import decide_operation

        info = task_info(task)
        when = now or utc_now()
        decision = decide_operation(
            lambda action: self.decide(
                principal, action, info, environment, break_glass=break_glass,
                plan_hash=plan_hash, now=when, require=False, audit_into=audit_into,
            ),
            operation,
            info,
        )  # fmt: skip
        if require and not decision.allowed:
            raise NotPermitted(decision.message)
        return decision

    def decide(
        self,
        principal: Principal,
        action: str,
        task: Task | TaskInfo,
        environment: Environment,
        *,
        break_glass: bool = False,
        plan_hash: str | None = None,
        now: _dt.datetime | None = None,
        require: bool = True,
        audit_into: list[dict[str, Any]] | None = None,
    ) -> Decision:
        """Cedar's decision on one action, audited (or its event added to ``audit_into``);
        raises NotPermitted when denied (unless ``require``). Commands call
        :meth:`decide_operation`, which asks every action."""
        info = task_info(task)
        decision = self._decide_cached(
            principal.name,
            sorted(principal.groups),
            action,
            info,
            environment.name,
            protected=environment.protected,
            break_glass=break_glass,
            now=now or utc_now(),
        )
        event: dict[str, Any] = {
            "kind": "access.decided",
            "actor": principal.name,
            "environment": environment.name,
            "task": info.name,
            "plan_hash": plan_hash,
            "payload": {
                "action": action,
                "allowed": decision.allowed,
                "reasons": decision.reasons,
                "errors": decision.errors,
                "break_glass": break_glass,
                "key": principal.key,
                "policy_version": self.version,
            },
        }
        if audit_into is not None:
            audit_into.append(event)
        else:
            self.app.audit.append(**event)
        if require and not decision.allowed:
            raise NotPermitted(decision.message)
        return decision


def task_info(task: Task | TaskInfo) -> TaskInfo:
    """What Cedar may know about a task (the manifest's Task, or already a TaskInfo)."""
    from oneoff._auth.policy import TaskInfo

    if isinstance(task, TaskInfo):
        return task
    return TaskInfo(
        name=task.name,
        risk=task.risk,
        locks=task.locks,
        environments=task.environments or (),
        interactive=task.interactive,
    )


def _key_of(signature: bytes | str) -> str:
    """Who a refused signature claims to be, for the audit log: its key's fingerprint."""
    from oneoff._auth.sshsig import decode

    try:
        return "key:" + decode(signature).fingerprint
    except OneoffError:
        return "unknown"


def _statement_problem(
    statement: dict[str, Any], action: str, plan_hash: str, app: str, now: _dt.datetime
) -> str | None:
    if statement.get("oneoff_statement") != 1:
        return "unknown statement version"
    for key, want in (("action", action), ("plan_hash", plan_hash), ("app", app)):
        if statement.get(key) != want:
            return f"it was signed for {key} {statement.get(key)!r}, not {want!r}"
    nonce = statement.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        return "it carries no valid nonce"
    try:
        when = _dt.datetime.fromisoformat(str(statement.get("time")).replace("Z", "+00:00"))
    except ValueError:
        return "its time is not a timestamp"
    if when.tzinfo is None or abs(now - when) > MAX_SKEW:
        return f"its time {statement.get('time')} is more than 5 minutes from ours ({iso(now)})"
    return None
