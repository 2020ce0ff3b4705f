"""The estimate next to Send, in Chromium on a live server: who will answer and about what it
costs, updated as you type and when you attach a file; the 402 next step in enforce mode."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import CreditWallet
from billing.services import wallet_adjust
from chat.services import turn_quote_for
from tests.factories import RoomFactory, UserFactory
from tests.support.browser import chromium, screenshot
from tests.support.chat_page import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
QUOTE_HAS = "text => document.getElementById('composer-quote').textContent.includes(text)"
QUOTE_CHANGED = (
    "old => { const t = document.getElementById('composer-quote').textContent; return t && t !== old; }"
)


def test_the_quote_follows_what_you_type_and_attach(live_server, orm_in_playwright_thread, tmp_path):
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o", "deepseek"])
    notes = tmp_path / "notes.txt"
    notes.write_text("a long line of notes to read " * 300)

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, live_server.url, user.username)
        page.goto(f"{live_server.url}/rooms/{room.pk}/")
        quote = page.locator("#composer-quote")

        page.fill("#composer-content", "@gpt-4o what is a prime?")
        expected = turn_quote_for(user=user, room_id=room.pk, content="@gpt-4o what is a prime?")
        page.wait_for_function(QUOTE_HAS, arg=f"about {expected.credits_low}–{expected.credits_high} credits")
        assert quote.inner_text().startswith("gpt-4o will answer")

        page.fill("#composer-content", "what is a prime?")
        page.wait_for_function(QUOTE_HAS, arg="manager picks")

        page.fill("#composer-content", "@claude-sonnet hi")
        page.wait_for_function(QUOTE_HAS, arg="not an agent of this room")

        page.fill("#composer-content", "@gpt-4o summarize my notes")
        page.wait_for_function(QUOTE_HAS, arg="gpt-4o will answer")
        before = quote.inner_text()
        page.set_input_files("#composer-files", str(notes))
        page.wait_for_function(QUOTE_CHANGED, arg=before)
        assert "at most" in quote.inner_text(), quote.inner_text()
        high = lambda text: Decimal(text.rsplit("at most ", 1)[1].rstrip(")"))  # noqa: E731
        assert high(quote.inner_text()) > high(before)
        screenshot(page, "chat-quote")


def test_a_refused_turn_says_what_is_missing_and_what_to_do(live_server, orm_in_playwright_thread, settings):
    settings.CREDIT_ENFORCEMENT = "enforce"
    user = UserFactory()
    room = RoomFactory(owner=user, agents=["gpt-4o"])
    wallet = CreditWallet.objects.get(user=user)
    wallet_adjust(wallet_id=wallet.pk, amount=Decimal("0.25") - wallet.balance, description="test")

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        log_in(page, live_server.url, user.username)
        page.goto(f"{live_server.url}/rooms/{room.pk}/")
        page.fill("#composer-content", "hello")
        page.click("#composer-send")
        error = page.locator("#composer-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "0.2500 are available" in text and "more credits are needed" in text
        assert "administrator" in text and "Nothing was charged" in text
