"""The runtime shared by the compactor and the reorderer.

- `loop`: the transactional consume-process-produce loop (the commit protocol).
- `changelog`: restoring state from a changelog partition up to a barrier record.
- `attributes`: routing attributes from the CloudEvents headers (decode only as fallback).
- `process`: CLI glue: config, logs, ops server, signals.
"""
