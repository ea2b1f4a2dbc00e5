"""The house's floors, from the code's own imports (README, "Layout").

`deploy` stands on everything; `gateway/` and `consumers/` stand on `schemas/` and never
on each other; `schemas/` stands on nothing of ours; sinks do not reach into the fan-out.
Every import counts, including those inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("deploy", "gateway", "consumers", "schemas")

# (importing package or sub-package, packages it must not import)
FORBIDDEN: list[tuple[str, tuple[str, ...]]] = [
    ("schemas", ("deploy", "gateway", "consumers")),
    ("gateway", ("deploy", "consumers")),
    ("consumers", ("deploy", "gateway")),
    ("consumers/sinks", ("consumers.fanout",)),
]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from gateway import app` imports gateway.app
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def crosses(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == f or module.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_imports_point_down(package: str, forbidden: tuple[str, ...]) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}: no Python files (the layout changed; update this test)"
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in files
        for module in sorted(imported_modules(path))
        if crosses(module, forbidden)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    """The parser above finds imports in every position the rule cares about."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway.config import Settings\n"
        "def f():\n    import consumers.fanout.policy\n"
        "from deploy import cli\n",
        encoding="utf-8",
    )
    found = imported_modules(sample)
    assert crosses("gateway.config", ("gateway",)) and "gateway.config" in found
    assert "consumers.fanout.policy" in found
    assert "deploy.cli" in found
    assert all(m.split(".")[0] in (*OURS, "typing") for m in found)
