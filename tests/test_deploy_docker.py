"""deploy/Dockerfile and .dockerignore: the image's promises, checked statically.

No Docker engine runs in CI, so nothing is built here: the Dockerfile is parsed and
its key properties asserted, and hadolint lints it when `make tools` installed it.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.deploy_support import DOCKERFILE, DOCKERIGNORE, ROOT, find_tool, require_tool

Instruction = tuple[str, str]  # (KEYWORD, arguments)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined; comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued instruction"
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    out: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            out.append([])
        assert out, "an instruction before the first FROM"
        out[-1].append(instruction)
    return out


def test_every_base_image_is_pinned_slim_python_311(instructions: list[Instruction]) -> None:
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), (
            f"base image {image!r} is not a pinned slim Python 3.11 (python:3.11.N-slim-<distro>)"
        )
        assert "latest" not in image


def test_builder_builds_a_wheel_and_runtime_installs_only_wheels(
    instructions: list[Instruction],
) -> None:
    builder, *_, runtime = stages(instructions)
    assert builder[0][1].endswith(" AS builder")
    builder_runs = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "pip wheel" in builder_runs
    runtime_runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    assert "from=builder" in runtime_runs
    assert "--no-index" in runtime_runs, "runtime installs offline, from the builder's wheels"
    assert re.search(r"pip install [^&]*\.whl", runtime_runs)
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in runtime_runs, f"runtime stage installs {tool.strip()}"
    runtime_copies = [args for keyword, args in runtime if keyword in ("COPY", "ADD")]
    assert not runtime_copies, f"runtime copies source files: {runtime_copies}"


def test_builder_copies_exist_and_pass_dockerignore(instructions: list[Instruction]) -> None:
    builder = stages(instructions)[0]
    ignore = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore is an allow-list"
    for keyword, args in builder:
        if keyword != "COPY" or "--from" in args:
            continue
        *sources, _dest = args.split()
        for source in sources:
            if "[" in source:  # optional file via glob, e.g. requirements.loc[k]
                continue
            if "*" in source:  # a glob of files, e.g. deploy/*.py
                assert list(ROOT.glob(source)), f"COPY {source}: matches nothing in the repo"
            else:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repo"
            assert source in allowed, f"COPY {source}: excluded by .dockerignore"


def test_runtime_runs_as_non_root_with_healthcheck_and_entrypoint(
    instructions: list[Instruction],
) -> None:
    runtime = stages(instructions)[-1]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "numeric non-root uid (lets runAsNonRoot verify it)"

    healthchecks = [args for keyword, args in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    assert "/healthz" in healthchecks[0]
    assert "HEALTHCHECK_PORT" in healthchecks[0]
    assert "'8000'" in healthchecks[0], "port defaults to the gateway's 8000"
    envs = " ".join(args for keyword, args in runtime if keyword == "ENV")
    assert "HEALTHCHECK_PORT=8000" in envs

    entrypoint = [args for keyword, args in runtime if keyword == "ENTRYPOINT"]
    cmd = [args for keyword, args in runtime if keyword == "CMD"]
    assert json.loads(entrypoint[-1]) == ["webhook-bridge"]
    assert json.loads(cmd[-1]) == ["gateway", "--config", "/etc/webhook-bridge/config.toml"]


def test_healthcheck_command_is_valid_python(instructions: list[Instruction]) -> None:
    args = next(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    exec_form = json.loads(args[args.index("CMD") + 3 :].strip())
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "<healthcheck>", "exec")


def test_hadolint_passes() -> None:
    hadolint = find_tool("hadolint")
    require_tool("hadolint", hadolint, "WB_TEST_REQUIRE_HADOLINT")
    assert hadolint is not None
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
