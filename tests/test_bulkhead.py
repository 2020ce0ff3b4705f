"""The bulkhead that paces turn work (pantheon.bulkhead), with real threads.

What must hold: never more than `slots` threads inside; a thread that steps
outside (a model call) lets another in and gets a slot back after; entering
again from inside never deadlocks; a thread never waits for a slot holding a
pooled database connection; 0 slots means no limit.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from pantheon.bulkhead import Bulkhead
from tests.support.threads import run_in_threads


def test_never_more_threads_inside_than_slots():
    bulkhead = Bulkhead(lambda: 2)
    inside = 0
    most = 0
    lock = threading.Lock()
    entered = threading.Semaphore(0)
    leave = threading.Event()

    def work(_: int) -> None:
        nonlocal inside, most
        with bulkhead.inside():
            with lock:
                inside += 1
                most = max(most, inside)
            entered.release()
            leave.wait(timeout=10)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(2):
        assert entered.acquire(timeout=10)
    # Two are in; the six others wait at the door, not in the room.
    assert not entered.acquire(timeout=0.2)
    leave.set()
    for thread in threads:
        thread.join(timeout=10)
    assert most == 2 and inside == 0


def test_stepping_outside_lets_another_thread_in_and_the_slot_comes_back():
    bulkhead = Bulkhead(lambda: 1)
    order: list[str] = []
    outside = threading.Event()
    second_done = threading.Event()

    def first() -> None:
        with bulkhead.inside():
            order.append("first in")
            with bulkhead.outside():  # a model call: seconds of waiting, no slot
                outside.set()
                assert second_done.wait(timeout=10)
            order.append("first back")
            assert bulkhead.held

    def second() -> None:
        assert outside.wait(timeout=10)
        with bulkhead.inside():
            order.append("second in")
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["first in", "second in", "first back"]


def test_entering_again_from_inside_does_not_wait_for_a_second_slot():
    bulkhead = Bulkhead(lambda: 1)
    finished = threading.Event()

    def nested() -> None:
        with bulkhead.inside():
            with bulkhead.inside():  # e.g. the API view, then the service it calls
                assert bulkhead.held
            assert bulkhead.held
        assert not bulkhead.held
        finished.set()

    thread = threading.Thread(target=nested)
    thread.start()
    thread.join(timeout=10)
    assert finished.is_set()


def test_outside_without_a_slot_is_a_plain_wait():
    bulkhead = Bulkhead(lambda: 1)
    with bulkhead.outside():
        assert not bulkhead.held
    assert not bulkhead.held


def test_zero_slots_means_no_limit():
    bulkhead = Bulkhead(lambda: 0)
    all_inside = threading.Barrier(6, timeout=10)

    def work(_: int) -> None:
        with bulkhead.inside():
            all_inside.wait()  # would time out (BrokenBarrierError) if any thread were kept out

    run_in_threads(work, 6)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_thread_waiting_for_a_slot_holds_no_database_connection():
    bulkhead = Bulkhead(lambda: 1)
    holder_in = threading.Event()
    release_holder = threading.Event()
    seen: dict[str, bool] = {}

    def holder() -> None:
        with bulkhead.inside():
            holder_in.set()
            release_holder.wait(timeout=10)

    def waiter() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            seen["open before"] = connection.connection is not None
            threading.Timer(0.3, release_holder.set).start()
            with bulkhead.inside():  # must wait: the holder has the only slot
                seen["open while waiting"] = connection.connection is not None
        finally:
            connection.close()

    first = threading.Thread(target=holder)
    first.start()
    assert holder_in.wait(timeout=10)
    second = threading.Thread(target=waiter)
    second.start()
    second.join(timeout=10)
    first.join(timeout=10)
    assert seen == {"open before": True, "open while waiting": False}
