"""The console's POSTs: log in with a signed link, log out, approve with a pasted key
signature, deny. Each checks the origin; each but login checks the session's CSRF token.

Approving from the browser records an approval only when the form carries an SSHSIG by
the approver's key over the approval statement (request, plan hash, policy version,
time): the same ``record_approval`` that checks one sent by the CLI. The session cookie
alone never approves anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneoff._server.console.render import html, redirect
from oneoff.errors import ApprovalError, NotPermitted, OneoffError, UsageError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from oneoff._identity import Principal
    from oneoff._server.console.routes import Console
    from oneoff._server.console.session import Session
    from oneoff._server.errors import ApiError

__all__ = ["Actions", "deny_as"]

_MAX_FORM = 64 * 1024


class Actions:
    """POST handlers (async: they read the form, then work in a worker thread)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.ctx = console.ctx

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The urlencoded form our pages post; None when it is anything else or too big."""
        from urllib.parse import parse_qsl

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                return None
        try:
            pairs = parse_qsl(body.decode("utf-8"), strict_parsing=False, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            return None
        form: dict[str, str] = {}
        for name, value in pairs:
            if name in form:  # one value per field: no ambiguity about which one counts
                return None
            form[name] = value
        return form

    async def _checked(self, request: Request) -> tuple[Session, dict[str, str]] | Response:
        """The session and form of a same-origin POST with the right CSRF token."""
        from starlette.concurrency import run_in_threadpool

        from oneoff._server.console.session import origin_problem

        own = f"{request.url.scheme}://{request.url.netloc}"
        problem = origin_problem(request.headers, own)
        session = await run_in_threadpool(self.console.session, request)
        form = await self._form(request) if problem is None else None
        if problem is None and form is None:
            problem = "its form is missing or too large"
        if problem is None and session is None:
            return redirect("/console/login")
        if problem is None and session is not None and form is not None:
            if session.check_csrf(form.get("csrf")):
                return session, form
            problem = "its CSRF token is missing or not this session's"
        await run_in_threadpool(self._refused, request, session, f"POST refused: {problem}")
        error = NotPermitted(f"refused: {problem}", hint="reload the page and try again")
        return html(request, "error.html", status=403, session=session, error=error)

    def _refused(self, request: Request, session: Session | None, reason: str) -> None:
        actor = session.principal.name if session else "unknown"
        self.ctx.worker().app.audit.append(
            "auth.refused",
            actor=actor,
            payload={"reason": reason, "method": "POST", "path": request.url.path},
        )

    async def login(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from oneoff._server.console.session import cookie_name, origin_problem

        own = f"{request.url.scheme}://{request.url.netloc}"
        # Redeeming login links counts toward the address's failure limit like the API's
        # signatures and tokens (oneoff._server.ratelimit): an address over it is refused
        # before its link is even decoded.
        refusal = await run_in_threadpool(self._throttled, request)
        if refusal is not None:
            page = html(request, "login.html", status=429, error=refusal.error, server_url=own)
            page.headers.update(refusal.headers)
            return page
        problem = origin_problem(request.headers, own)
        form = await self._form(request) if problem is None else None
        try:
            if problem is not None or form is None:
                raise NotPermitted(f"login refused: {problem or 'no login link was sent'}")
            cookie, max_age = await run_in_threadpool(self._login, form.get("token", ""))
        except NotPermitted as exc:
            if problem is not None or form is None:  # else _login audited it
                await run_in_threadpool(self._refused, request, None, exc.message)
            await run_in_threadpool(self._failed, request)
            return html(request, "login.html", status=401, error=exc, server_url=own)
        https = request.url.scheme == "https"
        response = redirect("/console/")
        response.set_cookie(
            cookie_name(https), cookie, max_age=max_age, path="/",
            secure=https, httponly=True, samesite="strict",
        )  # fmt: skip
        return response

    def _throttled(self, request: Request) -> ApiError | None:
        import time

        from oneoff._server.ratelimit import throttled
        from oneoff._server.routing import client_address

        store = self.ctx.worker().app.store
        return throttled(store, client_address(request), time.time())

    def _failed(self, request: Request) -> None:
        import time

        from oneoff._server.routing import client_address, counted_failure

        app = self.ctx.worker().app
        counted_failure(app, client_address(request), time.time(), request.url.path)

    def _login(self, token: str) -> tuple[str, int]:
        from oneoff._auth.gate import _key_of
        from oneoff._identity import Principal, iso, utc_now
        from oneoff._server.console.session import make_cookie
        from oneoff._weblogin import MAX_SKEW, decode_token, verify_token

        gate = self.ctx.worker().gate
        now = utc_now()
        actor = "unknown"
        try:
            decoded = decode_token(token)
            actor = _key_of(decoded.signature)
            person = verify_token(
                decoded, allowed=gate.signers, server_id=self.ctx.server_id, now=now
            )
            actor = person.name
            store = gate.app.store
            with store.tx():
                store.forget_nonces(iso(now - 2 * MAX_SKEW))
                fresh = store.remember_nonce(decoded.nonce, person.name, iso(now))
            if not fresh:
                raise NotPermitted(f"login link from {person.name} refused: it was already used")
        except NotPermitted as exc:
            gate.refuse(exc, "auth.refused", actor=actor, payload={"via": "console login"})
        principal = Principal(person.name, person.groups, person.fingerprint)
        gate.app.audit.append(
            "console.login", actor=person.name, payload={"key": person.fingerprint}
        )
        return make_cookie(self.console.key, principal, self.ctx.server_id, now=now)

    async def logout(self, request: Request) -> Response:
        from oneoff._server.console.session import cookie_name

        checked = await self._checked(request)
        if not isinstance(checked, tuple):
            return checked
        response = redirect("/console/login")
        response.delete_cookie(cookie_name(request.url.scheme == "https"), path="/")
        return response

    async def approve(self, request: Request) -> Response:
        def work(session: Session, form: dict[str, str], request_id: str) -> None:
            from oneoff._auth.approvals import record_approval

            gate = self.ctx.worker().gate
            signature, time = form.get("signature", "").strip(), form.get("time", "")
            if not signature:
                raise UsageError("paste the signature ssh-keygen printed (or use the command)")
            request = gate.app.store.get_request(request_id)
            _own_signature(gate, request, signature, session.principal)
            record_approval(gate, request, signature, time)

        return await self._act(request, work)

    async def deny(self, request: Request) -> Response:
        def work(session: Session, form: dict[str, str], request_id: str) -> None:
            deny_as(self.ctx.worker().gate, request_id, session.principal, form.get("reason", ""))

        return await self._act(request, work)

    async def _act(self, request: Request, work: Any) -> Response:
        from starlette.concurrency import run_in_threadpool

        checked = await self._checked(request)
        if not isinstance(checked, tuple):
            return checked
        session, form = checked
        request_id = request.path_params["request_id"]
        try:
            await run_in_threadpool(work, session, form, request_id)
        except OneoffError as exc:
            return html(request, "error.html", status=_status(exc), session=session, error=exc)
        from urllib.parse import quote

        return redirect(f"/console/requests/{quote(request_id, safe='')}")


def _own_signature(gate: Any, request: Any, signature: str, principal: Principal) -> None:
    """Refuse (audited) a signature by another key than the session's: as over the API,
    nobody records an approval with another person's signature."""
    from oneoff._auth.sshsig import decode

    try:
        key = decode(signature).fingerprint
    except NotPermitted:
        return  # malformed: record_approval refuses it, audited
    # A key outside the pinned people is record_approval's to refuse (audited) too.
    if key != principal.key and any(entry.fingerprint == key for entry in gate.signers):
        error = NotPermitted(f"{principal.name} can record only an approval their own key signed")
        gate.refuse(
            error, "approval.refused", actor=principal.name, environment=request.environment,
            task=request.task, plan_hash=request.plan_hash,
            payload={"request": request.id, "via": "console"},
        )  # fmt: skip


def _status(exc: OneoffError) -> int:
    if isinstance(exc, NotPermitted):
        return 403
    return 409 if isinstance(exc, ApprovalError) else 400


def deny_as(gate: Any, request_id: str, principal: Principal, reason: str) -> None:
    """Deny (an approver) or withdraw (the requester) a request as a console session.

    Denying makes nothing run, so a session may do it (audited as via the console); the
    policy must still let the person approve this task here, unless they requested it.
    """
    from oneoff._breakglass import reason_problem

    if not reason.strip():
        raise UsageError("a denial needs a reason (one line)")
    problem = reason_problem(reason)
    if problem is not None:
        raise UsageError(problem.replace("--reason", "the reason"))
    from oneoff._auth.approvals import record_denial

    request = gate.app.store.get_request(request_id)
    record_denial(gate, principal, request, reason, {"via": "console", "key": principal.key})
