"""GET /api/v1/users/me/usage (JSON pages and CSV) and /usage/summary."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from django.core import signing
from django.db import connection

from billing import selectors
from billing.api.pagination import CursorCodec
from tests.billing.api_helpers import T0, make_usage, newest_first, walk
from tests.factories import UserFactory
from tests.support.clients import client_for

USAGE = "/api/v1/users/me/usage"
SUMMARY = "/api/v1/users/me/usage/summary"
ROW_FIELDS = [
    "id",
    "created_at",
    "room",
    "turn",
    "turn_status",
    "turn_routed_by",
    "model_alias",
    "provider_model",
    "purpose",
    "input_tokens",
    "output_tokens",
    "multiplier",
    "pricing_version",
    "credits_burned",
    "metered",
    "usage_source",
    "cached_input_tokens",
    "reasoning_tokens",
    "latency_ms",
]

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return UserFactory(username="alice")


@pytest.fixture
def bob():
    return UserFactory(username="bob")


@pytest.fixture
def alice_usage(alice, bob):
    events = make_usage(alice, 250)
    make_usage(bob, 30, start=T0 + dt.timedelta(minutes=3))  # interleaved in time with alice's
    return events


def cursor_of(url: str) -> str:
    return parse_qs(urlparse(url).query)["cursor"][0]


def test_anonymous_is_401_json():
    response = client_for(UserFactory()).__class__().get(USAGE)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize("page_size", [None, 7, 100, 200])
def test_every_page_walked_newest_first_without_gaps_or_duplicates(alice, alice_usage, page_size):
    url = USAGE if page_size is None else f"{USAGE}?page_size={page_size}"
    pages = walk(client_for(alice), url)
    ids = [row["id"] for page in pages for row in page["results"]]
    assert ids == newest_first(alice_usage)  # all 250, in order: no gap, no duplicate
    size = page_size or 50
    assert [len(page["results"]) for page in pages[:-1]] == [size] * (len(pages) - 1)
    assert pages[0]["previous"] is None
    assert pages[-1]["next"] is None


def test_previous_links_walk_back_to_the_first_page(alice, alice_usage):
    client = client_for(alice)
    forward = walk(client, f"{USAGE}?page_size=40")
    last_url = forward[-2]["next"]
    backward = walk(client, last_url, direction="previous")
    assert [[r["id"] for r in p["results"]] for p in backward] == [
        [r["id"] for r in p["results"]] for p in reversed(forward)
    ]
    assert backward[-1]["previous"] is None


def test_row_shape_and_decimal_strings(alice, alice_usage):
    row = client_for(alice).get(USAGE).json()["results"][0]
    assert list(row) == ROW_FIELDS
    event = next(e for e in alice_usage if e.pk == row["id"])
    assert row["room"] == event.room_id and row["turn"] == event.turn_id
    assert row["multiplier"] == "1.5000"
    assert row["credits_burned"] == str(event.credits_burned)
    assert isinstance(row["input_tokens"], int) and isinstance(row["metered"], bool)
    assert dt.datetime.fromisoformat(row["created_at"]) == event.created_at


def test_one_query_per_page_and_it_uses_the_index(alice, alice_usage, django_assert_num_queries):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(alice)
    first = client.get(f"{USAGE}?page_size=20").json()
    with django_assert_num_queries(1):
        assert client.get(first["next"]).status_code == 200
    # The keyset page is an index range scan in index order: no sort of the user's rows.
    last = alice_usage[100]
    for alias, index in [(None, "chat_usage_user_newest"), ("gpt-4o", "chat_usage_user_alias_newest")]:
        query = selectors._usage_keyset(
            selectors.usage_queryset(user=alice, model_alias=alias),
            after=(last.created_at, last.pk),
            newer=False,
        ).order_by("-created_at", "-id")[:51]
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_llmcallevent")
            # Ask whether an index can serve this order (tiny tables would be planned with a sort).
            cursor.execute(
                "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; "
                "SET LOCAL enable_sort = off"
            )
            sql, params = query.query.sql_with_params()
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(line for (line,) in cursor.fetchall())
        assert index in plan, plan
        assert "Sort" not in plan, plan


def test_model_alias_filter_and_pagination_together(alice, alice_usage):
    pages = walk(client_for(alice), f"{USAGE}?model_alias=gpt-4o&page_size=9")
    ids = [row["id"] for page in pages for row in page["results"]]
    assert ids == newest_first([e for e in alice_usage if e.model_alias == "gpt-4o"])
    assert all("model_alias=gpt-4o" in page["next"] for page in pages[:-1])


def test_since_until_dates_and_datetimes(alice, alice_usage):
    client = client_for(alice)

    def ids(query: str) -> list[int]:
        return [
            row["id"] for page in walk(client, f"{USAGE}?{query}&page_size=200") for row in page["results"]
        ]

    day = dt.date(2026, 3, 2)
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    on_day = [e for e in alice_usage if start <= e.created_at < start + dt.timedelta(days=1)]
    assert on_day
    # A bare `until` date includes that whole day.
    assert ids("since=2026-03-02&until=2026-03-02") == newest_first(on_day)
    # Datetimes: since inclusive, until exclusive; `Z`, offsets and naive (= UTC) all work.
    pivot = alice_usage[60]
    after = [e for e in alice_usage if e.created_at >= pivot.created_at]
    before = [e for e in alice_usage if e.created_at < pivot.created_at]
    stamp = pivot.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert ids(f"since={stamp}Z") == newest_first(after)
    assert ids(f"until={stamp}%2B00:00") == newest_first(before)
    assert ids(f"until={stamp}") == newest_first(before)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("since=2026-02-30", "since"),
        ("since=2026-03-01T25:00:00Z", "since"),
        ("until=9999-12-31", "until"),
        ("since=2026-03-02&until=2026-03-01", "until"),
        ("page_size=0", "page_size"),
        ("page_size=201", "page_size"),
        ("page_size=ten", "page_size"),
        ("cursor=garbage", "cursor"),
        ("format=xml", "format"),
        ("model_alias=" + "x" * 65, "model_alias"),
    ],
)
def test_bad_parameters_are_400_json(alice, alice_usage, query, field):
    response = client_for(alice).get(f"{USAGE}?{query}")
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["detail"]


def test_bob_reads_none_of_alices_usage_by_any_cursor(alice, bob, alice_usage):
    bob_client = client_for(bob)
    bob_ids = [r["id"] for page in walk(bob_client, USAGE) for r in page["results"]]
    assert len(bob_ids) == 30
    assert not set(bob_ids) & {e.pk for e in alice_usage}

    alice_page = client_for(alice).get(f"{USAGE}?page_size=10").json()
    stolen = cursor_of(alice_page["next"])
    assert bob_client.get(f"{USAGE}?cursor={stolen}").status_code == 400
    # A cursor forged by changing the user id breaks the signature.
    forged = stolen.replace(stolen.split(":")[0], stolen.split(":")[0][::-1])
    assert bob_client.get(f"{USAGE}?cursor={forged}").status_code == 400
    # A validly signed cursor for another list (the ledger) is refused too.
    other_list = CursorCodec("transactions", with_timestamp=False).encode(
        user_id=bob.pk, direction="n", row=alice_usage[0]
    )
    assert bob_client.get(f"{USAGE}?cursor={other_list}").status_code == 400
    # Alice's own cursor still works for her.
    assert client_for(alice).get(f"{USAGE}?cursor={stolen}").status_code == 200


def test_signed_cursor_with_a_bad_payload_is_400_not_500(alice, alice_usage):
    salt = "billing.api.cursor.usage"
    for payload in [
        {"u": alice.pk, "d": "n", "i": 1, "t": "not a time"},
        {"u": alice.pk, "d": "sideways", "i": 1, "t": T0.isoformat()},
        {"u": alice.pk, "d": "n", "i": "1", "t": T0.isoformat()},
        {"u": alice.pk, "d": "n", "i": 1},
        ["not", "a", "dict"],
    ]:
        token = signing.dumps(payload, salt=salt)
        assert client_for(alice).get(f"{USAGE}?cursor={token}").status_code == 400, payload


def parse_csv(response) -> list[dict]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_has_the_json_rows_and_columns(alice, alice_usage):
    client = client_for(alice)
    response = client.get(f"{USAGE}?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="usage.csv"' in response["Content-Disposition"]
    lines = parse_csv(response)
    json_rows = [row for page in walk(client, f"{USAGE}?page_size=200") for row in page["results"]]
    assert len(lines) == 250
    assert list(lines[0]) == ROW_FIELDS
    for line, row in zip(lines, json_rows, strict=True):
        expected = {
            key: ("true" if v is True else "false" if v is False else str(v)) for key, v in row.items()
        }
        assert line == expected


def test_csv_applies_the_filters_and_bad_filters_stay_json(alice, bob, alice_usage):
    client = client_for(alice)
    lines = parse_csv(client.get(f"{USAGE}?format=csv&model_alias=deepseek&since=2026-03-02"))
    expected = [
        e
        for e in alice_usage
        if e.model_alias == "deepseek" and e.created_at >= dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    ]
    assert [int(line["id"]) for line in lines] == newest_first(expected)
    bad = client.get(f"{USAGE}?format=csv&since=yesterday")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert bad.json()["detail"]["since"]
    # Bob's export holds only Bob's rows.
    bob_lines = parse_csv(client_for(bob).get(f"{USAGE}?format=csv"))
    assert len(bob_lines) == 30 and not {int(line["id"]) for line in bob_lines} & {e.pk for e in alice_usage}


def test_csv_streams_in_batches_beyond_one_batch(alice, alice_usage):
    # Three keyset batches of 100 must give the same 250 rows as one query.
    streamed = list(selectors.usage_iter(user=alice, batch_size=100))
    assert [e.pk for e in streamed] == newest_first(alice_usage)


def expected_summary(events, key) -> dict:
    groups = defaultdict(
        lambda: {"calls": 0, "input_tokens": 0, "output_tokens": 0, "credits_burned": Decimal(0)}
    )
    for event in events:
        group = groups[key(event)]
        group["calls"] += 1
        group["input_tokens"] += event.input_tokens
        group["output_tokens"] += event.output_tokens
        group["credits_burned"] += event.credits_burned
    return {
        k: {**v, "credits_burned": str(v["credits_burned"].quantize(Decimal("0.0001")))}
        for k, v in groups.items()
    }


def test_summary_by_day_and_by_model_sum_to_the_rows(alice, alice_usage):
    client = client_for(alice)
    by_day = client.get(f"{SUMMARY}?group_by=day").json()
    expected = expected_summary(alice_usage, lambda e: e.created_at.date().isoformat())
    assert [row["day"] for row in by_day["results"]] == sorted(expected)  # oldest day first
    assert {row.pop("day"): row for row in by_day["results"]} == expected
    total = sum((e.credits_burned for e in alice_usage), Decimal(0))
    assert by_day["totals"] == {
        "calls": 250,
        "input_tokens": sum(e.input_tokens for e in alice_usage),
        "output_tokens": sum(e.output_tokens for e in alice_usage),
        "credits_burned": str(total),
    }
    assert by_day["group_by"] == "day" and by_day["since"] is None

    by_model = client.get(f"{SUMMARY}?group_by=model").json()
    assert {row.pop("model_alias"): row for row in by_model["results"]} == expected_summary(
        alice_usage, lambda e: e.model_alias
    )
    assert by_model["totals"] == by_day["totals"]

    both = client.get(f"{SUMMARY}?group_by=day,model").json()
    assert {(r.pop("day"), r.pop("model_alias")): r for r in both["results"]} == expected_summary(
        alice_usage, lambda e: (e.created_at.date().isoformat(), e.model_alias)
    )


def test_summary_range_and_isolation(alice, bob, alice_usage):
    response = client_for(alice).get(f"{SUMMARY}?group_by=model&since=2026-03-02&until=2026-03-03")
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    in_range = [e for e in alice_usage if start <= e.created_at < start + dt.timedelta(days=2)]
    body = response.json()
    assert body["since"] == "2026-03-02T00:00:00Z" and body["until"] == "2026-03-04T00:00:00Z"
    assert body["totals"]["calls"] == len(in_range)
    bob_summary = client_for(bob).get(f"{SUMMARY}?group_by=model").json()
    assert bob_summary["totals"]["calls"] == 30
    assert client_for(UserFactory()).get(SUMMARY).json()["results"] == []


@pytest.mark.parametrize("group_by", ["week", "day,day", "model,", "DAY", "day;model"])
def test_summary_bad_group_by_is_400(alice, group_by):
    response = client_for(alice).get(SUMMARY, {"group_by": group_by})
    assert response.status_code == 400
    assert "group_by" in response.json()["detail"]


def test_summary_bad_dates_are_400(alice):
    response = client_for(alice).get(f"{SUMMARY}?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.json()["detail"]
