"""BlockPool's change observer and its lock under threads: bookkeeping without a model."""

from __future__ import annotations

import random
import threading

import pytest

from pool import Block, BlockPool, PoolExhausted
from tests.pool_builders import small_spec

# -- observer ------------------------------------------------------------------


def test_observer_sees_allocate_and_free() -> None:
    events: list[tuple[str, str, int, list[int]]] = []
    pool = BlockPool(small_spec(), 10, on_change=lambda *event: events.append(event))
    blocks = pool.allocate(2, 1, "a")
    ids = [b.block_id for b in blocks]
    more = pool.allocate(1, 2, "a")
    pool.free([blocks[0]])
    pool.free_agent_blocks("a")
    with pytest.raises(PoolExhausted):
        pool.allocate(11, 0, "a")
    assert events == [
        ("allocate", "a", 1, ids),
        ("allocate", "a", 2, [more[0].block_id]),
        ("free", "a", 1, [ids[0]]),
        ("free", "a", 1, [ids[1]]),
        ("free", "a", 2, [more[0].block_id]),
    ]


def test_observer_runs_outside_the_lock() -> None:
    seen_from_other_thread: list[int] = []

    def observer(*_: object) -> None:
        # A reader on another thread must not block on the pool's lock.
        reader = threading.Thread(target=lambda: seen_from_other_thread.append(pool.used_blocks()))
        reader.start()
        reader.join(timeout=2)

    pool = BlockPool(small_spec(), 10, on_change=observer)
    pool.allocate(3, 0, "a")
    assert seen_from_other_thread == [3]


def test_failing_observer_does_not_corrupt_pool(caplog: pytest.LogCaptureFixture) -> None:
    def observer(*_: object) -> None:
        raise RuntimeError("telemetry down")

    pool = BlockPool(small_spec(), 10, on_change=observer)
    blocks = pool.allocate(3, 0, "a")
    assert len(blocks) == 3 and pool.used_blocks() == 3
    assert pool.free(blocks) == 3 and pool.used_blocks() == 0
    assert "on_change observer failed" in caplog.text
    pool.check_invariants()


# -- threads -------------------------------------------------------------------


def test_concurrent_allocate_free_with_snapshot_reader() -> None:
    pool = BlockPool(small_spec(), total_blocks=64)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(agent_id: str, seed: int) -> None:
        rng = random.Random(seed)
        held: list[Block] = []
        try:
            for _ in range(500):
                if held and rng.random() < 0.5:
                    k = rng.randint(1, len(held))
                    assert pool.free(held[:k]) == k
                    del held[:k]
                else:
                    try:
                        held += pool.allocate(rng.randint(1, 8), rng.randrange(4), agent_id)
                    except PoolExhausted:
                        pass
                assert pool.agent_block_count(agent_id) == len(held)
            pool.free(held)
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)

    def reader() -> None:
        try:
            while not stop.is_set():
                snap = pool.snapshot()
                assert snap.used_blocks() + snap.free_blocks() == 64
                assert sum(snap.agent_usage().values()) == snap.used_blocks()
                assert len({info.block_id for info in snap.blocks}) == snap.used_blocks()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"agent-{i}", i)) for i in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert pool.used_blocks() == 0 and pool.free_blocks() == 64
    pool.check_invariants()
