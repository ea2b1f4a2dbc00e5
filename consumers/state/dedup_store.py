"""The compactor's memory of seen event ids, per (provider, input partition).

Two implementations behind one interface:

- `RocksDedupStore` (production): RocksDB through ``rocksdict``. Ten million ids
  over a 7-day horizon must not live in the Python heap (a dict of 10M byte
  strings is over 1 GB of RSS and is lost on a crash); RocksDB keeps them on disk
  with a bounded block cache and write buffers, gives fast point lookups (bloom
  filters), and doubles as the local *snapshot*: it records, per partition, the
  changelog offset it has applied up to, so a restart replays only the tail of
  ``<prefix>.<provider>.dedup-state`` instead of the whole topic.
- `MemoryDedupStore`: a dict, for unit tests.

The Kafka changelog is the source of truth. Writes reach the store only after
the transaction that carried their changelog records committed (`write`), so an
aborted transaction never leaves an id remembered locally that Kafka forgot.

Key layout (RocksDB, one database per provider)::

    b"i" + partition(>H) + event id          -> first_seen_ms(>q) + expiry_ms(>q)
    b"x" + partition(>H) + expiry_ms(>q) + id -> b""          (expiry index for the purge)
    b"m" + partition(>H)                      -> next changelog offset to replay (>q)

Writes are blind: storing an id does not read its previous value, so loading or
restoring millions of ids costs two puts per id, not a point lookup that slows as
the database outgrows its cache. An id stored again (seen again after expiry, or
replayed) therefore leaves its old expiry-index entry behind; `expired` checks
every index entry against the id's current value and deletes the stale ones as
it meets them. Deleting an id (the purge) reads its value, in one multi-get per
write, to delete the matching index entry at once.
"""

from __future__ import annotations

import heapq
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

_VALUE = struct.Struct(">qq")
_PART = struct.Struct(">H")
_INDEX = struct.Struct(">Hq")
_OFFSET = struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class Seen:
    first_seen_ms: int
    expiry_ms: int

    def encode(self) -> bytes:
        return _VALUE.pack(self.first_seen_ms, self.expiry_ms)

    @classmethod
    def decode(cls, data: bytes) -> Seen:
        first, expiry = _VALUE.unpack_from(data)
        return cls(first, expiry)


# (partition, event id, Seen or None for a delete)
Change = tuple[int, bytes, Seen | None]


class DedupStore(Protocol):
    """Per-provider store; every method names the input partition."""

    def get(self, partition: int, event_id: bytes) -> Seen | None: ...

    def write(self, changes: Iterable[Change], checkpoints: dict[int, int]) -> None:
        """Apply committed changes and move the partitions' replay checkpoints, atomically."""

    def checkpoint(self, partition: int) -> int:
        """Next changelog offset to replay for this partition (0: from the start)."""

    def expired(self, partition: int, now_ms: int, limit: int) -> list[bytes]:
        """Up to `limit` ids of this partition whose expiry is at or before now."""

    def drop(self, partition: int) -> None:
        """The partition was revoked: forget it unless kept as a snapshot."""

    def forget(self, partition: int) -> None:
        """Forget a partition for good (its snapshot no longer matches the changelog)."""

    def count(self) -> int:
        """Remembered ids (an estimate for RocksDB)."""

    def close(self) -> None: ...


class MemoryDedupStore:
    """Dict + expiry heap. Keeps no snapshot: `drop` forgets and checkpoints restart at 0."""

    keeps_snapshot = False

    def __init__(self) -> None:
        self._ids: dict[tuple[int, bytes], Seen] = {}
        self._expiry: dict[int, list[tuple[int, bytes]]] = {}
        self._checkpoints: dict[int, int] = {}

    def get(self, partition: int, event_id: bytes) -> Seen | None:
        return self._ids.get((partition, event_id))

    def write(self, changes: Iterable[Change], checkpoints: dict[int, int]) -> None:
        for partition, event_id, seen in changes:
            if seen is None:
                self._ids.pop((partition, event_id), None)
            else:
                self._ids[(partition, event_id)] = seen
                heapq.heappush(self._expiry.setdefault(partition, []), (seen.expiry_ms, event_id))
        self._checkpoints.update(checkpoints)

    def checkpoint(self, partition: int) -> int:
        return self._checkpoints.get(partition, 0)

    def expired(self, partition: int, now_ms: int, limit: int) -> list[bytes]:
        heap = self._expiry.get(partition, [])
        out: list[bytes] = []
        while heap and heap[0][0] <= now_ms and len(out) < limit:
            expiry_ms, event_id = heapq.heappop(heap)
            seen = self._ids.get((partition, event_id))
            if seen is not None and seen.expiry_ms == expiry_ms:  # else: stale heap entry
                out.append(event_id)
        return out

    def drop(self, partition: int) -> None:
        self._ids = {k: v for k, v in self._ids.items() if k[0] != partition}
        self._expiry.pop(partition, None)
        self._checkpoints.pop(partition, None)

    def forget(self, partition: int) -> None:
        self.drop(partition)

    def count(self) -> int:
        return len(self._ids)

    def close(self) -> None:
        self._ids.clear()


class RocksDedupStore:
    """RocksDB snapshot of the dedup changelog; bounded RSS (see module docstring)."""

    keeps_snapshot = True

    def __init__(self, path: str, cache_mb: int = 64, write_buffer_mb: int = 32) -> None:
        from rocksdict import BlockBasedIndexType, BlockBasedOptions, Cache, Options, Rdict

        os.makedirs(path, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(write_buffer_mb << 20)
        opts.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(cache_mb << 20))
        table.set_bloom_filter(10, False)
        # Partitioned index and filters: a 64 MB table file has a ~1 MB index and a
        # ~1.6 MB filter, bigger than a block-cache shard (64 MB / 64 shards), so as
        # single blocks they were evicted at once and re-read and re-parsed on every
        # lookup (about 2,000 lookups/s at 10M ids). Split into 4 KB partitions they
        # stay cached, under the cache's bound, with only the top level pinned.
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_block_based_table_factory(table)
        self._db: Any = Rdict(path, opts)
        self.path = path

    def get(self, partition: int, event_id: bytes) -> Seen | None:
        data = self._db.get(b"i" + _PART.pack(partition) + event_id)
        return None if data is None else Seen.decode(data)

    def write(self, changes: Iterable[Change], checkpoints: dict[int, int]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        deletes: list[tuple[int, bytes, bytes]] = []
        for partition, event_id, seen in changes:
            key = b"i" + _PART.pack(partition) + event_id
            if seen is None:
                deletes.append((partition, event_id, key))
            else:  # blind: an older index entry of this id is cleaned up by `expired`
                batch.put(key, seen.encode())
                batch.put(b"x" + _INDEX.pack(partition, seen.expiry_ms) + event_id, b"")
        if deletes:
            olds = self._db.get([key for _, _, key in deletes])
            for (partition, event_id, key), old in zip(deletes, olds, strict=True):
                batch.delete(key)
                if old is not None:
                    expiry_ms = Seen.decode(old).expiry_ms
                    batch.delete(b"x" + _INDEX.pack(partition, expiry_ms) + event_id)
        for partition, offset in checkpoints.items():
            batch.put(b"m" + _PART.pack(partition), _OFFSET.pack(offset))
        self._db.write(batch)

    def checkpoint(self, partition: int) -> int:
        data = self._db.get(b"m" + _PART.pack(partition))
        return 0 if data is None else int(_OFFSET.unpack(data)[0])

    def expired(self, partition: int, now_ms: int, limit: int) -> list[bytes]:
        from rocksdict import WriteBatch

        start = b"x" + _INDEX.pack(partition, 0)  # expiries are positive ms
        stop = b"x" + _INDEX.pack(partition, now_ms + 1)
        head = 1 + _PART.size
        out: list[bytes] = []
        stale = WriteBatch(raw_mode=True)
        stale_count = 0
        for key in self._db.keys(from_key=start):
            if key >= stop or len(out) >= limit:
                break
            event_id = bytes(key[1 + _INDEX.size :])
            current = self._db.get(b"i" + key[1:head] + event_id)
            if current is None or _OFFSET.pack(Seen.decode(current).expiry_ms) != key[head:][:8]:
                stale.delete(key)  # left by a blind overwrite: not this id's expiry any more
                stale_count += 1
                continue
            out.append(event_id)
        if stale_count:
            self._db.write(stale)
        return out

    def drop(self, partition: int) -> None:
        # The snapshot stays: on re-assignment only the changelog tail after
        # checkpoint(partition) is replayed, which includes another owner's writes.
        return

    def forget(self, partition: int) -> None:
        part = _PART.pack(partition)
        for prefix in (b"i", b"x"):
            self._db.delete_range(prefix + part, prefix + _PART.pack(partition + 1))
        self._db.delete(b"m" + part)

    def count(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0) // 2

    def close(self) -> None:
        self._db.close()
