"""`python -m deploy.compile`: compile the hot modules with mypyc, in place.

    python -m deploy.compile           # build (what `make` runs); no compiler: say so, exit 0
    python -m deploy.compile --clean   # remove every extension: everything runs as Python

The modules are `schemas.compiled.HOT_MODULES`; one shared mypyc runtime
(`schemas/compiled__mypyc.*.so`). Build files go to build/mypyc/. Without a C compiler or
mypyc (a test extra) the bridge runs the same code as Python and this says so; a compiler
that is there but fails is an error (exit 1), with mypyc's output.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from schemas.compiled import GROUP, HOT_MODULES, ROOT, extensions


def clean(root: Path = ROOT) -> int:
    removed = 0
    for package in ("schemas", "gateway", "consumers", "deploy"):
        for source in (root / package).rglob("*.py"):
            for extension in extensions(source):
                extension.unlink()
                removed += 1
    for runtime in (root / "schemas").glob("compiled__mypyc.*"):
        runtime.unlink()
        removed += 1
    return removed


def missing_tools() -> str | None:
    """What is missing to compile here, or None."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        return f"no {exc.name} (installed with the test extra)"
    return None


def build(root: Path = ROOT) -> int:
    from mypyc.build import mypycify
    from setuptools import setup

    work = root / "build" / "mypyc"
    work.mkdir(parents=True, exist_ok=True)
    output = io.StringIO()
    previous = Path.cwd()
    os.chdir(root)  # mypycify takes paths relative to the root, as modules are named
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            setup(
                name="webhook-bridge-compiled",
                ext_modules=mypycify(list(HOT_MODULES), group_name=GROUP, target_dir=str(work)),
                script_args=["build_ext", "--inplace", "--build-temp", str(work / "temp")],
            )
    except (SystemExit, Exception) as exc:  # setuptools exits on a compiler error
        clean(root)
        print(output.getvalue()[-4000:], file=sys.stderr)
        print(f"compile: mypyc failed ({exc}); nothing compiled", file=sys.stderr)
        return 1
    finally:
        os.chdir(previous)
    # setuptools copies an unchanged per-module shim with its old time (the code itself is
    # in the shared runtime): mark every extension as built now, so none looks stale.
    for module in HOT_MODULES:
        for extension in extensions(root / module):
            extension.touch()
    print(f"compile: {len(HOT_MODULES)} modules compiled with mypyc (schemas/compiled.py)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.compile", description=__doc__)
    parser.add_argument("--clean", action="store_true", help="remove every compiled extension")
    args = parser.parse_args(argv)
    if args.clean:
        print(f"compile: removed {clean()} extension file(s); everything runs as Python")
        return 0
    missing = missing_tools()
    if missing is not None:
        clean()
        print(f"compile: {missing}; the hot modules run as Python (the same code, slower)")
        return 0
    return build()


if __name__ == "__main__":
    raise SystemExit(main())
