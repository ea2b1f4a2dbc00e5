"""The hot modules compiled with mypyc (schemas/compiled.py, deploy/compile.py)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from deploy import cli
from deploy.compile import missing_tools
from schemas import compiled

SUFFIX = ".cpython-311-x86_64-linux-gnu.so"


def test_where_a_compiler_is_at_hand_every_hot_module_runs_compiled() -> None:
    loaded = {
        m: importlib.import_module(m[:-3].replace("/", ".")).__file__ for m in compiled.HOT_MODULES
    }
    runs_compiled = {m: not str(path).endswith(".py") for m, path in loaded.items()}
    if missing_tools() is None:  # what `make` builds before the tests
        assert all(runs_compiled.values()), f"run `make compile`: {runs_compiled}"
    else:
        assert not any(runs_compiled.values()), runs_compiled


def _tree(root: Path, *, extension_age_s: float) -> Path:
    package = root / "gateway"
    package.mkdir()
    source = package / "normalize.py"
    source.write_text("x = 1\n")
    extension = package / ("normalize" + SUFFIX)
    extension.write_bytes(b"")
    now = source.stat().st_mtime
    os.utime(extension, (now + extension_age_s, now + extension_age_s))
    return source


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    _tree(tmp_path, extension_age_s=-5)
    assert compiled.stale(tmp_path) == ["gateway/normalize.py"]


def test_an_extension_newer_than_its_source_is_not_stale(tmp_path: Path) -> None:
    _tree(tmp_path, extension_age_s=+5)
    assert compiled.stale(tmp_path) == []


def test_every_command_refuses_to_run_stale_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(compiled, "stale", lambda: ["gateway/normalize.py"])
    assert cli.main(["check-config", "--config", "deploy/demo.toml"]) == 2
    err = capsys.readouterr().err
    assert "gateway/normalize.py" in err and "make compile" in err
