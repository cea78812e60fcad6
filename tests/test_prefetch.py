"""sadtalker.prefetch.Prefetch: an iterator run one item ahead in a thread (the CUDA render loop's)."""

from __future__ import annotations

import contextvars
import threading

import pytest

from sadtalker.prefetch import Prefetch


def test_items_come_in_order_and_the_producer_ends():
    ahead = Prefetch(iter(range(7)), depth=2)
    assert list(ahead) == list(range(7))
    assert list(ahead) == []  # exhausted stays exhausted
    ahead.close()


def test_the_next_item_is_made_while_this_one_is_used():
    started = [threading.Event() for _ in range(3)]

    def items():
        for k in range(3):
            started[k].set()
            yield k

    with Prefetch(items()) as ahead:
        assert next(ahead) == 0
        # item 1 is produced while the consumer still holds item 0 (no further call made)
        assert started[1].wait(5)
        assert list(ahead) == [1, 2]


def test_an_error_is_raised_where_its_item_would_have_been():
    def items():
        yield 1
        yield 2
        raise RuntimeError("batch 3 exploded")

    ahead = Prefetch(items())
    assert next(ahead) == 1 and next(ahead) == 2
    with pytest.raises(RuntimeError, match="batch 3 exploded"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)


def test_close_stops_the_producer_and_closes_the_items_in_the_callers_thread():
    made: list[int] = []
    closed_in: list[threading.Thread] = []

    def items():
        try:
            for k in range(1000):
                made.append(k)
                yield k
        finally:
            closed_in.append(threading.current_thread())

    ahead = Prefetch(items(), depth=2)
    assert next(ahead) == 0
    ahead.close()
    assert closed_in == [threading.current_thread()]  # the generator's finally ran here, once
    assert len(made) <= 4  # the item taken, the queue's 2 and the one being made when asked to stop
    assert not ahead._thread.is_alive()
    with pytest.raises(StopIteration):
        next(ahead)
    ahead.close()  # twice is fine


def test_the_producer_sees_the_callers_context_variables():
    deadline = contextvars.ContextVar("deadline", default=None)
    deadline.set("row r: 12 s")

    def items():
        yield deadline.get()

    assert list(Prefetch(items())) == ["row r: 12 s"]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        Prefetch(iter([]), depth=0)
