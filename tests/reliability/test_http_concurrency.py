"""64 turns from 8 client threads at one wallet, through gunicorn -w 4, while an admin reprices.

Everything goes over HTTP to four OS processes sharing one PostgreSQL
database (the test database; the test is transactional so the workers see
what it writes). The model is the offline one, so every turn is metered with
real token counts. Afterwards the tables must show:

- 64 turns, each charged exactly once: one debit per metered usage event, no
  debit without an event, no event without its debit, `turn.credits_burned`
  = Σ its events, balance = Σ ledger = the chain of `balance_after`, and
  `reconcile_wallets` exits 0 (`assert_books_balance`);
- every turn priced by one consistent set of multipliers that was in force:
  the state after some edit k, where k is at most the last edit written
  before the turn and at least the last edit written more than 1.5 s before
  it (the product promises every process applies an edit within 1 s of its
  commit; 0.5 s is margin for the commit itself and a busy machine); turns
  written over 1.5 s after the last edit all pay the final prices;
- Idempotency-Key retries charge once: a client that gives up before the
  answer and retries, and a client that lost the answer and retries, both get
  the single turn their key names.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest

from billing.models import CreditTransaction, CreditWallet, ModelPricing, PricingChange, UsageEvent
from chat.models import Turn, TurnIdempotencyKey
from tests.factories import RoomFactory, UserFactory
from tests.reliability.audit import assert_books_balance
from tests.support.clients import token_for
from tests.support.gunicorn_server import GunicornServer, gunicorn_server

# The 1.5 s propagation window is wall-clock: run alone (`make test` gives serial tests their own pass).
pytestmark = [pytest.mark.gunicorn, pytest.mark.serial]
THREADS = 8
TURNS_PER_THREAD = 8
# The product's promise (1 s from commit to every process) plus margin; see the module docstring.
PROPAGATION_WINDOW = timedelta(seconds=1.5)
EDITED = {"gpt-4o": Decimal("2"), "claude-sonnet": Decimal("1.5")}
# The editor reprices again each time this many more turns have been answered.
TURNS_PER_EDIT = 2
MAX_EDITS = 400


def call(
    server: GunicornServer, method: str, path: str, body: object, headers: dict, timeout: float = 60.0
) -> tuple[int, dict, object]:
    """One request on a fresh connection: (status, response headers, decoded JSON body)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(
            method,
            path,
            body=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        )
        response = conn.getresponse()
        raw = response.read()
        return response.status, dict(response.getheaders()), json.loads(raw)
    finally:
        conn.close()


def send_and_hang_up(server: GunicornServer, path: str, body: object, headers: dict) -> None:
    """A client that gives up before the answer: the request is sent, the connection closed."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request(
        "POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}
    )
    conn.close()


class Run:
    """The shared state of one run: requests made, answers got, edits made."""

    def __init__(self, server: GunicornServer, token: str, admin_token: str, rooms: dict) -> None:
        self.server = server
        self.auth = {"Authorization": f"Bearer {token}"}
        self.admin_auth = {"Authorization": f"Bearer {admin_token}"}
        self.rooms = rooms
        self.answers: dict[int, dict] = {}  # turn number → the 201 body
        self.keys: dict[int, str] = {}  # turn number → Idempotency-Key
        self.replayed: list[int] = []
        self.edits: list[tuple[str, Decimal]] = []
        self.stop_edits = threading.Event()
        self.last_edit_answered = 0.0
        self.editor_thread = threading.Thread(target=self.editor, name="price-editor")
        self.editor_error: BaseException | None = None
        self.lock = threading.Condition()

    def turn_request(self, number: int) -> tuple[str, dict]:
        """Turn `number`: the room (one agent, or three with routing) and the body."""
        if number % 2 == 0:
            return f"/api/v1/rooms/{self.rooms['solo'].pk}/turns/", {"content": f"Turn {number}: a question."}
        room = self.rooms["panel"]
        body: dict = {"content": f"Turn {number}: what do you all think?"}
        if number % 6 == 1:
            body["content"] = f"Turn {number}: @deepseek only, please."
        elif number % 6 == 3:
            body["model_alias"] = "claude-sonnet"
        return f"/api/v1/rooms/{room.pk}/turns/", body

    def post_turn(self, number: int) -> None:
        path, body = self.turn_request(number)
        if number % 8 == 3:
            # Gives up before the answer, then retries with the same key until it gets one.
            key = self.keys[number] = f"hang-up-{number}"
            send_and_hang_up(self.server, path, body, {**self.auth, "Idempotency-Key": key})
            for _ in range(20):
                status, _, answer = call(
                    self.server, "POST", path, body, {**self.auth, "Idempotency-Key": key}
                )
                if status != 409 or answer.get("error") != "idempotency_in_progress":
                    break
            assert status == 201, answer
        elif number % 8 == 5:
            # Gets the answer, "loses" it, retries: the replay is the same turn, charged once.
            key = self.keys[number] = f"lost-answer-{number}"
            headers = {**self.auth, "Idempotency-Key": key}
            status, _, answer = call(self.server, "POST", path, body, headers)
            assert status == 201, answer
            status, replay_headers, replay = call(self.server, "POST", path, body, headers)
            assert (status, replay_headers.get("Idempotent-Replayed")) == (201, "true"), replay
            assert replay == answer
            with self.lock:
                self.replayed.append(number)
        else:
            status, _, answer = call(self.server, "POST", path, body, self.auth)
            assert status == 201, answer
        with self.lock:
            self.answers[number] = answer
            self.lock.notify_all()

    def client(self, thread: int, racing_done: threading.Barrier) -> None:
        numbers = range(thread * TURNS_PER_THREAD, (thread + 1) * TURNS_PER_THREAD)
        *racing, settled = numbers
        for number in racing:
            self.post_turn(number)
        racing_done.wait(timeout=120)
        self.post_turn(settled)

    def editor(self) -> None:
        try:
            self._edit_until_stopped()
        except BaseException as exc:  # reported by the test, not lost in this thread
            self.editor_error = exc

    def _edit_until_stopped(self) -> None:
        """An admin repricing gpt-4o and claude-sonnet, one PATCH after another, until told to stop."""
        for edit in range(1, MAX_EDITS + 1):
            if self.stop_edits.is_set():
                break
            alias = "gpt-4o" if edit % 2 else "claude-sonnet"
            multiplier = EDITED[alias] + Decimal(edit) / 1000
            status, _, answer = call(
                self.server,
                "PATCH",
                f"/api/v1/admin/pricing/{alias}",
                {"multiplier": str(multiplier)},
                self.admin_auth,
            )
            assert (status, answer.get("multiplier")) == (200, str(multiplier.quantize(Decimal("0.0001")))), (
                answer
            )
            self.edits.append((alias, multiplier))
            self.last_edit_answered = time.time()
            # Spread the edits over the whole run, however fast this machine answers turns.
            with self.lock:
                answered = len(self.answers)
                self.lock.wait_for(
                    lambda answered=answered: (
                        self.stop_edits.is_set() or len(self.answers) >= answered + TURNS_PER_EDIT
                    ),
                    timeout=60,
                )

    def settle(self) -> None:
        """Barrier action: stop the edits, then let the promised propagation window pass."""
        with self.lock:
            self.stop_edits.set()
            self.lock.notify_all()
        self.editor_thread.join(timeout=60)
        wait = self.last_edit_answered + PROPAGATION_WINDOW.total_seconds() + 0.1 - time.time()
        if wait > 0:
            time.sleep(wait)  # the product's 1 s promise is what is being tested here


def price_states(seed: dict[str, Decimal]) -> tuple[list[dict[str, Decimal]], list]:
    """(the multipliers after each committed edit, starting with the seed; the edits in order)."""
    changes = list(PricingChange.objects.order_by("id"))
    states = [dict(seed)]
    for change in changes:
        states.append({**states[-1], change.model_alias: change.new_multiplier})
    return states, changes


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_64_turns_from_8_threads_at_one_wallet_with_live_repricing_are_each_charged_once():
    user = UserFactory()
    admin = UserFactory(username="pricing-admin")
    rooms = {
        "solo": RoomFactory(owner=user, agents=["gpt-4o"]),
        "panel": RoomFactory(owner=user, agents=["gpt-4o", "claude-sonnet", "deepseek"]),
    }
    token, admin_token = token_for(user), token_for(admin)
    seed = {
        row.model_alias: row.multiplier
        for row in ModelPricing.objects.filter(pricing_version__is_active=True)
    }
    start_balance = CreditWallet.objects.get(user=user).balance
    env = {
        "ADMIN_USER_IDS": str(admin.pk),
        # Offline models for every alias; the NOTIFY listener alone must propagate (no 5 s safety net).
        "OPENAI_API_KEY": "",
        "ANTHROPIC_API_KEY": "",
        "GOOGLE_API_KEY": "",
        "DEEPSEEK_API_KEY": "",
        "TAVILY_API_KEY": "",
        "PRICING_VERSION_CHECK_SECONDS": "60",
        "THROTTLE_TURN_RATE": "100000/minute",
    }
    with gunicorn_server(workers=4, env=env) as server:
        server.wait_for_workers(
            4, lambda h: h["pricing_listener"]["connected"] and h["pricing_cache"]["loaded"]
        )
        run = Run(server, token, admin_token, rooms)
        racing_done = threading.Barrier(THREADS, action=run.settle)
        run.editor_thread.start()
        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            futures = [pool.submit(run.client, thread, racing_done) for thread in range(THREADS)]
            for future in futures:
                future.result(timeout=300)
        assert run.editor_error is None, run.editor_error
        status, _, wallet = call(server, "GET", "/api/v1/users/me/wallet", None, run.auth)
        assert status == 200
        # Every worker ends on the final prices.
        final_seq = PricingChange.objects.latest("id").pk
        server.wait_for_workers(4, lambda h: h["pricing_cache"]["change_seq"] == final_seq)

    # --- every turn once, every key once --------------------------------------------------
    total = THREADS * TURNS_PER_THREAD
    assert sorted(run.answers) == list(range(total))
    turn_ids = {answer["id"] for answer in run.answers.values()}
    assert len(turn_ids) == total
    assert set(Turn.objects.values_list("id", flat=True)) == turn_ids
    assert len(run.replayed) == THREADS
    keys = {key.key: key for key in TurnIdempotencyKey.objects.all()}
    assert set(keys) == set(run.keys.values()) and len(keys) == 2 * THREADS
    for number, key in run.keys.items():
        assert keys[key].status == TurnIdempotencyKey.Status.DONE
        assert keys[key].turn_id == run.answers[number]["id"]

    # --- the books --------------------------------------------------------------------------
    counts = assert_books_balance()
    assert counts["turns"] == total
    burned = sum((Decimal(answer["credits_burned"]) for answer in run.answers.values()), Decimal(0))
    debits = CreditTransaction.objects.filter(kind=CreditTransaction.Kind.DEBIT)
    assert -sum(debit.amount for debit in debits) == burned
    balance = CreditWallet.objects.get(user=user).balance
    assert balance == start_balance - burned == Decimal(wallet["balance"])
    # What each client was told is what was written.
    events_by_turn: dict[int, list[UsageEvent]] = {}
    for event in UsageEvent.objects.order_by("id"):
        events_by_turn.setdefault(event.turn_id, []).append(event)
    for answer in run.answers.values():
        written = [
            (e.model_alias, e.purpose, str(e.multiplier), str(e.credits_burned), e.metered)
            for e in events_by_turn[answer["id"]]
        ]
        told = [
            (u["model_alias"], u["purpose"], u["multiplier"], u["credits_burned"], u["metered"])
            for u in answer["usage"]
        ]
        assert sorted(told) == sorted(written), answer["id"]
    # Both rooms and all three routes were exercised.
    purposes = Counter(e.purpose for events in events_by_turn.values() for e in events)
    assert purposes["manager"] > 0 and purposes["agent"] > total
    assert {e.model_alias for events in events_by_turn.values() for e in events} >= {
        "gpt-4o",
        "claude-sonnet",
        "deepseek",
    }

    # --- the prices: a state that was in force when each turn committed ------------------------
    states, changes = price_states(seed)
    assert [(c.model_alias, c.new_multiplier) for c in changes] == [
        (alias, multiplier) for alias, multiplier in run.edits
    ]
    assert len(changes) >= 5, "too few edits raced with the turns to prove anything"
    stamps = [change.created_at for change in changes]
    repriced_turns = 0
    settled_turns = 0
    used_states: list[tuple[int, ...]] = []
    for turn in Turn.objects.order_by("id"):
        events = events_by_turn[turn.pk]
        newest = sum(stamp < turn.created_at for stamp in stamps)
        oldest = sum(stamp < turn.created_at - PROPAGATION_WINDOW for stamp in stamps)
        matching = [
            k
            for k in range(len(states))
            if all(event.multiplier == states[k].get(event.model_alias) for event in events)
        ]
        in_window = [k for k in matching if oldest <= k <= newest]
        assert in_window, (
            f"turn {turn.pk} at {turn.created_at.isoformat()} was priced "
            f"{[(e.model_alias, str(e.multiplier)) for e in events]}, matching states {matching}; "
            f"allowed states {oldest}..{newest} of {len(changes)}"
        )
        used_states.append(tuple(in_window))
        if min(in_window) > 0:
            repriced_turns += 1
        if oldest == len(changes):
            settled_turns += 1
            assert all(event.multiplier == states[-1][event.model_alias] for event in events), turn.pk
    print(f"\n{len(changes)} edits; states used by turns: {sorted(Counter(used_states).items())}")
    assert repriced_turns > 0
    assert settled_turns >= THREADS
