#!/usr/bin/env python3
"""The micro workloads of trio-bench (bench/src/micro.rs), on Python Trio.

Usage: micro.py [--size full|quick|tiny]

Prints one JSON object per line: first {"meta": {...}} (the trio and Python
versions, the size), then {"name": NAME, "ns_per_op": FLOAT} for each
workload, NAME being exactly the name of the matching Rust record (the
bench matches them by name; see bench/src/python.rs). Each figure is the
median over the size's rounds (full: 5, quick: 3, tiny: 1) of ns per
operation, each round in a fresh trio.run, timed inside the run with
time.perf_counter_ns. Sizes: full = the counts in the names (and for the
unnamed ones, the counts the Rust side uses, or a fraction where CPython
would take minutes); quick = fewer operations per round (the figure is per
operation), all in well under a minute; tiny = a few hundred operations,
one round: a smoke test whose figures mean nothing.
"""

import argparse
import gc
import json
import platform
import statistics
import sys
import time

import trio

now = time.perf_counter_ns


def per_op(t0, n):
    """ns per operation since t0 (a perf_counter_ns reading)."""
    return (now() - t0) / max(n, 1)


async def _trivial():
    """A child that returns at once."""


async def _spawn_batch(batch):
    """One nursery of `batch` trivial children, waited for."""
    async with trio.open_nursery() as nursery:
        for _ in range(batch):
            nursery.start_soon(_trivial)


async def spawn_join(batch, n):
    """n trivial children in nurseries of `batch`; ns per child. One batch
    is spawned first, untimed, as a warm-up (as the Rust side does)."""
    batch = max(1, min(batch, n))
    batches = max(1, -(-n // batch))
    await _spawn_batch(batch)
    t0 = now()
    for _ in range(batches):
        await _spawn_batch(batch)
    return per_op(t0, batches * batch)


async def spawn_join_1k(n):
    """"spawn+join 1k children": nurseries of 1000 children."""
    return await spawn_join(1000, n)


async def spawn_join_100k(n):
    """"spawn+join 100k children": one nursery of all n children."""
    return await spawn_join(n, n)


async def checkpoints(n):
    """n checkpoints in the main task; ns per checkpoint."""
    checkpoint = trio.lowlevel.checkpoint
    t0 = now()
    for _ in range(n):
        await checkpoint()
    return per_op(t0, n)


MANY_TASKS = 1000


async def checkpoints_many(n):
    """n checkpoints spread over 1000 children (fewer if n is smaller);
    ns per checkpoint."""
    tasks = min(MANY_TASKS, max(n, 1))
    each = max(n // tasks, 1)
    checkpoint = trio.lowlevel.checkpoint

    async def child():
        for _ in range(each):
            await checkpoint()

    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(child)
    return per_op(t0, tasks * each)


# A deadline far enough away never to fire during a benchmark.
FAR = 3600


async def deadline_not_firing(n):
    """Entering and leaving a cancel scope with a deadline, around nothing.

    The body is `pass`, with no checkpoint inside: the Rust side times
    `move_on_after(1 h, async { Ok(()) })`, a scope around a future that is
    ready at once and never yields, so the comparable Python is a scope
    around an operation that does not yield either. (A checkpoint inside
    would add a whole scheduler pass, which the Rust side does not have.)
    """
    move_on_after = trio.move_on_after
    t0 = now()
    for _ in range(n):
        with move_on_after(FAR):
            pass
    return per_op(t0, n)


# The deadline of "100k deadlines firing", seconds.
SHORT = 0.001


async def deadlines_firing(n):
    """n children each waiting forever under a 1 ms deadline that fires;
    the whole nursery's wall time (the 1 ms included) per deadline."""

    async def child():
        with trio.move_on_after(SHORT):
            await trio.sleep_forever()

    t0 = now()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(child)
    return per_op(t0, n)


async def ping_pong(capacity, n):
    """Two tasks, two memory channels of `capacity`; ns per round trip."""
    to_b, from_a = trio.open_memory_channel(capacity)
    to_a, from_b = trio.open_memory_channel(capacity)

    async def pong():
        async for v in from_a:
            await to_a.send(v + 1)

    t0 = now()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pong)
        for i in range(n):
            await to_b.send(i)
            await from_b.receive()
        to_b.close()
    return per_op(t0, n)


async def ping_pong_0(n):
    """"ping-pong capacity 0": unbuffered channels."""
    return await ping_pong(0, n)


async def ping_pong_1(n):
    """"ping-pong capacity 1"."""
    return await ping_pong(1, n)


async def lock(n):
    """Uncontended `async with lock: pass` on a trio.Lock."""
    the_lock = trio.Lock()
    t0 = now()
    for _ in range(n):
        async with the_lock:
            pass
    return per_op(t0, n)


async def to_thread(n):
    """`await trio.to_thread.run_sync(lambda: None)`, sequentially, after
    one untimed call that starts a worker thread; ns per round trip."""
    run_sync = trio.to_thread.run_sync
    noop = lambda: None  # noqa: E731 (the brief's own words)
    await run_sync(noop)
    t0 = now()
    for _ in range(n):
        await run_sync(noop)
    return per_op(t0, n)


# (name, function, full n, quick n, tiny n): operations per round.
WORKLOADS = [
    ("spawn+join 1k children", spawn_join_1k, 100_000, 20_000, 1_000),
    ("spawn+join 100k children", spawn_join_100k, 100_000, 20_000, 500),
    ("checkpoint: 1 task x 1M", checkpoints, 1_000_000, 100_000, 500),
    ("checkpoint: 1000 tasks x 1k", checkpoints_many, 1_000_000, 100_000, 1_000),
    ("deadline scope enter+exit, not firing", deadline_not_firing, 200_000, 50_000, 500),
    ("100k deadlines firing", deadlines_firing, 100_000, 20_000, 300),
    ("ping-pong capacity 0", ping_pong_0, 50_000, 10_000, 300),
    ("ping-pong capacity 1", ping_pong_1, 50_000, 10_000, 300),
    ("uncontended lock acquire+release", lock, 200_000, 50_000, 500),
    ("to_thread round trip", to_thread, 10_000, 2_000, 200),
]

ROUNDS = {"full": 5, "quick": 3, "tiny": 1}
COLUMN = {"full": 2, "quick": 3, "tiny": 4}


def emit(obj):
    """One JSON line, flushed at once."""
    print(json.dumps(obj), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(ROUNDS), default="full")
    args = parser.parse_args()
    emit(
        {
            "meta": {
                "trio": trio.__version__,
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "size": args.size,
            }
        }
    )
    for workload in WORKLOADS:
        name, fn, n = workload[0], workload[1], workload[COLUMN[args.size]]
        figures = []
        for _ in range(ROUNDS[args.size]):
            gc.collect()
            figures.append(trio.run(fn, n))
        emit({"name": name, "ns_per_op": statistics.median_high(figures)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
