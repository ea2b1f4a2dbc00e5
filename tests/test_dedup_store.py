"""Dedup stores: TTL, purge, snapshot + checkpoint, and bounded memory for RocksDB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.state.dedup_store import DedupStore, MemoryDedupStore, RocksDedupStore, Seen
from tests.consumer_support import REPO


@pytest.fixture(params=["memory", "rocksdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DedupStore]:
    made: DedupStore = (
        MemoryDedupStore() if request.param == "memory" else RocksDedupStore(str(tmp_path / "db"))
    )
    yield made
    made.close()


def test_remembers_per_partition_and_expires(store: DedupStore) -> None:
    store.write(
        [(0, b"a", Seen(1000, 5000)), (1, b"a", Seen(1000, 9000)), (0, b"b", Seen(1000, 7000))],
        {0: 3},
    )
    assert store.get(0, b"a") == Seen(1000, 5000)
    assert store.get(1, b"a") == Seen(1000, 9000)
    assert store.get(2, b"a") is None
    assert store.checkpoint(0) == 3 and store.checkpoint(1) == 0
    assert store.expired(0, 4999, 100) == []
    assert store.expired(0, 7000, 100) == [b"a", b"b"]
    assert store.expired(1, 7000, 100) == []


def test_purge_then_delete_bounds_the_store(store: DedupStore) -> None:
    store.write([(0, f"id-{i}".encode(), Seen(0, 1000 + i)) for i in range(1000)], {})
    assert 900 <= store.count() <= 1100  # RocksDB's count is an estimate
    expired = store.expired(0, 1499, 10_000)
    assert len(expired) == 500
    store.write([(0, i, None) for i in expired], {0: 10})
    assert store.get(0, b"id-1") is None and store.get(0, b"id-999") is not None
    assert store.expired(0, 1499, 10_000) == []


def test_overwrite_moves_the_expiry(store: DedupStore) -> None:
    store.write([(0, b"a", Seen(0, 100))], {})
    store.write([(0, b"a", Seen(200, 900))], {})
    assert store.expired(0, 500, 10) == []
    assert store.expired(0, 900, 10) == [b"a"]


def test_rocksdb_snapshot_survives_reopen_and_forget_clears_it(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    first = RocksDedupStore(path)
    first.write([(2, b"x", Seen(1, 2)), (3, b"y", Seen(1, 2))], {2: 77, 3: 5})
    first.drop(2)  # a revoked partition is kept as a snapshot
    first.close()
    again = RocksDedupStore(path)
    assert again.get(2, b"x") == Seen(1, 2) and again.checkpoint(2) == 77
    again.forget(2)
    assert again.get(2, b"x") is None and again.checkpoint(2) == 0
    assert again.get(3, b"y") == Seen(1, 2) and again.checkpoint(3) == 5
    again.close()


def test_memory_store_forgets_a_revoked_partition() -> None:
    mem = MemoryDedupStore()
    mem.write([(0, b"a", Seen(0, 10)), (1, b"b", Seen(0, 10))], {0: 4})
    mem.drop(0)
    assert mem.get(0, b"a") is None and mem.checkpoint(0) == 0
    assert mem.get(1, b"b") is not None


RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    from consumers.state.dedup_store import RocksDedupStore, Seen
    store = RocksDedupStore(sys.argv[1])
    n, chunk = int(sys.argv[2]), 20_000
    for start in range(0, n, chunk):
        store.write([(start % 3, b"evt_%024d" % i, Seen(i, 10**13 + i))
                     for i in range(start, start + chunk)], {})
    assert store.get(0, b"evt_%024d" % 0) is not None
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
""")


@pytest.mark.slow
def test_rocksdb_memory_stays_bounded_as_ids_grow(tmp_path: Path) -> None:
    """Peak RSS with 600k ids is not much above 200k ids: the ids live on disk."""
    peaks = []
    for n in (200_000, 600_000):
        out = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(tmp_path / f"db{n}"), str(n)],
            cwd=REPO,
            env={"PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        peaks.append(int(out.stdout.split()[-1]))
    print(f"peak RSS MiB: 200k ids {peaks[0]}, 600k ids {peaks[1]}")
    # A dict would grow by ~80 MiB for 400k more ids; RocksDB by its buffers at most.
    assert peaks[1] - peaks[0] < 60


def test_an_overwritten_expiry_is_skipped_by_the_purge_and_not_counted(store: DedupStore) -> None:
    store.write([(0, b"a", Seen(0, 100)), (0, b"b", Seen(0, 150))], {})
    store.write([(0, b"a", Seen(200, 900))], {})  # a's old expiry (100) is stale now
    assert store.expired(0, 500, 1) == [b"b"]
    store.write([(0, b"b", None)], {})
    assert store.expired(0, 500, 10) == []
    assert store.get(0, b"a") == Seen(200, 900)
    store.write([(0, b"a", None)], {})
    assert store.expired(0, 1000, 10) == [] and store.get(0, b"a") is None
