"""`make bench`: every benchmark in turn, each in its own process, tables on stdout.

Benchmarks print figures; they assert nothing about speed. Record the figures
with this command in the README when they change.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = (
    "tests.bench.bench_gateway",
    "tests.bench.bench_direct",
    "tests.bench.bench_consumers",
    "tests.bench.probe_broker",
    "tests.bench.bench_fanout",
)


def main() -> int:
    failed = []
    for module in BENCHMARKS:
        print(f"\n# {module}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", module, *sys.argv[1:]])
        print(f"# {module}: exit {code} in {time.monotonic() - started:.0f}s", flush=True)
        if code != 0:
            failed.append(module)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
