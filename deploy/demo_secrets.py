"""The random demo secrets of `webhook-bridge up`, kept in a file only the user can read.

`up` fills every secret variable the config names but the environment lacks with
a random value, stores it in ``.state/demo-secrets.env`` (mode 0600) and reuses it
on the next run; `webhook-bridge send` reads the same file for any variable that
is unset, so a second terminal needs no pasted secret. The file is shell syntax
(``NAME='value'`` lines): ``set -a; . .state/demo-secrets.env; set +a`` exports
them. Demo only: production sets every secret itself and has no such file.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping, MutableMapping
from pathlib import Path

DEFAULT_PATH = Path(".state") / "demo-secrets.env"
FILE_NAME = DEFAULT_PATH.name
_HEADER = (
    "# Random demo secrets written by `webhook-bridge up` (make run) and reused by its\n"
    "# next run; `webhook-bridge send` reads them for variables that are unset.\n"
    "# Delete this file for new ones. Never use these values in production.\n"
)


def make(fmt: str) -> str:
    """A random secret: ``whsec_<base64>`` (Standard Webhooks) or an opaque token."""
    if fmt == "whsec":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return "demo_" + secrets.token_urlsafe(24)


def fits(value: str, fmt: str) -> bool:
    """Whether a kept value still has the format the config now wants."""
    return value.startswith("whsec_") if fmt == "whsec" else bool(value)


def read(path: Path) -> dict[str, str]:
    """NAME -> value from the file; an absent file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def write(path: Path, values: Mapping[str, str]) -> None:
    """Replace the file atomically; it is created 0600 and never readable by others."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old .tmp may have had another mode
        body = _HEADER + "".join(f"{name}='{value}'\n" for name, value in sorted(values.items()))
        os.write(fd, body.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fill_environment(
    wanted: Mapping[str, str], path: Path, environ: MutableMapping[str, str]
) -> tuple[list[str], list[str]]:
    """Set every variable in `wanted` (name -> format) that `environ` lacks: the kept value
    from `path` when it fits, else a new random one (saved). Returns (reused, generated)."""
    kept = read(path)
    reused: list[str] = []
    generated: list[str] = []
    for name, fmt in wanted.items():
        if environ.get(name):
            continue
        value = kept.get(name, "")
        if fits(value, fmt):
            reused.append(name)
        else:
            value = kept[name] = make(fmt)
            generated.append(name)
        environ[name] = value
    if reused or generated:
        write(path, kept)  # also puts back mode 0600 on a file someone loosened
    return reused, generated


def with_fallback(environ: Mapping[str, str], path: Path) -> tuple[dict[str, str], list[str]]:
    """`environ` plus the kept demo secrets for variables it lacks; and their names."""
    env = dict(environ)
    used: list[str] = []
    for name, value in read(path).items():
        if not env.get(name):
            env[name] = value
            used.append(name)
    return env, used
