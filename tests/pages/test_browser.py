"""The whole product in a real headless Chromium against a live server on PostgreSQL.

Sign up → beta balance → two-agent room → a turn with both answers and their
costs → the header balance drops by exactly the turn total → wallet ledger and
a drawn chart → staff changes a multiplier in the Django admin → the next turn
is priced with it. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
import time
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.contrib.auth import get_user_model

from billing.models import CreditTransaction, ModelPricing, PricingChange, UsageEvent
from billing.services import wallet_adjust
from chat.models import Turn, UploadedFile
from tests.factories import DEFAULT_PASSWORD, RoomFactory, UserFactory
from tests.support.browser import chromium, screenshot
from tests.support.fake_openai import FakeOpenAI

PASSWORD = "a-long-pass phrase 42"
TOKENS_RE = re.compile(r"(\d+) in · (\d+) out tokens")


def credits(text: str) -> Decimal:
    return Decimal(text.strip())


def expected_credits(input_tokens: int, output_tokens: int, multiplier: Decimal) -> Decimal:
    """The formula from PRODUCT.md, written out independently of billing.meter."""
    raw = Decimal(input_tokens + output_tokens) / Decimal(1000) * Decimal(1) * multiplier
    return raw.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def answer_figures(turn) -> dict[str, tuple[int, int, Decimal]]:
    """alias → (input tokens, output tokens, credits) as the page shows them."""
    figures = {}
    answers = turn.locator('[data-testid="answer"]')
    for index in range(answers.count()):
        answer = answers.nth(index)
        alias = answer.get_attribute("data-model")
        tokens = TOKENS_RE.search(answer.locator('[data-testid="answer-cost"]').inner_text())
        assert tokens, "each answer shows its tokens"
        shown = credits(answer.locator('[data-testid="answer-credits"]').inner_text())
        figures[alias] = (int(tokens.group(1)), int(tokens.group(2)), shown)
    return figures


def send_turn(page, text: str):
    """Type a message, press Send, wait for the new turn; checks the button is locked meanwhile."""
    turns = page.locator('[data-testid="turn"]')
    before = turns.count()
    page.fill("#composer-content", text)
    page.click("#composer-send")
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=\"turn\"]').length > n", arg=before, timeout=30_000
    )
    assert page.locator("#composer-error").is_hidden(), page.locator("#composer-error").inner_text()
    assert page.locator("#composer-send").is_enabled()
    assert page.input_value("#composer-content") == ""
    return turns.nth(before)


def header_balance(page) -> Decimal:
    return credits(page.locator('[data-testid="header-balance"]').inner_text())


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sign_up_chat_wallet_and_live_repricing(live_server, orm_in_playwright_thread):
    base = live_server.url
    User = get_user_model()
    User.objects.create_superuser("staff", "staff@example.test", PASSWORD)

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        requests_elsewhere: list[str] = []
        # No CDN, no network: every request the pages make goes to the live server.
        page.on(
            "request",
            lambda request: (
                None if request.url.startswith((base, "data:")) else requests_elsewhere.append(request.url)
            ),
        )

        # --- sign up: the beta balance is in the header ---
        page.goto(f"{base}/signup/")
        page.fill("#id_username", "ada")
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.click("button:has-text('Sign up')")
        page.wait_for_url(f"{base}/rooms/")
        assert header_balance(page) == Decimal("500.0000")

        # --- a room with two agents, each shown with its multiplier ---
        assert page.locator("label.choice", has_text="gpt-4o ×2").count() == 1
        assert page.locator("label.choice", has_text="deepseek ×0.5").count() == 1
        assert page.locator("input[name=agents][value=default]").count() == 0
        page.fill("#id_title", "Duel")
        page.check("input[name=agents][value=gpt-4o]")
        page.check("input[name=agents][value=deepseek]")
        page.click("button:has-text('Create room')")
        page.wait_for_url(re.compile(r".*/rooms/\d+/$"))
        room_url = page.url

        # --- a turn: both answers with their costs, no reload, balance drops by the total ---
        page.evaluate("window.__noReload = true")
        turn = send_turn(page, "Compare your answers: what is a prime number?")
        assert page.evaluate("window.__noReload") is True, "the turn was posted without a page reload"
        figures = answer_figures(turn)
        assert set(figures) == {"gpt-4o", "deepseek"}
        for alias, multiplier in (("gpt-4o", Decimal(2)), ("deepseek", Decimal("0.5"))):
            tokens_in, tokens_out, shown = figures[alias]
            assert shown == expected_credits(tokens_in, tokens_out, multiplier)
            assert shown > 0
        assert "unmetered" in turn.locator('[data-testid="manager-call"]').inner_text()
        total = credits(turn.locator('[data-testid="turn-total"] strong').inner_text())
        assert total == figures["gpt-4o"][2] + figures["deepseek"][2]
        balance_after_first = header_balance(page)
        assert balance_after_first == Decimal("500.0000") - total
        screenshot(page, "chat")

        # The database agrees with the page.
        ada = User.objects.get(username="ada")
        assert ada.wallet.balance == balance_after_first
        assert Turn.objects.get(room__owner=ada).credits_burned == total

        # --- a reload renders the same conversation from the server ---
        page.reload()
        assert answer_figures(page.locator('[data-testid="turn"]').first) == figures
        assert header_balance(page) == balance_after_first

        # --- wallet: figures, ledger rows and a drawn chart ---
        page.click("nav[aria-label=Main] >> text=Wallet")
        page.wait_for_url(f"{base}/wallet/")
        assert credits(page.locator('[data-testid="wallet-balance"]').inner_text()) == balance_after_first
        assert credits(page.locator('[data-testid="wallet-burned"]').inner_text()) == total
        rows = page.locator('[data-testid="ledger-row"]')
        assert rows.count() == 2  # the beta grant, and the turn's debits on one line
        ledger_text = rows.all_inner_texts()
        assert "Beta grant" in ledger_text[1] and "+500.0000" in ledger_text[1]
        assert "Turn in Duel" in ledger_text[0] and "2 model calls" in ledger_text[0]
        assert credits(rows.first.locator('[data-testid="amount"]').first.inner_text()) == -total
        rows.first.locator('[data-testid="ledger-calls"] summary').click()
        calls = rows.first.locator('[data-testid="ledger-call-amount"]').all_inner_texts()
        debits = sorted(-credits(amount) for amount in calls)  # one debit per metered call
        assert debits == sorted([figures["gpt-4o"][2], figures["deepseek"][2]])
        chart = page.wait_for_function(
            """() => {
                const canvas = document.getElementById('burn-chart');
                const chart = canvas && window.Chart && Chart.getChart(canvas);
                if (!chart || chart.animating) return null;
                const { width, height } = canvas;
                const pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted++;
                const blank = document.createElement('canvas');
                blank.width = width; blank.height = height;
                return {
                    labels: chart.data.datasets.map(d => d.label).sort(),
                    days: chart.data.labels.length,
                    painted,
                    differsFromBlank: canvas.toDataURL() !== blank.toDataURL(),
                };
            }""",
            timeout=10_000,
        ).json_value()
        assert chart["labels"] == ["deepseek", "gpt-4o"]
        assert chart["days"] == 30
        assert chart["differsFromBlank"] and chart["painted"] > 1000
        screenshot(page, "wallet")

        # --- staff changes deepseek's multiplier in the Django admin changelist ---
        staff = browser.new_context(viewport={"width": 1280, "height": 900})
        admin = staff.new_page()
        admin.goto(f"{base}/admin/login/?next=/admin/billing/modelpricing/")
        admin.fill("#id_username", "staff")
        admin.fill("#id_password", PASSWORD)
        admin.click("input[type=submit]")
        admin.wait_for_url(re.compile(r".*/admin/billing/modelpricing/.*"))
        row = admin.locator("#result_list tbody tr").filter(
            has=admin.locator("th, td").filter(has_text=re.compile(r"^\s*deepseek\s*$"))
        )
        assert row.count() == 1
        row.locator("input[name$='-multiplier']").fill("0.75")
        admin.click("#changelist-form input[name=_save]")
        admin.wait_for_load_state()
        assert admin.locator(".errornote").count() == 0, admin.locator(".errornote").inner_text()
        screenshot(admin, "admin-pricing")
        staff.close()
        assert ModelPricing.objects.get(
            model_alias="deepseek", pricing_version__is_active=True
        ).multiplier == (Decimal("0.75"))
        change = PricingChange.objects.get(model_alias="deepseek")
        assert (change.old_multiplier, change.new_multiplier, change.source) == (
            Decimal("0.5"),
            Decimal("0.75"),
            "admin",
        )

        # --- the next turn is priced with the new multiplier, exactly ---
        page.goto(room_url)
        second = send_turn(page, "And what is a perfect number?")
        figures2 = answer_figures(second)
        tokens_in, tokens_out, shown = figures2["deepseek"]
        assert shown == expected_credits(tokens_in, tokens_out, Decimal("0.75"))
        assert "×0.75" in second.locator('[data-model="deepseek"] [data-testid="answer-cost"]').inner_text()
        tokens_in, tokens_out, shown = figures2["gpt-4o"]
        assert shown == expected_credits(tokens_in, tokens_out, Decimal(2))
        total2 = credits(second.locator('[data-testid="turn-total"] strong').inner_text())
        assert total2 == figures2["gpt-4o"][2] + figures2["deepseek"][2]
        assert header_balance(page) == balance_after_first - total2
        event = UsageEvent.objects.get(
            turn__room__owner=ada, turn__content__startswith="And what", model_alias="deepseek"
        )
        assert event.multiplier == Decimal("0.75")
        assert CreditTransaction.objects.filter(wallet__user=ada).count() == 5
        screenshot(page, "chat-after-repricing")

        assert page_errors == []
        assert requests_elsewhere == []
        context.close()


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def log_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", DEFAULT_PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{base}/rooms/")


def error_text(page) -> str:
    box = page.locator("#composer-error")
    box.wait_for(state="visible", timeout=30_000)
    return box.inner_text()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_chat_errors_retry_with_the_same_key_no_double_submit_and_uploads(
    live_server, settings, orm_in_playwright_thread
):
    """Real failures from the real API: a provider 502 (a local OpenAI-protocol server that
    fails), a validation 400, an enforcement 402; a retry reuses its Idempotency-Key and
    charges once; a second click while a turn runs sends nothing; a file goes up with a turn."""
    base = live_server.url
    user = UserFactory(username="grace")
    room = RoomFactory(owner=user, title="Solo", agents=["gpt-4o"])
    settings.LLM_MAX_RETRIES = 0

    with FakeOpenAI(prompt_tokens=123, completion_tokens=45) as fake, chromium() as browser:
        settings.OPENAI_API_KEY = "sk-test-local"
        settings.OPENAI_BASE_URL = fake.base_url
        fake.fail_models = {"gpt-4o"}
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        turn_posts: list[dict] = []
        page.on(
            "request",
            # The page asks for the streamed answer (it falls back to JSON only on a 406).
            lambda request: (
                turn_posts.append(request.headers)
                if request.method == "POST"
                and request.url.endswith(f"/api/v1/rooms/{room.pk}/turns/")
                and request.headers.get("accept") == "text/event-stream"
                else None
            ),
        )
        log_in(page, base, "grace")
        page.goto(f"{base}/rooms/{room.pk}/")

        # --- the provider fails: a readable 502 message, nothing charged ---
        page.fill("#composer-content", "Hello there")
        page.click("#composer-send")
        message = error_text(page)
        assert "The model provider did not answer" in message
        assert "Nothing was charged" in message
        assert "Traceback" not in message
        assert header_balance(page) == Decimal("500.0000")
        assert page.input_value("#composer-content") == "Hello there"  # kept for the retry
        assert Turn.objects.filter(room=room).count() == 0

        # --- the provider recovers; Send again reuses the key and charges once ---
        fake.fail_models = set()
        page.click("#composer-send")
        turn = page.locator('[data-testid="turn"]').first
        turn.wait_for(timeout=30_000)
        assert page.locator("#composer-error").is_hidden()
        assert len(turn_posts) == 2
        key = turn_posts[0]["idempotency-key"]
        assert UUID_RE.match(key)
        assert turn_posts[1]["idempotency-key"] == key
        assert turn_posts[0]["x-csrftoken"]
        figures = answer_figures(turn)
        assert figures == {"gpt-4o": (123, 45, Decimal("0.3360"))}
        assert header_balance(page) == Decimal("499.6640")
        assert Turn.objects.filter(room=room).count() == 1
        assert CreditTransaction.objects.filter(wallet__user=user, kind="debit").count() == 1

        # --- while a turn runs the button is locked: a second click or Ctrl+Enter sends nothing ---
        held = []
        page.route(
            f"**/api/v1/rooms/{room.pk}/turns/",
            lambda route: route.continue_() if held else held.append(route),
        )
        page.fill("#composer-content", "Second question")
        page.click("#composer-send")
        deadline = time.monotonic() + 30
        while not held:
            assert time.monotonic() < deadline, "the second turn's request never left the page"
            page.wait_for_timeout(20)
        button = page.locator("#composer-send")
        assert button.is_disabled()
        assert button.get_attribute("aria-disabled") == "true"
        assert "Thinking" in button.inner_text()
        page.evaluate("document.getElementById('composer-send').click()")
        page.press("#composer-content", "Control+Enter")
        page.wait_for_timeout(300)
        assert len(held) == 1
        assert len(turn_posts) == 3
        held[0].continue_()
        page.locator('[data-testid="turn"]').nth(1).wait_for(timeout=30_000)
        page.unroute(f"**/api/v1/rooms/{room.pk}/turns/")
        assert button.is_enabled() and button.inner_text().strip() == "Send"
        assert turn_posts[2]["idempotency-key"] != key  # a new message gets a new key
        assert Turn.objects.filter(room=room).count() == 2
        assert header_balance(page) == Decimal("499.3280")

        # --- a file goes up with a turn; the agent reads it and the tool call is shown ---
        settings.OPENAI_API_KEY = ""  # back to the offline model, which uses the file tools
        settings.OPENAI_BASE_URL = ""
        page.set_input_files(
            "#composer-files",
            files=[{"name": "prices.csv", "mimeType": "text/csv", "buffer": b"model,multiplier\ngpt-4o,2\n"}],
        )
        page.fill("#composer-content", "Summarise the attached file")
        page.click("#composer-send")
        third = page.locator('[data-testid="turn"]').nth(2)
        third.wait_for(timeout=30_000)
        uploaded = UploadedFile.objects.get(owner=user)
        assert uploaded.name == "prices.csv"
        # The file shows by name on the turn and on the agent's tool tag.
        assert third.locator('[data-testid="turn-files"]').inner_text().strip() == "prices.csv"
        assert "file_read: prices.csv" in third.locator(".tool-calls").inner_text()
        assert page.input_value("#composer-files") == ""
        assert Turn.objects.get(room=room, content="Summarise the attached file").files.get() == uploaded

        # --- a validation error from the API (400) is a sentence, not a stack trace ---
        settings.TURN_MAX_CONTENT_CHARS = 10
        page.fill("#composer-content", "This message is longer than ten characters")
        page.click("#composer-send")
        message = error_text(page)
        assert message.startswith("That message could not be sent:")
        assert "at most 10 characters" in message
        settings.TURN_MAX_CONTENT_CHARS = 8000

        # --- enforcement on and too few credits: 402 with the estimate and the balance ---
        settings.CREDIT_ENFORCEMENT = "enforce"
        wallet = user.wallet
        wallet.refresh_from_db()
        wallet_adjust(wallet_id=wallet.pk, amount=Decimal("0.0100") - wallet.balance, description="test")
        turns_before = Turn.objects.filter(room=room).count()
        page.fill("#composer-content", "Expensive question")
        page.click("#composer-send")
        message = error_text(page)
        assert message.startswith("This turn may cost up to ")
        assert "0.0100 are available" in message and "more credits are needed" in message
        assert "Nothing was charged." in message
        assert header_balance(page) == Decimal("0.0100")  # the 402 body's balance reaches the header
        assert Turn.objects.filter(room=room).count() == turns_before
        screenshot(page, "chat-error")

        assert page_errors == []


def test_missing_chromium_fails_the_run_with_instructions(monkeypatch, tmp_path):
    from tests.support import browser

    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium-here")
    with pytest.raises(pytest.fail.Exception) as failed:
        browser.require_chromium()
    assert "Chromium not found at" in str(failed.value)
    assert "make chromium" in str(failed.value)
