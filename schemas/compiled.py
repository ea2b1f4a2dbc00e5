"""The modules that run compiled (mypyc) where a C compiler is at hand, and a check that
none of them is older than its source.

The hot path's pure-Python modules are strictly typed, so mypyc compiles them to C
extensions beside their sources (`python -m deploy.compile`, run by `make`); Python then
imports the extension instead of the .py. That took 8-20 % off the gateway's CPU per request
(docs/benchmarks.md). Where no compiler or mypyc is installed they run as Python, the same
code. An extension older than its source would run code that is no longer in the source:
`stale()` finds those, and every process and the test suite refuse to start with one.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Paths from the repository root. Only modules whose functions and classes nothing
# patches or subclasses at run time (a compiled class is closed to both).
HOT_MODULES = (
    "schemas/envelope.py",
    "schemas/avro_writer.py",
    "schemas/avro_reader.py",
    "schemas/records.py",
    "schemas/selectors.py",
    "gateway/normalize.py",
    "gateway/verify/base.py",
    "gateway/endpoint.py",
    "gateway/verify/common.py",
    "gateway/verify/hmac_scheme.py",
)
GROUP = "schemas.compiled"  # mypyc's shared runtime: schemas/compiled__mypyc.*.so


def extensions(source: Path) -> list[Path]:
    """The compiled extensions of a module's source that Python would import instead."""
    return [p for suffix in EXTENSION_SUFFIXES if (p := source.with_suffix(suffix)).exists()]


def compiled(root: Path = ROOT) -> list[str]:
    """The hot modules that have an extension."""
    return [m for m in HOT_MODULES if extensions(root / m)]


def stale(root: Path = ROOT) -> list[str]:
    """Modules (any .py under `root`'s packages) whose extension is older than their source."""
    found = []
    for package in ("schemas", "gateway", "consumers", "deploy"):
        for source in sorted((root / package).rglob("*.py")):
            newest = source.stat().st_mtime
            if any(ext.stat().st_mtime < newest for ext in extensions(source)):
                found.append(str(source.relative_to(root)))
    return found


def stale_message(modules: list[str]) -> str:
    return (
        f"compiled module(s) older than their source: {', '.join(modules)}; "
        "run `make compile` (or `python -m deploy.compile`) to rebuild them, or "
        "`python -m deploy.compile --clean` to run everything as Python"
    )
