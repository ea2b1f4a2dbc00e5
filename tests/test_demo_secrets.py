"""The demo secrets `up` keeps for the next run and for `send`: only the user reads them."""

from __future__ import annotations

import stat
from pathlib import Path

from deploy import demo_secrets

WANTED = {"JIKO_WEBHOOK_SECRET": "token", "DEMO_RECEIVER_SECRET": "whsec"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fill_environment_writes_new_secrets_to_a_file_only_the_user_can_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".state" / "demo-secrets.env"
    env: dict[str, str] = {}
    reused, generated = demo_secrets.fill_environment(WANTED, path, env)
    assert (reused, generated) == ([], list(WANTED))
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert demo_secrets.read(path) == env
    assert env["DEMO_RECEIVER_SECRET"].startswith("whsec_")
    assert env["JIKO_WEBHOOK_SECRET"].startswith("demo_")


def test_fill_environment_reuses_kept_secrets_and_a_set_variable_wins(tmp_path: Path) -> None:
    path = tmp_path / "demo-secrets.env"
    first: dict[str, str] = {}
    demo_secrets.fill_environment(WANTED, path, first)
    path.chmod(0o644)  # someone loosened it
    second = {"JIKO_WEBHOOK_SECRET": "mine-from-the-shell"}
    reused, generated = demo_secrets.fill_environment(WANTED, path, second)
    assert (reused, generated) == (["DEMO_RECEIVER_SECRET"], [])
    assert second == {**first, "JIKO_WEBHOOK_SECRET": "mine-from-the-shell"}
    assert demo_secrets.read(path) == first  # the file keeps its own value
    assert mode(path) == 0o600


def test_fill_environment_replaces_a_kept_value_of_the_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "demo-secrets.env"
    demo_secrets.write(path, {"DEMO_RECEIVER_SECRET": "demo_not-a-whsec", "OTHER": "x"})
    env: dict[str, str] = {}
    assert demo_secrets.fill_environment(WANTED, path, env) == (
        [],
        ["JIKO_WEBHOOK_SECRET", "DEMO_RECEIVER_SECRET"],
    )
    assert env["DEMO_RECEIVER_SECRET"].startswith("whsec_")
    assert demo_secrets.read(path)["OTHER"] == "x"  # another config's secrets stay


def test_with_fallback_fills_only_unset_variables_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "demo-secrets.env"
    path.write_text("# comment\nexport A='from-file'\nB=\"from-file\"\nC=from-file\nnot a line\n")
    env, used = demo_secrets.with_fallback({"A": "set", "B": ""}, path)
    assert env == {"A": "set", "B": "from-file", "C": "from-file"}
    assert used == ["B", "C"]
    assert demo_secrets.with_fallback({"A": "x"}, tmp_path / "absent") == ({"A": "x"}, [])
