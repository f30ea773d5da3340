"""The web console in a real browser (Debian's chromium, Playwright) against a real server.

Two people, real keys: alice requests from the CLI, bob reviews and approves in the
browser with a signature his key made, carol approves by running the `oneoff approve
--server` command the page shows, and bob's page shows it without a reload. Live output,
secrets, CSRF and XSS are tried the way an attacker would: from another origin, with a
forged token, with ``<script>`` in what is shown.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _browser import chromium, need_browser
from _serverproc import ServerProc
from oneoff._app import open_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS_DESCRIPTION = "<script>alert('description')</script><img src=x onerror=\"alert('img')\">"
XSS_PARAM = "<script>alert('param')</script>"
SECRET = "s3cr3t-console-value-8472"
EXTRA = f"""
[tasks.talk]
description = {json.dumps(XSS_DESCRIPTION)}
argv = ["python", "talk.py", "{{name}}"]
# A pattern lets HTML characters through (a plain string param refuses shell syntax).
params.name = {{ type = "string", pattern = ".{{1,200}}" }}
"""
TALK = """
import os, sys, time
print("hello", sys.argv[1], flush=True)
print("token", os.environ["API_TOKEN"], flush=True)
print("waiting for go", flush=True)
end = time.time() + 120
while not os.path.exists("go") and time.time() < end:
    time.sleep(0.05)
print("done talking", flush=True)
"""


@pytest.fixture
def console(
    tmp_path: Path, server_keys: dict[str, Path], server_factory: Callable[..., ServerProc]
) -> ServerProc:
    """A server whose app has the `talk` task (hostile description) and a secret, and
    whose policy lets the dba group export (read) the audit log."""
    from _access_kit import make_access_app

    need_browser()
    root = make_access_app(
        tmp_path / "served", server_keys, extra=EXTRA, extra_files={"talk.py": TALK}
    )
    with open(root / ".env", "a") as env:
        env.write(f"API_TOKEN={SECRET}\n")
    (root / "policies" / "audit.cedar").write_text(
        '@id("dba-export")\npermit (principal in Oneoff::Group::"dba", '
        'action == Oneoff::Action::"audit-export", resource);\n'
    )
    return server_factory(root)


def url(server: ServerProc, path: str = "") -> str:
    return f"http://{server.host}:{server.port}{path}"


def oneoff(server: ServerProc, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI, in the served app's directory (the one-machine trial's shared store)."""
    done = subprocess.run(
        [sys.executable, "-m", "oneoff", *args],
        cwd=server.app_dir, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr
    return done


def login_link(server: ServerProc, key: Path) -> str:
    return oneoff(
        server, "login", "--web", "--server", url(server), "--key", str(key)
    ).stdout.strip()


def log_in(context: Any, server: ServerProc, key: Path) -> Any:
    page = context.new_page()
    page.goto(login_link(server, key))
    page.wait_for_url(url(server, "/console/"))
    return page


def request_as(server: ServerProc, key: Path, task: str, env: str, *params: str) -> str:
    args = [a for p in params for a in ("-p", p)]
    done = oneoff(server, "request", task, "--env", env, *args, "--key", str(key), "--json")
    return str(json.loads(done.stdout)["id"])


def events(server: ServerProc, kind: str) -> list[Any]:
    app = open_app(server.app_dir)
    try:
        return [e for e in app.audit.events(kind=kind)]
    finally:
        app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


def test_a_login_link_opens_a_session_once(console: ServerProc, server_keys, browser) -> None:
    """The CLI's link logs bob in with an HttpOnly, SameSite=Strict cookie and leaves the
    address bar clean; the same link, opened again, is refused and audited."""
    link = login_link(console, server_keys["bob"])
    page = browser.new_page()
    page.goto(link)
    page.wait_for_url(url(console, "/console/"))
    assert page.inner_text("#who") == "bob"
    assert "#" not in page.url
    (cookie,) = browser.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert [e.actor for e in events(console, "console.login")] == ["bob"]

    browser.clear_cookies()
    again = browser.new_page()
    again.goto(link)
    again.wait_for_selector("#error")
    assert "already used" in again.inner_text("#error")
    assert browser.cookies() == []
    refused = [e.payload["reason"] for e in events(console, "auth.refused")]
    assert any("already used" in reason for reason in refused)
    # Without a session, every page sends the person to the login page.
    again.goto(url(console, "/console/runs"))
    assert again.url == url(console, "/console/login")


def test_two_people_approve_one_plan_and_the_page_follows(
    console: ServerProc, server_keys, browser
) -> None:
    """alice requests from the CLI and bob's open page lists it without a reload; bob sees
    the plan as stored and approves with his key's signature pasted into the page; carol
    runs the page's `oneoff approve --server` command and bob's page shows it without a
    reload; the request then runs."""
    page = log_in(browser, console, server_keys["bob"])
    assert page.locator("#none-pending").count() == 1
    request_id = request_as(console, server_keys["alice"], "migrate", "production", "target=0042")
    page.click(f"#pending a:text('{request_id}')")
    assert "0042" in page.inner_text("#argv")
    assert "2 approval(s) from group 'dba'" in page.inner_text("#approvals")
    assert request_id in page.inner_text("#approve-command")

    # A signature by someone else's key (mallory: in no allowed signers) is refused.
    statement = base64.b64decode(page.inner_text("#sign-command").split()[1])
    forged = ssh_sign(server_keys["mallory"], statement)
    page.fill("#approve-form textarea", forged)
    page.click("#approve-form button")
    assert "not in" in page.inner_text("#error")
    page.go_back()
    page.reload()

    statement = base64.b64decode(page.inner_text("#sign-command").split()[1])
    page.fill("#approve-form textarea", ssh_sign(server_keys["bob"], statement))
    page.click("#approve-form button")
    page.wait_for_selector(".approval:has-text('bob approved')")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    # carol runs the command the page shows (with her key), through the server.
    command = page.inner_text("#approve-command").split()
    assert command[:2] == ["oneoff", "approve"]
    key = command.index("--key") + 1
    command[key] = str(server_keys["carol"])
    oneoff(console, *command[1:], "--yes")
    page.wait_for_selector(".approval:has-text('carol approved')")
    assert navigations == []
    oneoff(console, "run", "migrate", "--env", "production", "--request", request_id,
           "--key", str(server_keys["alice"]))  # fmt: skip
    page.wait_for_selector("#status:text('used')")
    approvers = sorted(e.actor for e in events(console, "request.approved"))
    assert approvers == ["bob", "carol"]


def ssh_sign(key: Path, data: bytes) -> str:
    """What a person's own ssh-keygen prints for the statement the page shows."""
    done = subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", "oneoff-approve", "-f", str(key)],
        input=data, capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout.decode()


def wait_for_run(server: ServerProc, task: str, runner: subprocess.Popen[bytes]) -> str:
    """The id of ``task``'s run once the store has it (polling a real condition)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert runner.poll() is None, f"the run ended early: {runner.returncode}"
        app = open_app(server.app_dir)
        try:
            runs = app.store.list_runs(task=task, limit=1)
        finally:
            app.close()
        if runs:
            return runs[0].id
        time.sleep(0.05)
    raise AssertionError(f"no run of {task} appeared")


def test_live_output_streams_redacted_and_escaped(
    console: ServerProc, server_keys, browser
) -> None:
    """A running task's output appears in the open page as it is printed (no reload), the
    secret it prints never reaches the page, and `<script>` in it is text that never runs."""
    dialogs: list[str] = []
    page = log_in(browser, console, server_keys["bob"])
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    runner = subprocess.Popen(
        [sys.executable, "-m", "oneoff", "run", "talk", "--env", "development",
         "-p", f"name={XSS_PARAM}"],
        cwd=console.app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        run_id = wait_for_run(console, "talk", runner)
        page.goto(url(console, f"/console/runs/{run_id}"))
        page.wait_for_selector("#output:has-text('waiting for go')")
        assert "running" in page.inner_text("#run-status")
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        (console.app_dir / "go").write_text("")
        page.wait_for_selector("#output:has-text('done talking')")
        page.wait_for_selector("#run-status:has-text('succeeded')")
        assert navigations == []
    finally:
        (console.app_dir / "go").write_text("")  # never leave the task waiting
        assert runner.wait(timeout=120) == 0
    output = page.inner_text("#output")
    assert f"hello {XSS_PARAM}" in output
    assert output.count("waiting for go") == 1  # what the page was rendered with is not resent
    assert SECRET not in page.content()
    assert "token " in output
    page.reload()
    assert SECRET not in page.content()
    assert dialogs == []

    # The run is in the history's filters and its events are proven by a checkpoint.
    page.goto(url(console, "/console/runs?task=talk&status=succeeded"))
    assert run_id in page.inner_text("#runs")
    page.goto(url(console, "/console/runs?task=talk&status=failed"))
    assert run_id not in page.inner_text("#runs")
    page.goto(url(console, f"/console/audit?run={run_id}"))
    proofs = page.locator("#audit td.proof").all_inner_texts()
    assert proofs
    assert all(p.startswith("in signed checkpoint") for p in proofs), proofs


def test_script_in_a_description_or_param_is_shown_as_text(
    console: ServerProc, server_keys, browser
) -> None:
    """A task description and a param holding `<script>` are escaped on the request page:
    they read back as the same text, no dialog opens, no script element carries them."""
    request_id = request_as(
        console, server_keys["alice"], "talk", "development", f"name={XSS_PARAM}"
    )
    dialogs: list[str] = []
    page = log_in(browser, console, server_keys["bob"])
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url(console, f"/console/requests/{request_id}"))
    assert page.inner_text("#description") == XSS_DESCRIPTION
    assert XSS_PARAM in page.locator("code.param").all_inner_texts()
    assert page.locator("#plan-env").inner_text().count("********") == 1
    assert SECRET not in page.content()
    scripts = page.locator("script").evaluate_all("els => els.map(e => e.src + e.text)")
    assert all("alert" not in s for s in scripts), scripts
    assert page.locator("img[src='x']").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == []
    headers = page.request.get(url(console, f"/console/requests/{request_id}")).headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_a_post_without_the_session_token_or_from_elsewhere_is_refused(
    console: ServerProc, server_keys, browser
) -> None:
    """Deny needs this session's CSRF token and our origin: a missing or wrong token, a
    foreign Origin, and a real cross-site form all fail; the same POST done right works."""
    request_id = request_as(console, server_keys["alice"], "migrate", "production")
    page = log_in(browser, console, server_keys["bob"])
    page.goto(url(console, f"/console/requests/{request_id}"))
    token = page.locator("#deny-form input[name=csrf]").get_attribute("value")
    target = url(console, f"/console/requests/{request_id}/deny")
    own = {"Origin": url(console)}

    def post(form: dict[str, str], headers: dict[str, str]) -> int:
        answer = page.request.post(target, form=form, headers=headers, max_redirects=0)
        return int(answer.status)

    assert post({"reason": "no token"}, own) == 403
    assert post({"reason": "wrong", "csrf": "A" * 43}, own) == 403
    assert post({"reason": "elsewhere", "csrf": token}, {"Origin": "http://evil.example"}) == 403

    # A real attack page on another site posting the deny form: the cookie is not sent.
    evil = (
        f'<form id="f" method="post" action="{target}"><input name="reason" value="csrf">'
        f'<input name="csrf" value="{token}"></form><script>f.submit()</script>'
    )
    attacker = browser.new_page()
    attacker.route(
        "http://evil.example/**", lambda route: route.fulfill(body=evil, content_type="text/html")
    )
    attacker.goto("http://evil.example/")
    attacker.wait_for_url(target)
    assert "comes from http://evil.example" in attacker.inner_text("#error")
    assert status_of(console, request_id) == "pending"

    assert post({"reason": "done right", "csrf": token}, own) == 303
    assert status_of(console, request_id) == "denied"
    (denied,) = events(console, "request.denied")
    assert denied.actor == "bob"
    assert denied.payload["via"] == "console"


def status_of(server: ServerProc, request_id: str) -> str:
    app = open_app(server.app_dir)
    try:
        return app.store.get_request(request_id).status
    finally:
        app.close()


def test_break_glass_runs_are_listed_for_review(console: ServerProc, server_keys, browser) -> None:
    """A break-glass run shows on the review page with who ran it and why."""
    oneoff(console, "run", "noop", "--env", "production", "--break-glass",
           "--reason", "<b>db on fire</b>", "--key", str(server_keys["dave"]))  # fmt: skip
    page = log_in(browser, console, server_keys["bob"])
    page.goto(url(console, "/console/break-glass"))
    table = page.inner_text("#break-glass")
    assert "dave" in table
    assert "<b>db on fire</b>" in table
