"""One exception root for the whole bridge; third-party errors are wrapped at the boundary."""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid. The message is one line naming the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}")


class BrokerError(BridgeError):
    """The embedded broker could not be started or stopped."""


class VerificationError(BridgeError):
    """A webhook failed verification. `reason` is a metric label from a fixed set."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
