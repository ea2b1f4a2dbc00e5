"""CPU per `normalize()` call for each provider's sample body (not a test).

    python -m tests.bench.bench_normalize [--calls 20000]

The gateway's normalising step alone (parse, selectors, body hash, time parsing,
envelope), in process time, on the demo config's sources: a lever on this step
shows here without HTTP, a broker or another process's noise in wall time.
"""

from __future__ import annotations

import argparse
import time

from deploy.samples import sample_body
from gateway.normalize import normalize
from gateway.verify.base import InboundRequest, VerifiedRequest
from tests.support import gateway_settings, gateway_toml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    settings = gateway_settings(gateway_toml("127.0.0.1:9", "bench"))
    print(f"normalize(), CPU time per call over {args.calls:,} calls:")
    for name, source in settings.sources.items():
        body = sample_body(source.scheme, event_id="evt_bench_1", now=time.time())
        headers = {"content-type": "application/json", "x-request-id": "bench"}
        verified = VerifiedRequest(
            request=InboundRequest(headers, body),
            scheme=source.scheme,
            key_id="bench",
            signed_timestamp=None,
            event_id=None,
        )
        started = time.process_time()
        for _ in range(args.calls):
            normalize(source, verified, received_at_us=1_767_225_600_000_000, request_id="b")
        took = time.process_time() - started
        print(f"  {name:<12} {took / args.calls * 1e6:6.1f} us  ({len(body)} B body)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
