"""Stage state: the compactor's dedup store and the reorderer's buffer (pure logic + codecs).

Kafka changelog topics are the source of truth; what lives here is either a local
snapshot (RocksDB) or in-memory state rebuilt from the changelog on assignment.
"""
