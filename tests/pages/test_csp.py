"""Content-Security-Policy: on every response, and no page violates it in a real Chromium.

Every page a person can reach (signed out, signed in, staff in the Django admin,
the API docs, the error pages) is loaded in headless Chromium with a listener
for `securitypolicyviolation` installed before any page script runs, and the
chat page sends a turn so its streaming script runs too. Any violation, any
console report of one, or a page without the header fails the test.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tests.factories import RoomFactory
from tests.support.browser import chromium

PASSWORD = "a-long-pass phrase 42"
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.mark.django_db
def test_every_response_carries_the_policy(client):
    for path in ("/login/", "/signup/", "/healthz", "/api/v1/users/me/wallet", "/no-such-page/"):
        policy = client.get(path)["Content-Security-Policy"]
        assert "script-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, path
        assert "frame-ancestors 'none'" in policy


@pytest.mark.django_db
def test_no_template_has_an_inline_script_or_handler():
    from pathlib import Path

    templates = Path(__file__).resolve().parents[2] / "templates"
    for template in templates.rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), f"inline <script> in {template}"
        assert not re.search(r"\son[a-z]+\s*=", text), f"inline event handler in {template}"
        assert "javascript:" not in text, template


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_no_page_violates_the_policy_in_chromium(live_server, orm_in_playwright_thread):
    base = live_server.url
    staff = get_user_model().objects.create_superuser("staff", "staff@example.test", PASSWORD)
    room = RoomFactory(owner=staff, agents=["gpt-4o", "deepseek"])
    signed_out = ["/login/", "/signup/", "/no-such-page/", "/rooms/?q=%00"]
    signed_in = [
        "/rooms/",
        f"/rooms/{room.pk}/",
        "/wallet/",
        "/usage/",
        "/password/",
        "/api/docs/",
        "/admin/",
        "/admin/billing/modelpricing/",
        "/admin/accounts/user/",
        f"/admin/accounts/user/{staff.pk}/change/",
        "/admin/accounts/user/add/",
    ]
    violations: list[str] = []
    missing_header: list[str] = []

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        context.add_init_script(RECORD_VIOLATIONS)
        page = context.new_page()
        page.on(
            "console",
            lambda message: (
                violations.append(f"console: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )

        def visit(path: str) -> None:
            response = page.goto(f"{base}{path}")
            if response is None or "content-security-policy" not in response.headers:
                missing_header.append(path)
            page.wait_for_load_state("networkidle")
            violations.extend(f"{path}: {entry}" for entry in page.evaluate("window.__csp"))

        for path in signed_out:
            visit(path)

        page.goto(f"{base}/login/")
        page.fill("#id_username", "staff")
        page.fill("#id_password", PASSWORD)
        page.click("button:has-text('Log in')")
        page.wait_for_url(f"{base}/rooms/")
        for path in signed_in:
            visit(path)

        # The chat page's script at work: estimate, send, stream, render the answers.
        visit(f"/rooms/{room.pk}/")
        page.fill("#composer-content", "What is a prime number?")
        page.click("#composer-send")
        page.wait_for_function(
            "() => document.querySelectorAll('[data-testid=\"turn\"]').length > 0", timeout=30_000
        )
        violations.extend(f"turn: {entry}" for entry in page.evaluate("window.__csp"))
        visit("/wallet/")  # now with a chart to draw

    assert not missing_header, missing_header
    assert not violations, "\n".join(violations)
    assert Client().get("/login/")["Content-Security-Policy"]
