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


def test_hand_written_inits_take_every_field_by_name_and_set_it() -> None:
    """The per-request dataclasses write their own __init__ (init=False, so that mypyc
    compiles it): each must take every field by its name and set that field to it, and
    keep the defaults the generated one had."""
    import dataclasses

    from gateway.verify.base import InboundRequest, VerifiedRequest
    from gateway.verify.hmac_scheme import Signed
    from schemas.envelope import Envelope, Verification

    verification, inbound = Verification("hmac"), InboundRequest({}, b"")
    # every field by name, each with a value of its type that no other field has
    every: list[tuple[type, dict[str, object]]] = [
        (Verification, {"scheme": "s", "key_id": "k", "mode": "m"}),
        (InboundRequest, {"headers": {"h": "v"}, "body": b"b"}),
        (
            VerifiedRequest,
            {
                "request": inbound,
                "scheme": "s",
                "key_id": "k",
                "mode": "m",
                "signed_timestamp": 1.5,
                "event_id": "e",
                "event_type": "t",
            },
        ),
        (
            Signed,
            {
                "message": b"m",
                "entries": (("v1", "x"),),
                "timestamp": 7,
                "event_id": "e",
                "event_type": "t",
            },
        ),
        (
            Envelope,
            {
                "event_id": "e",
                "event_id_origin": "eo",
                "provider": "p",
                "source": "s",
                "event_type": "t",
                "occurred_at": 1,
                "occurred_at_origin": "oo",
                "received_at": 2,
                "ordering_key": "k",
                "content_type": "c",
                "body": b"b",
                "headers": {"h": "v"},
                "verification": verification,
                "request_id": "r",
                "quarantine_reason": "q",
                "extra": {"x": 1},
            },
        ),
    ]
    for cls, given in every:
        fields = dataclasses.fields(cls)
        assert [f.name for f in fields] == list(given), cls.__name__
        built = cls(**given)
        assert {f.name: getattr(built, f.name) for f in fields} == given, cls.__name__
        assert dataclasses.replace(built) == built
    assert (Verification("s").key_id, Verification("s").mode) == (None, None)
    proof = VerifiedRequest(inbound, "s")
    assert (proof.key_id, proof.mode, proof.signed_timestamp) == (None, None, None)
    assert (proof.event_id, proof.event_type) == (None, None)
    envelope = Envelope("e", "o", "p", "s", "t", 1, "o", 2, "k", "c", b"", {}, verification, "r")
    assert envelope.quarantine_reason is None and envelope.extra == {}
