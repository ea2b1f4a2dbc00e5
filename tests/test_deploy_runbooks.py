"""Commands quoted in the alerts' runbooks (docs/operations.md) are commands the real CLI
accepts.

An on-call engineer pastes a runbook's `webhook-bridge ...` line as it is. Each one quoted
in backticks in an alert's section is parsed by the parser `deploy.cli` builds, with every
``<X>`` placeholder replaced by each value the code gives the alert's label X under the
shipped deploy configs
(`label_domains()`), so a wrong option, a missing argument or a renamed command fails CI.
A `replay` must also name its input (without ``--from-dlq`` or ``--topic`` it re-sends the
sink's whole ``.ordered`` history), and ``--config`` must be the path the containers mount
(the image has no ``deploy/demo.toml``, the default).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.cli import build_parser
from schemas.config import Settings, load
from tests.deploy_support import (
    COMPOSE_CONFIG,
    COMPOSE_FILE,
    K8S_CONFIG,
    K8S_DIR,
    alert_rules,
    allowed_values,
    dummy_env,
    label_domains,
    load_yaml,
    load_yaml_docs,
    metric_names_in,
    runbook_sections,
)

COMMAND_RE = re.compile(r"`(webhook-bridge\b[^`]*)`")
TEMPLATE_RE = re.compile(r"<([^<>]*)>")
LABEL_TEMPLATE_RE = re.compile(r"(\w+)")
DLQ_METRIC = "webhook_bridge_fanout_dead_lettered_total"
# The configs a runbook command runs against: the ones the containers mount.
RUN_CONFIGS = {"compose": COMPOSE_CONFIG, "k8s": K8S_CONFIG}


@dataclass(frozen=True)
class Quoted:
    alert: str
    annotation: str
    command: str  # as written, with label templates
    metrics: frozenset[str]  # what the alert's expression queries


def quoted_commands() -> list[Quoted]:
    sections = runbook_sections()
    return [
        Quoted(
            str(rule["alert"]),
            "runbook",
            " ".join(command.split()),
            frozenset(metric_names_in([str(rule["expr"])])),
        )
        for rule in alert_rules()
        for command in COMMAND_RE.findall(sections.get(str(rule["alert"]), ""))
    ]


def deploy_settings(path: Path) -> Settings:
    return load(path, env=dummy_env(path))


def renderings(quoted: Quoted, settings: Settings) -> list[str]:
    """The command with its label templates filled in, once per combination of values."""
    domains = label_domains(settings)
    templates = TEMPLATE_RE.findall(quoted.command)
    labels: list[str] = []
    for template in templates:
        match = LABEL_TEMPLATE_RE.fullmatch(template)
        assert match is not None, f"{quoted.alert}: only <label> belongs in a command: {template}"
        labels.append(match.group(1))
    names = sorted(set(labels))
    choices: list[list[str]] = []
    for label in names:
        values: set[str] = set()
        for metric in quoted.metrics:
            values |= allowed_values(domains, metric, label) or set()
        assert values, f"{quoted.alert}: no metric of its expression has label {label!r}"
        choices.append(sorted(values))
    return [
        fill(quoted.command, dict(zip(names, combination, strict=True)))
        for combination in itertools.product(*choices)
    ]


def fill(command: str, values: Mapping[str, str]) -> str:
    """`command` with each ``<X>`` replaced by values[X], shell-quoted."""

    def value(template: re.Match[str]) -> str:
        label = LABEL_TEMPLATE_RE.fullmatch(template.group(1))
        assert label is not None
        return shlex.quote(values[label.group(1)])

    return TEMPLATE_RE.sub(value, command)


def parse(command: str) -> argparse.Namespace:
    """`command` through the CLI's own parser, as `deploy.cli.main` does, without running it."""
    argv = shlex.split(command)
    assert argv[0] == "webhook-bridge", command
    argv = argv[1:]
    name = next((a for a in argv if not a.startswith("-")), None)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            return build_parser(name).parse_args(argv)
    except SystemExit:
        pytest.fail(f"`{command}` does not parse: {errors.getvalue().strip()}")


def mounted_config_paths() -> set[str]:
    """The --config every bridge container gets, in compose and in the k8s workloads."""
    commands: list[list[str]] = [
        [str(a) for a in service["command"]]
        for service in load_yaml(COMPOSE_FILE)["services"].values()
        if isinstance(service.get("command"), list)
    ]
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in load_yaml_docs(path):
            spec = doc.get("spec", {})
            pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec", {})
            commands += [[str(a) for a in c.get("args", [])] for c in pod.get("containers", [])]
    return {argv[argv.index("--config") + 1] for argv in commands if "--config" in argv}


QUOTED = quoted_commands()


def test_runbooks_quote_commands() -> None:
    """Guards the parametrised test below against an extraction that finds nothing."""
    assert any(q.alert == "WebhookBridgeDeadLetters" for q in QUOTED), QUOTED


def test_runbooks_quote_every_webhook_bridge_command() -> None:
    """A command written without backticks would not be checked: quote them all."""
    from deploy.cli import COMMANDS

    bare = re.compile(rf"webhook-bridge ({'|'.join(map(re.escape, COMMANDS))})\b")
    sections = runbook_sections()
    for rule in alert_rules():
        runbook = COMMAND_RE.sub("", sections[str(rule["alert"])])
        assert not bare.search(runbook), f"{rule['alert']}: put the command in backticks"


@pytest.mark.parametrize(
    "quoted", QUOTED, ids=[f"{q.alert}-{q.annotation}-{i}" for i, q in enumerate(QUOTED)]
)
@pytest.mark.parametrize("deploy", sorted(RUN_CONFIGS))
def test_quoted_command_parses_with_the_cli(
    quoted: Quoted, deploy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.replay import range_from_args

    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)  # the --config default: as in the image
    settings = deploy_settings(RUN_CONFIGS[deploy])
    mounted = mounted_config_paths()
    assert len(mounted) == 1, mounted
    commands = renderings(quoted, settings)
    assert commands
    for command in commands:
        args = parse(command)
        if hasattr(args, "config"):
            assert args.config in mounted, (
                f"`{command}`: pass --config {next(iter(mounted))}, the file the containers mount"
            )
        if args.command == "replay":
            assert args.from_dlq or args.topic, (
                f"`{command}` re-sends the sink's whole .ordered history: "
                "name the input with --from-dlq or --topic"
            )
            if DLQ_METRIC in quoted.metrics:
                assert args.from_dlq, f"`{command}`: a dead-letter runbook replays --from-dlq"
            range_from_args(settings, args)  # the sink exists in this deploy's config


def test_dead_letter_runbook_dry_runs_the_dlq_replay_first() -> None:
    settings = deploy_settings(K8S_CONFIG)
    for rule in alert_rules():
        if DLQ_METRIC not in metric_names_in([str(rule["expr"])]):
            continue
        quoted = [q for q in QUOTED if q.alert == rule["alert"] and q.annotation == "runbook"]
        replays = [parse(renderings(q, settings)[0]) for q in quoted]
        replays = [a for a in replays if a.command == "replay"]
        assert [a.dry_run for a in replays] == [True, False], (
            f"{rule['alert']}: list with --dry-run, then re-deliver"
        )


def test_the_documented_runbook_base_rewrite_reaches_every_link(tmp_path: Path) -> None:
    """docs/operations.md's `sed` line, run as printed on copies of the two rule files,
    leaves no `your-org` link and keeps every alert's anchor."""
    import shutil
    import subprocess
    import textwrap

    from tests.deploy_support import ROOT, RUNBOOK_BASE

    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"^( *)```sh\n(\1RUNBOOKS=.*?)^\1```", text, re.S | re.M)
    script = textwrap.dedent(block[1])
    base = re.search(r"RUNBOOKS=(\S+)", script)
    assert base is not None
    files = (Path("deploy/prometheus/alerts.yml"), Path("deploy/k8s/prometheusrule.yaml"))
    for relative in files:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    subprocess.run(["bash", "-euc", script], cwd=tmp_path, check=True)
    for relative in files:
        rewritten = (tmp_path / relative).read_text(encoding="utf-8")
        assert "your-org" not in rewritten, relative
        links = (ROOT / relative).read_text(encoding="utf-8").count(RUNBOOK_BASE + "#")
        assert links > 0 and rewritten.count(base.group(1) + "#") == links, relative
