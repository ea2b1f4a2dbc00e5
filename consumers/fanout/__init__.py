"""Fan-out: deliver `.ordered` events to the configured sinks (see `runner` for the protocol)."""
