"""Each source's secrets and verifier, built by the gateway when it starts.

The configuration is data (`schemas.config`): a source names its secrets (variables
or files) and its ``[sources.X.verify]`` options, and nothing reads them there. The
gateway, the one process that verifies webhooks, reads them here when its app is
created (and `check-config` when it checks a config); the compactor, reorderer and
fan-out never hold a provider's secret, and never fetch a JWKS.

What a provider's documentation rules out about its secrets is checked here too
(docs/providers.md), with one line naming the key and never the secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.verify import build_verifier
from gateway.verify.base import BuildContext, Secret, Verifier
from schemas.config import Settings, SourceSettings
from schemas.errors import ConfigError

# Jiko: the partner's shared secret has at least 16 characters.
SECRET_MIN_CHARS = {"jiko": 16}


def read_secrets(
    source: SourceSettings, env: Mapping[str, str], base_dir: Path
) -> tuple[Secret, ...]:
    """Every live secret of `source`, from its environment variables and files."""
    where = f"sources.{source.name}"
    min_chars = SECRET_MIN_CHARS.get(source.scheme, 1)
    out: list[Secret] = []
    for var in source.secrets:
        value = env.get(var)
        if not value:
            raise ConfigError(f"{where}.secrets", f"environment variable {var} is not set")
        if len(value) < min_chars:
            raise ConfigError(f"{where}.secrets", f"{var} is {_too_short(min_chars)}")
        out.append(Secret(key_id=var, value=value.encode("utf-8")))
    for name in source.secret_files:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{where}.secret_files", f"cannot read {name} ({exc.strerror})"
            ) from None
        if not value:
            raise ConfigError(f"{where}.secret_files", f"{name} is empty")
        if len(value) < min_chars:
            raise ConfigError(f"{where}.secret_files", f"{name} is {_too_short(min_chars)}")
        out.append(Secret(key_id=path.name, value=value.encode("utf-8")))
    return tuple(out)


def _too_short(min_chars: int) -> str:
    # Never the secret, nor its length.
    return f"shorter than {min_chars} characters, the least this provider allows"


def verify_context(
    settings: Settings, name: str, env: Mapping[str, str] | None = None
) -> BuildContext:
    """What source `name`'s scheme factory (or signer) gets: its secrets and options."""
    source = settings.sources[name]
    env = settings.env if env is None else env
    return BuildContext(
        where=f"sources.{name}",
        secrets=read_secrets(source, env, settings.base_dir),
        options=source.verify,
        env=env,
        base_dir=settings.base_dir,
    )


def build_verifiers(
    settings: Settings, env: Mapping[str, str] | None = None
) -> dict[str, Verifier]:
    """{source name: verifier}; a missing secret or a bad option is a ConfigError."""
    return {
        name: build_verifier(source.scheme, verify_context(settings, name, env))
        for name, source in settings.sources.items()
    }
