"""Spend a person can read, in headless Chromium on a live server (PostgreSQL).

A turn's cost opens into its formula; the usage page totals it; the wallet groups
its debits under one line that opens to the calls and links back to the turn; the
chart names today and its tooltip shows 4-decimal figures; the low-balance banner
shows until staff grant credits from the Django admin; and on a 390 px wide phone
the wallet and usage tables are stacked rows with every amount inside the screen,
and the chat composer stays in reach. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from billing.models import CreditTransaction
from billing.services import DebitLine, wallet_adjust, wallet_debit_many
from chat.models import Message
from tests.factories import DEFAULT_PASSWORD, RoomFactory, TurnFactory, UsageEventFactory, UserFactory
from tests.support.browser import chromium, screenshot
from tests.support.chat_page import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""

# Every amount cell on the page: inside the viewport horizontally and not clipped by its own box.
AMOUNTS_IN_VIEW = """() => {
  const width = document.documentElement.clientWidth;
  const cells = [...document.querySelectorAll('[data-testid="amount"]')];
  return {
    width,
    pageWidth: document.documentElement.scrollWidth,
    cells: cells.map(cell => {
      const box = cell.getBoundingClientRect();
      return {
        text: cell.textContent.trim(),
        left: box.left, right: box.right, width: box.width,
        clipped: cell.scrollWidth > cell.clientWidth + 1,
        inside: box.left >= 0 && box.right <= width,
      };
    }),
  };
}"""


def committed_turn(user, room, question: str, answers: dict[str, str], calls: list[tuple]):
    """A turn as a commit leaves it: messages, usage rows, one debit per metered call."""
    turn = TurnFactory(room=room, content=question)
    Message.objects.create(turn=turn, position=0, role="user", content=question)
    for position, (alias, text) in enumerate(answers.items(), start=1):
        Message.objects.create(
            turn=turn, position=position, role="assistant", model_alias=alias, content=text
        )
    events = [
        UsageEventFactory(
            turn=turn,
            model_alias=alias,
            purpose=purpose,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            multiplier=Decimal(multiplier),
            credits_burned=Decimal(credits),
            metered=purpose != "manager",
            usage_source=source,
        )
        for alias, purpose, tokens_in, tokens_out, multiplier, credits, source in calls
    ]
    with transaction.atomic():
        wallet_debit_many(
            user_id=user.pk,
            lines=[DebitLine(amount=e.credits_burned, usage_event_id=e.pk) for e in events if e.metered],
        )
    turn.credits_burned = sum((e.credits_burned for e in events), Decimal(0))
    turn.save(update_fields=["credits_burned"])
    return turn


@pytest.fixture
def ada():
    """Ada's two-agent room with one committed turn, then a balance brought under the banner's 50."""
    user = UserFactory(username="ada")
    room = RoomFactory(owner=user, title="Duel", agents=["gpt-4o", "deepseek"])
    turn = committed_turn(
        user,
        room,
        "What is a prime?",
        {"gpt-4o": "A number with two divisors.", "deepseek": "Divisible by 1 and itself."},
        [
            ("default", "manager", 40, 5, "1.0000", "0", "provider"),
            # The example: a one-line question carrying 1,534 tokens of history.
            ("gpt-4o", "agent", 1534, 31, "2.0000", "3.1300", "provider"),
            ("deepseek", "agent", 50, 10, "0.5000", "0.0300", "provider"),
            ("deepseek", "agent", 60, 15, "0.5000", "0.0375", "estimated"),
        ],
    )
    wallet = user.wallet
    wallet.refresh_from_db()
    assert wallet.balance == Decimal("496.8025")
    wallet_adjust(wallet_id=wallet.pk, amount=Decimal("-456.8025"), description="Test: spend it down")
    return user, room, turn


def test_formula_totals_grouped_ledger_chart_banner_and_admin_grant(
    live_server, ada, orm_in_playwright_thread
):
    base = live_server.url
    user, room, turn = ada
    get_user_model().objects.create_superuser("staff", "staff@example.test", DEFAULT_PASSWORD)

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(RECORD_CSP)
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        log_in(page, base, "ada")

        # --- the banner on every page; the base price next to the multipliers ---
        banner = page.locator('[data-testid="low-balance"]')
        assert banner.is_visible()
        assert "40.0000 credits available, under 50" in banner.inner_text()
        assert "ask your administrator" in banner.inner_text()
        base_price = page.locator('[data-testid="base-price"]').inner_text()
        assert base_price.startswith("Base price 1 credit per 1,000 tokens")

        # --- the formula: closed until asked, then the answer's own numbers ---
        page.goto(f"{base}/rooms/{room.pk}/")
        assert page.locator('[data-testid="low-balance"]').is_visible()
        gpt = page.locator('[data-testid="answer"][data-model="gpt-4o"]')
        formula = gpt.locator('[data-testid="formula"]')
        assert formula.is_hidden()
        gpt.locator("summary").click()
        formula.wait_for(state="visible")
        assert gpt.locator('[data-testid="answer-cost"]').evaluate("d => d.open") is True
        text = formula.inner_text()
        assert "1534 input + 31 output = 1565 tokens" in text
        assert "1565 ÷ 1000 × 1 base price × 2 multiplier = 3.1300 credits" in text
        assert "not how it splits" in text
        deepseek = page.locator('[data-testid="answer"][data-model="deepseek"]')
        assert "(estimated)" in deepseek.locator("summary").inner_text()
        deepseek.locator("summary").click()
        ds_text = deepseek.locator('[data-testid="formula"]').inner_text()
        assert "60 ÷ 1000 × 1 base price × 0.5 multiplier = 0.0300 credits" in ds_text
        assert "75 ÷ 1000 × 1 base price × 0.5 multiplier = 0.0375 credits" in ds_text
        assert "0.0300 + 0.0375 = 0.0675 credits" in ds_text
        assert deepseek.locator('[data-testid="formula-estimated"]').count() == 1
        screenshot(page, "spend-formula")

        # --- usage: totals for the filter, by model and by day ---
        page.goto(f"{base}/usage/")
        assert page.locator('[data-testid="total-credits"]').inner_text() == "3.1975"
        assert page.locator('[data-testid="total-calls"]').inner_text() == "4"
        by_model = page.locator('[data-testid="by-model-row"][data-model="deepseek"]').inner_text()
        assert "0.0675" in by_model
        page.select_option("#id_model_alias", "gpt-4o")
        page.click("button:has-text('Filter')")
        page.wait_for_url(re.compile(r".*model_alias=gpt-4o.*"))
        assert page.locator('[data-testid="total-credits"]').inner_text() == "3.1300"
        assert page.locator('[data-testid="by-day-row"]').count() == 1

        # --- wallet: a turn's debits are one line, opening to its calls, linking to the turn ---
        page.goto(f"{base}/wallet/")
        lines = page.locator('[data-testid="ledger-row"]')
        assert lines.count() == 3  # the adjustment, the turn, the beta grant
        line = lines.nth(1)
        assert line.get_attribute("data-turn") == str(turn.pk)
        amounts = line.locator('[data-testid="amount"]').all_inner_texts()
        assert amounts == ["-3.1975", "496.8025"]
        calls = line.locator('[data-testid="ledger-call"]')
        assert calls.count() == 3 and calls.first.is_hidden()
        line.locator('[data-testid="ledger-calls"] summary').click()
        calls.first.wait_for(state="visible")
        assert sorted(line.locator('[data-testid="ledger-call-amount"]').all_inner_texts()) == [
            "-0.0300",
            "-0.0375",
            "-3.1300",
        ]
        link = line.locator('[data-testid="ledger-turn-link"]')
        assert link.inner_text() == "Turn in Duel"
        link.click()
        page.wait_for_url(f"{base}/rooms/{room.pk}/#turn-{turn.pk}")
        assert page.locator(f"#turn-{turn.pk}").is_visible()

        # --- the chart: today's bar is labelled; the tooltip shows the server's 4-decimal figures ---
        page.goto(f"{base}/wallet/")
        chart = page.wait_for_function(
            """() => {
                const chart = window.Chart && Chart.getChart(document.getElementById('burn-chart'));
                if (!chart || !chart.scales.x) return null;
                const last = chart.data.labels.length - 1;
                chart.tooltip.setActiveElements(
                    chart.data.datasets.map((_, i) => ({ datasetIndex: i, index: last })), { x: 10, y: 10 });
                chart.update();
                return {
                    ticks: chart.scales.x.ticks.map(t => t.label),
                    title: chart.tooltip.title,
                    body: chart.tooltip.body.flatMap(b => b.lines),
                    footer: chart.tooltip.footer,
                };
            }""",
            timeout=10_000,
        ).json_value()
        assert chart["ticks"][-1] == "Today"
        assert chart["ticks"].count("Today") == 1
        assert chart["title"] == [f"{turn.created_at.date().isoformat()} (today)"]
        assert sorted(chart["body"]) == ["deepseek: 0.0675 credits", "gpt-4o: 3.1300 credits"]
        assert chart["footer"] == ["Day total: 3.1975 credits"]
        screenshot(page, "spend-wallet")

        # --- staff grant credits from the admin; the banner goes ---
        staff = browser.new_context(viewport={"width": 1280, "height": 900})
        staff.add_init_script(RECORD_CSP)
        admin = staff.new_page()
        admin.goto(f"{base}/admin/login/?next=/admin/billing/creditwallet/")
        admin.fill("#id_username", "staff")
        admin.fill("#id_password", DEFAULT_PASSWORD)
        admin.click("input[type=submit]")
        admin.wait_for_url(re.compile(r".*/admin/billing/creditwallet/.*"))
        wallet_row = admin.locator("#result_list tbody tr").filter(has_text="ada")
        wallet_row.locator("input[name=_selected_action]").check()
        admin.select_option("select[name=action]", "grant_credits")
        admin.click("button[name=index]")
        admin.fill("#id_amount", "20")
        admin.fill("#id_reason", "Workshop")
        screenshot(admin, "spend-admin-grant")
        admin.click("input[value='Grant credits']")
        admin.wait_for_url(re.compile(r".*/admin/billing/creditwallet/$"))
        assert "Granted 20.0000 credits to 1 wallet: ada" in admin.locator(".messagelist").inner_text()
        assert admin.evaluate("window.__csp") == []
        staff.close()
        grant = CreditTransaction.objects.get(wallet__user=user, description__startswith="Staff grant")
        assert (grant.amount, grant.balance_after) == (Decimal("20.0000"), Decimal("60.0000"))

        page.goto(f"{base}/rooms/")
        assert page.locator('[data-testid="low-balance"]').count() == 0
        assert page.locator('[data-testid="header-balance"]').inner_text() == "60.0000"

        assert page.evaluate("window.__csp") == []
        assert page_errors == []
        context.close()


def test_phone_layout_keeps_every_amount_in_view_and_the_composer_in_reach(
    live_server, ada, orm_in_playwright_thread
):
    base = live_server.url
    user, _, _ = ada
    # Enough to scroll: more turns, long room titles and large figures in every table.
    long_room = RoomFactory(
        owner=user, title="A room with a rather long title for a phone", agents=["gpt-4o"]
    )
    for n in range(4):
        committed_turn(
            user,
            long_room,
            f"Question {n}: " + "tell me more " * 20,
            {"gpt-4o": "An answer. " * 60},
            [
                (
                    "gpt-4o",
                    "agent",
                    123456 + n,
                    7890,
                    "2.0000",
                    str(Decimal(123456 + n + 7890) * 2 / 1000),
                    "provider",
                )
            ],
        )

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        page = context.new_page()
        log_in(page, base, "ada")

        for path, name in (("/wallet/", "phone-wallet"), ("/usage/", "phone-usage")):
            page.goto(f"{base}{path}")
            page.wait_for_load_state("networkidle")
            screenshot(page, name)
            found = page.evaluate(AMOUNTS_IN_VIEW)
            assert found["width"] == 390
            assert found["pageWidth"] <= 390, f"{path} scrolls sideways: {found['pageWidth']} px"
            assert len(found["cells"]) >= 5, path
            cut = [cell for cell in found["cells"] if not cell["inside"] or cell["clipped"]]
            assert cut == [], f"{path}: amounts cut off: {cut}"
            # Stacked rows: each amount cell carries its column's name.
            label = page.locator('table [data-testid="amount"]').first.evaluate(
                "cell => getComputedStyle(cell, '::before').content"
            )
            assert label.strip('"') in {"Credits", "Amount"}, label

        # The grouped ledger line opens on a phone too, every call's amount inside the screen.
        page.goto(f"{base}/wallet/")
        page.locator('[data-testid="ledger-calls"] summary').first.click()
        for box in [c.bounding_box() for c in page.locator('[data-testid="ledger-call-amount"]').all()]:
            if box:
                assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box

        # The chat page: the composer stays on screen while the conversation scrolls.
        page.goto(f"{base}/rooms/{long_room.pk}/")
        assert page.evaluate("document.documentElement.scrollHeight") > 2 * 844
        page.evaluate("window.scrollTo(0, 0)")
        send = page.locator("#composer-send").bounding_box()
        assert send and send["y"] >= 0 and send["y"] + send["height"] <= 844, send
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.fill("#composer-content", "typed while at the top of the page")
        screenshot(page, "phone-chat")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
        send = page.locator("#composer-send").bounding_box()
        assert send and send["y"] + send["height"] <= 844, send
        context.close()
