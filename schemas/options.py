"""Typed, validated access to a free-form options table of the config.

``[sources.X.verify]`` and ``[sinks.X]`` are tables whose keys depend on the scheme or
sink kind; each reads its options through one :class:`Options`, which refuses unknown
keys and wrong types with the exact config path (``ConfigError``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError


class Options:
    """Validated access to one options table (``[sources.X.verify]`` or a sub-table)."""

    def __init__(
        self, table: Any, where: str, valid: Iterable[str], base_dir: Path | None = None
    ) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(where, "must be a table")
        self.where = where
        self.base_dir = base_dir or Path()
        self.valid = tuple(valid)
        self._table: Mapping[str, Any] = table
        for name in table:
            if name not in self.valid:
                raise ConfigError(self.key(str(name)), f"unknown option; valid: {self._names()}")

    def _names(self) -> str:
        return ", ".join(self.valid) if self.valid else "(none)"

    def key(self, name: str) -> str:
        return f"{self.where}.{name}"

    def has(self, name: str) -> bool:
        return name in self._table

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.key(name), problem)

    def _raw(self, name: str) -> Any:
        assert name in self.valid, name  # a programming error, not a config error
        return self._table.get(name)

    def text(self, name: str, default: str) -> str:
        value = self.opt_text(name)
        return default if value is None else value

    def opt_text(self, name: str) -> str | None:
        value = self._raw(name)
        if value is not None and not isinstance(value, str):
            raise self.fail(name, "must be a string")
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.fail(name, f"unsupported value {value[:40]!r}; valid: {', '.join(choices)}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value

    def number(self, name: str, default: float, *, positive: bool = True) -> float:
        value = self._raw(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.fail(name, "must be a number of seconds; valid: a number > 0")
        if value < 0 or (positive and value == 0):
            raise self.fail(name, "out of range; valid: a number > 0")
        return float(value)

    def texts(
        self, name: str, default: Sequence[str], choices: Sequence[str] | None = None
    ) -> tuple[str, ...]:
        """A list of strings; a lone string counts as a one-element list."""
        value = self._raw(name)
        if value is None:
            return tuple(default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(name, "must be a non-empty list of strings")
        if choices is not None:
            bad = [v for v in value if v not in choices]
            if bad:
                raise self.fail(
                    name, f"unsupported value {bad[0][:40]!r}; valid: {', '.join(choices)}"
                )
        return tuple(dict.fromkeys(value))

    def table(self, name: str, valid: Iterable[str]) -> Options | None:
        value = self._raw(name)
        return None if value is None else Options(value, self.key(name), valid, self.base_dir)

    def tables(self, name: str, valid: Iterable[str]) -> list[Options]:
        value = self._raw(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(name, "must be a list of tables")
        return [
            Options(item, f"{self.key(name)}[{i}]", valid, self.base_dir)
            for i, item in enumerate(value)
        ]

    def env_map(self, name: str, env: Mapping[str, str]) -> dict[str, tuple[bytes, ...]]:
        """``{ "Header-Name" = "ENV_VAR" | ["ENV_A", "ENV_B"] }`` resolved from `env`."""
        value = self._raw(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not value:
            raise self.fail(name, "must be a table of header name = environment-variable name")
        out: dict[str, tuple[bytes, ...]] = {}
        for header, var_names in value.items():
            names = [var_names] if isinstance(var_names, str) else var_names
            if (
                not isinstance(names, list)
                or not names
                or not all(isinstance(n, str) for n in names)
            ):
                raise self.fail(f"{name}.{header}", "must name an environment variable")
            out[str(header)] = tuple(self.env_value(f"{name}.{header}", n, env) for n in names)
        return out

    def env_value(self, name: str, var: str, env: Mapping[str, str]) -> bytes:
        value = env.get(var)
        if not value:
            raise self.fail(name, f"environment variable {var} is not set")
        return value.encode("utf-8")

    def file_bytes(self, name: str) -> bytes | None:
        """Read the file an option names (relative paths resolve against the config's folder)."""
        path = self.opt_text(name)
        if path is None:
            return None
        try:
            return (self.base_dir / path).read_bytes()
        except OSError as exc:
            raise self.fail(name, f"cannot read {path} ({exc.strerror})") from None

    def instant(self, name: str) -> float | None:
        """An RFC 3339 date-time (string or TOML datetime with offset) as unix seconds."""
        value = self._raw(name)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise self.fail(name, "must be an RFC 3339 date-time") from None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise self.fail(
                name, "must be a date-time with a UTC offset, e.g. 2027-01-01T00:00:00Z"
            )
        return value.timestamp()
