"""The wallet page: figures, ledger pagination, chart data, only the user's own data."""

import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from billing.models import CreditTransaction, UsageEvent
from billing.selectors import ledger_lines, usage_daily_by_model
from billing.services import DebitLine, wallet_debit, wallet_debit_many, wallet_grant
from tests.factories import RoomFactory, TurnFactory, UsageEventFactory, UserFactory

pytestmark = pytest.mark.django_db


def _rows(html: str) -> int:
    return html.count('data-testid="ledger-row"')


def test_wallet_requires_login(client):
    response = client.get("/wallet/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/wallet/"


def test_wallet_shows_balance_lifetime_totals_and_ledger(client):
    user = UserFactory()
    wallet_id = user.wallet.pk
    wallet_debit(wallet_id=wallet_id, amount=Decimal("1.2345"), description="turn 1")
    wallet_grant(wallet_id=wallet_id, amount=Decimal("10"), description="top-up")
    other = UserFactory()
    wallet_debit(wallet_id=other.wallet.pk, amount=Decimal("77.7777"), description="someone else's turn")
    client.force_login(user)

    response = client.get("/wallet/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="wallet-balance">508.7655<' in html
    assert 'data-testid="wallet-granted">510.0000<' in html
    assert 'data-testid="wallet-burned">1.2345<' in html
    assert _rows(html) == 3
    # Newest first, signed amounts and balance_after as stored.
    assert html.index("top-up") < html.index("turn 1") < html.index("Beta grant")
    assert ">-1.2345<" in html
    assert ">+10.0000<" in html
    assert "77.7777" not in html
    assert "someone else" not in html


def test_wallet_ledger_is_paginated(client):
    user = UserFactory()
    for n in range(30):
        wallet_debit(wallet_id=user.wallet.pk, amount=Decimal("0.0001"), description=f"debit {n}")
    ids = list(
        CreditTransaction.objects.filter(wallet__user=user).order_by("-id").values_list("id", flat=True)
    )
    client.force_login(user)
    first = client.get("/wallet/").content.decode()
    assert _rows(first) == 25
    assert "debit 29" in first
    assert "← Newer" not in first
    assert f'href="?before={ids[24]}"' in first
    second = client.get(f"/wallet/?before={ids[24]}").content.decode()
    assert _rows(second) == 6  # 31 rows: 30 debits and the beta grant
    assert "Beta grant" in second
    assert "debit 4<" in second
    assert "Older →" not in second
    assert f'href="?after={ids[25]}"' in second
    back = client.get(f"/wallet/?after={ids[25]}").content.decode()
    assert _rows(back) == 25
    assert "debit 29" in back
    # Junk cursors show the first page, never an error.
    assert _rows(client.get("/wallet/?before=abc").content.decode()) == 25
    assert _rows(client.get("/wallet/?after=-3").content.decode()) == 25


def test_wallet_chart_data_is_per_day_per_model_for_30_days(client):
    user = UserFactory()
    now = timezone.now()
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.3000"))
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.0450"))
    UsageEventFactory(turn__room__owner=user, model_alias="deepseek", credits_burned=Decimal("0.0750"))
    # Unmetered manager calls burn nothing and are not plotted.
    UsageEventFactory(
        turn__room__owner=user, model_alias="default", purpose="manager", metered=False, credits_burned=0
    )
    old = UsageEventFactory(turn__room__owner=user, model_alias="gemini-pro", credits_burned=Decimal("9"))
    UsageEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=31))
    UsageEventFactory(model_alias="claude-sonnet", credits_burned=Decimal("5"))  # another user
    client.force_login(user)

    html = client.get("/wallet/").content.decode()
    start = html.index('<script id="burn-chart-data" type="application/json">') + len(
        '<script id="burn-chart-data" type="application/json">'
    )
    data = json.loads(html[start : html.index("</script>", start)])
    assert len(data["labels"]) == 30
    assert data["labels"][-1] == timezone.localdate().isoformat()
    series = {dataset["label"]: dataset["data"] for dataset in data["datasets"]}
    assert set(series) == {"deepseek", "gpt-4o"}
    assert series["gpt-4o"][-1] == "0.3450"
    assert series["deepseek"][-1] == "0.0750"
    assert series["gpt-4o"][:-1] == ["0.0000"] * 29
    assert 'id="burn-chart"' in html
    assert "/static/vendor/chartjs-4.6.1/chart.umd.min.js" in html


def test_wallet_without_usage_shows_no_chart_script(client):
    client.force_login(UserFactory())
    html = client.get("/wallet/").content.decode()
    assert "No credits burned in the last 30 days" in html
    assert "chart.umd.min.js" not in html


def test_usage_daily_by_model_fills_days_and_excludes_window_edges():
    user = UserFactory()
    today = timezone.localdate()
    event = UsageEventFactory(turn__room__owner=user, credits_burned=Decimal("1.5000"))
    UsageEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=29))
    burn = usage_daily_by_model(user=user, days=30, today=today)
    assert burn.days[0] == today - timedelta(days=29)
    assert burn.series["gpt-4o"][0] == Decimal("1.5000")
    assert sum(burn.series["gpt-4o"]) == Decimal("1.5000")
    assert usage_daily_by_model(user=user, days=29, today=today).series == {}


def test_vendored_chart_library_is_served_by_whitenoise(client):
    response = client.get("/static/vendor/chartjs-4.6.1/chart.umd.min.js")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body.startswith(b"/*!\n * Chart.js v4.6.1")
    assert client.get("/static/css/pantheon.css").status_code == 200


def test_ledger_counts_match_the_database(client):
    user = UserFactory()
    client.force_login(user)
    html = client.get("/wallet/").content.decode()
    assert _rows(html) == CreditTransaction.objects.filter(wallet__user=user).count() == 1


def _turn_with_debits(user, room, *charges):
    """A turn whose calls are debited the way a turn commits them: one `wallet_debit_many`."""
    turn = TurnFactory(room=room)
    events = [
        UsageEventFactory(turn=turn, model_alias=alias, credits_burned=Decimal(amount))
        for alias, amount in charges
    ]
    with transaction.atomic():
        wallet_debit_many(
            user_id=user.pk,
            lines=[
                DebitLine(
                    amount=event.credits_burned,
                    usage_event_id=event.pk,
                    description=f"{event.model_alias} · turn {turn.pk}",
                )
                for event in events
            ],
        )
    return turn


def _ledger_lines(html: str) -> list[str]:
    return re.findall(r'<tr data-testid="ledger-row"[^>]*>.*?</tr>', html, re.S)


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def test_ledger_groups_a_turns_debits_under_one_line_with_its_room(client):
    user = UserFactory()
    duel = RoomFactory(owner=user, title="Duel")
    solo = RoomFactory(owner=user, title="Solo")
    first = _turn_with_debits(user, duel, ("gpt-4o", "0.3000"), ("deepseek", "0.0750"))
    wallet_grant(wallet_id=user.wallet.pk, amount=Decimal("10"), description="top-up")
    second = _turn_with_debits(user, solo, ("gpt-4o", "1.2345"))
    client.force_login(user)

    lines = _ledger_lines(client.get("/wallet/").content.decode())
    assert len(lines) == 4  # turn, grant, turn (2 calls on one line), beta grant
    newest, top_up, grouped, beta = lines
    assert f'data-turn="{second.pk}"' in newest
    assert f'href="/rooms/{solo.pk}/#turn-{second.pk}"' in newest
    assert "Turn in Solo" in newest and "1 model call<" in newest
    assert 'data-label="Amount" data-testid="amount">-1.2345<' in newest
    assert 'data-label="Balance after" data-testid="amount">508.3905<' in newest

    assert "top-up" in top_up and ">+10.0000<" in top_up and ">509.6250<" in top_up
    assert "ledger-turn-link" not in top_up

    assert f'href="/rooms/{duel.pk}/#turn-{first.pk}"' in grouped
    assert "Turn in Duel" in grouped and "2 model calls<" in grouped
    # The line's total is the sum of its debits; its balance is the one after the last of them.
    assert 'data-label="Amount" data-testid="amount">-0.3750<' in grouped
    assert 'data-label="Balance after" data-testid="amount">499.6250<' in grouped
    calls = [_text(call) for call in re.findall(r'<li data-testid="ledger-call">.*?</li>', grouped, re.S)]
    assert calls == [
        "deepseek -0.0750 balance after 499.6250",
        "gpt-4o -0.3000 balance after 499.7000",
    ]
    assert "<details" in grouped  # expandable without JavaScript

    assert "Beta grant" in beta and ">+500.0000<" in beta


def test_ledger_lines_never_split_a_turn_across_pages():
    user = UserFactory()
    room = RoomFactory(owner=user, title="Busy")
    charges = (("gpt-4o", "0.1000"), ("deepseek", "0.0100"), ("gpt-4o", "0.2000"))
    turn1 = _turn_with_debits(user, room, *charges)
    turn2 = _turn_with_debits(user, room, *charges)
    wallet_grant(wallet_id=user.wallet.pk, amount=Decimal("1"), description="top-up")
    turn3 = _turn_with_debits(user, room, *charges)

    def shape(page):
        return [line.turn_id or line.description for line in page.rows], page.has_more

    # Tiny batches: a turn's three rows arrive in two reads and still make one line.
    for batch_size in (None, 1, 2):
        page1 = ledger_lines(user=user, limit=2, batch_size=batch_size)
        assert shape(page1) == ([turn3.pk, "top-up"], True)
        assert [len(line.entries) for line in page1.rows] == [3, 1]
        assert page1.rows[0].amount == Decimal("-0.3100")
        page2 = ledger_lines(user=user, limit=2, older_than=page1.rows[-1].oldest.id, batch_size=batch_size)
        assert shape(page2) == ([turn2.pk, turn1.pk], True)
        page3 = ledger_lines(user=user, limit=2, older_than=page2.rows[-1].oldest.id, batch_size=batch_size)
        assert shape(page3) == (["Beta grant"], False)
        back = ledger_lines(user=user, limit=2, newer_than=page3.rows[0].newest.id, batch_size=batch_size)
        assert shape(back) == ([turn2.pk, turn1.pk], True)
        assert [entry.id for entry in back.rows[0].entries] == [entry.id for entry in page2.rows[0].entries]
    # Every ledger row is on exactly one line.
    every = [e.id for page in (page1, page2, page3) for line in page.rows for e in line.entries]
    assert sorted(every) == sorted(
        CreditTransaction.objects.filter(wallet__user=user).values_list("id", flat=True)
    )


def test_wallet_page_pages_by_turn_lines(client, monkeypatch):
    from billing import views

    monkeypatch.setattr(views, "LEDGER_PAGE_SIZE", 1)
    user = UserFactory()
    room = RoomFactory(owner=user)
    turn = _turn_with_debits(user, room, ("gpt-4o", "0.1000"), ("deepseek", "0.0100"))
    oldest_of_turn = CreditTransaction.objects.filter(usage_event__turn=turn).order_by("id").first()
    newest_of_turn = CreditTransaction.objects.filter(usage_event__turn=turn).order_by("id").last()
    client.force_login(user)
    first = client.get("/wallet/").content.decode()
    assert len(_ledger_lines(first)) == 1 and f'data-turn="{turn.pk}"' in first
    assert f'href="?before={oldest_of_turn.pk}"' in first
    second = client.get(f"/wallet/?before={oldest_of_turn.pk}").content.decode()
    assert len(_ledger_lines(second)) == 1 and "Beta grant" in second
    beta = CreditTransaction.objects.get(wallet__user=user, kind="grant")
    assert f'href="?after={beta.pk}"' in second
    back = client.get(f"/wallet/?after={beta.pk}").content.decode()
    assert f'data-turn="{turn.pk}"' in back and "2 model calls" in back
    assert newest_of_turn.pk > oldest_of_turn.pk


def test_wallet_per_model_totals_for_the_last_30_days(client):
    user = UserFactory()
    now = timezone.now()
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", input_tokens=100, output_tokens=50,
                      credits_burned=Decimal("0.3000"))  # fmt: skip
    week_ago = UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", input_tokens=1534,
                                 output_tokens=31, credits_burned=Decimal("3.1300"))  # fmt: skip
    UsageEvent.objects.filter(pk=week_ago.pk).update(created_at=now - timedelta(days=7))
    UsageEventFactory(turn__room__owner=user, model_alias="deepseek", input_tokens=200, output_tokens=20,
                      multiplier=Decimal("0.5"), credits_burned=Decimal("0.1100"))  # fmt: skip
    UsageEventFactory(turn__room__owner=user, model_alias="default", purpose="manager", metered=False,
                      input_tokens=40, output_tokens=5, credits_burned=0)  # fmt: skip
    old = UsageEventFactory(turn__room__owner=user, model_alias="gemini-pro", credits_burned=Decimal("9"))
    UsageEvent.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=31))
    UsageEventFactory(model_alias="gpt-4o", credits_burned=Decimal("5"))  # another user's
    client.force_login(user)

    html = client.get("/wallet/").content.decode()
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [_text(cell) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r'<tr data-testid="wallet-model-(?:row|total)"[^>]*>(.*?)</tr>', html, re.S)
        )
    }
    assert rows == {
        "default": ["1", "40", "5", "0.0000"],
        "deepseek": ["1", "200", "20", "0.1100"],
        "gpt-4o": ["2", "1634", "81", "3.4300"],
        "All models": ["4", "1874", "106", "3.5400"],
    }
    since = (timezone.localdate() - timedelta(days=29)).isoformat()
    assert f"(since {since})" in html


def test_chart_data_names_today_and_carries_day_totals(client):
    user = UserFactory()
    UsageEventFactory(turn__room__owner=user, model_alias="gpt-4o", credits_burned=Decimal("0.3450"))
    UsageEventFactory(turn__room__owner=user, model_alias="deepseek", credits_burned=Decimal("0.0750"))
    client.force_login(user)
    html = client.get("/wallet/").content.decode()
    marker = '<script id="burn-chart-data" type="application/json">'
    start = html.index(marker) + len(marker)
    data = json.loads(html[start : html.index("</script>", start)])
    assert data["today"] == timezone.localdate().isoformat() == data["labels"][-1]
    assert data["totals"][-1] == "0.4200"
    assert data["totals"][:-1] == ["0.0000"] * 29
