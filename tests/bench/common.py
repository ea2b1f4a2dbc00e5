"""Shared pieces of the benchmarks: pinned processes, readiness waits, tables."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pinned(
    core: int, argv: Sequence[str], env: dict[str, str] | None = None, quiet: bool = True
) -> subprocess.Popen[bytes]:
    """Start a process pinned to one CPU core (taskset), with the repo on PYTHONPATH."""
    full_env = {**os.environ, "PYTHONPATH": REPO, **(env or {})}
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        ["taskset", "-c", str(core), *argv], env=full_env, stdout=out, stderr=out, cwd=REPO
    )


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = [
        f"\n## {title}\n",
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
    return "\n".join(lines)


def machine() -> str:
    return f"{os.cpu_count()} cores, Python {sys.version.split()[0]}"
