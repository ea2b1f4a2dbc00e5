"""The documentation's code examples run as printed: the custom verifier and the custom
sink, plugged in through the config exactly as the docs show (``module:attribute``); every
TOML example parses with the real config loader; every `webhook-bridge` command line
parses with the real CLI."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
import textwrap
import tomllib
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from consumers.sinks import Event, SinkContext, build_sink
from deploy.cli import build_parser
from gateway.sources import build_verifiers
from gateway.verify.base import InboundRequest
from schemas import config
from schemas.errors import VerificationError
from tests.receiver_support import envelope
from tests.support import DEMO_ENV, settings_from_toml

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
BLOCK = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [
        textwrap.dedent("\n".join(line[len(indent) :] for line in body.splitlines()))
        for indent, lang, body in BLOCK.findall(DOCS)
        if lang == language
    ]


def block(language: str, containing: str) -> str:
    for body in blocks(language):
        if containing in body:
            return body
    raise AssertionError(f"no ```{language} block with {containing!r} in README.md or docs/")


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
    verifier = build_verifiers(settings)["acme"]
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


def test_every_toml_example_loads_with_the_real_config_parser() -> None:
    """Plugin examples (``module:Class``) are run by the tests above; the rest must load."""
    examples = blocks("toml")
    assert examples
    for text in examples:
        raw = tomllib.loads(text)
        plugin = any(":" in str(t.get("type", t.get("scheme", ""))) for t in _tables(raw))
        if plugin:
            continue
        named = {str(n) for t in _tables(raw) for n in list(t.get("secrets", []))}  # type: ignore[call-overload]
        env = {**DEMO_ENV, **dict.fromkeys(named, "an-example-secret-of-32-characters")}
        raw.setdefault("kafka", {}).setdefault("bootstrap.servers", "127.0.0.1:9092")
        config.parse(raw, env)


def _tables(raw: dict[str, object]) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for section in ("sources", "sinks"):
        value = raw.get(section, {})
        if isinstance(value, dict):
            found += [t for t in value.values() if isinstance(t, dict)]
    return found


def test_every_command_line_in_the_docs_parses_with_the_real_cli() -> None:
    lines = [
        line.split(" #")[0].strip()
        for lang in ("", "sh", "bash", "shell", "console")
        for body in blocks(lang)
        for line in body.splitlines()
        if "webhook-bridge " in line and not line.lstrip().startswith("#")
    ]
    assert lines
    for line in lines:
        argv = shlex.split(line.split("webhook-bridge ", 1)[1])
        try:
            build_parser(argv[0]).parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"the CLI refuses a documented command: {line}") from exc
