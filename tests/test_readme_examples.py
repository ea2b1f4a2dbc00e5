"""The README's code examples run as printed: the custom verifier and the custom sink,
plugged in through the config exactly as the README shows (``module:attribute``)."""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers.sinks import Event, SinkContext, build_sink
from gateway.errors import VerificationError
from gateway.verify.base import InboundRequest
from tests.receiver_support import envelope
from tests.support import DEMO_ENV, settings_from_toml

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", re.S | re.M)


def block(language: str, containing: str) -> str:
    for indent, lang, body in BLOCK.findall(README):
        if lang == language and containing in body:
            return textwrap.dedent("\n".join(line[len(indent) :] for line in body.splitlines()))
    raise AssertionError(f"no ```{language} block with {containing!r} in README.md")


@pytest.fixture
def module() -> Iterator[Callable[[str, str], types.ModuleType]]:
    """An importable module to exec a README block into ("mycompany.sinks", say)."""
    made: list[str] = []

    def make(name: str, code: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        exec(compile(code, f"README.md:{name}", "exec"), mod.__dict__)
        sys.modules[name] = mod
        made.append(name)
        return mod

    yield make
    for name in made:
        sys.modules.pop(name, None)


def test_the_custom_verifier_example_verifies_and_refuses(
    module: Callable[[str, str], types.ModuleType],
) -> None:
    module("readme_acme", block("python", "class AcmeVerifier"))
    settings = settings_from_toml(
        '[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n'
        '[sources.acme]\nscheme = "readme_acme:build"\nsecrets = ["JIKO_WEBHOOK_SECRET"]\n',
        DEMO_ENV,
    )
    verifier = settings.sources["acme"].verifier
    token = DEMO_ENV["JIKO_WEBHOOK_SECRET"]
    ok = verifier.verify(InboundRequest({"x-acme-token": token}, b"{}"), 0.0)
    assert ok.key_id == "JIKO_WEBHOOK_SECRET"
    with pytest.raises(VerificationError) as info:
        verifier.verify(InboundRequest({"x-acme-token": "wrong"}, b"{}"), 0.0)
    assert info.value.reason == "bad_token"


def test_the_custom_sink_example_delivers_with_its_option(
    module: Callable[[str, str], types.ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    module("mycompany.sinks", block("python", "class StdoutSink"))
    toml = block("toml", "mycompany.sinks:StdoutSink")
    settings = settings_from_toml('[kafka]\n"bootstrap.servers" = "127.0.0.1:1"\n' + toml)
    sink = build_sink(settings.sinks["stdout"], SinkContext(settings, {}))

    async def go() -> None:
        result = await sink.deliver(Event(envelope("e1", "K"), b"", b"K", [], "t", 0, 0))
        assert result.outcome == "ok"
        await sink.close()

    asyncio.run(go())
    assert capsys.readouterr().out.strip() == "got acme thing.updated e1"
