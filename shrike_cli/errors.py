"""Errors a user can act on: each carries one line fit for stderr."""

import re


class ShrikeError(Exception):
    """Base of every expected failure; the CLI prints ``str(err)`` and exits 1.

    ``reason`` says in one word what went wrong, for machines (the plugin's refusal
    counters): given where the error is raised when the class alone does not say it
    (``Conflict(..., reason="full")``), else the class's name (``conflict``).
    """

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        self._reason = reason

    @property
    def reason(self) -> str:
        return self._reason or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class InvalidInput(ShrikeError):
    """Bad user input: malformed address, start after end, overlap, unknown address..."""


class NotFound(ShrikeError):
    """The named address, range or subnet is not known."""


class Conflict(ShrikeError):
    """The request collides with what is stored (address in use, range full)."""


class Damaged(ShrikeError):
    """A record in the store does not have the shape shrike writes (edited by hand, or
    written by something else)."""
