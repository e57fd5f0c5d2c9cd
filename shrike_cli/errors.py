"""Errors a user can act on: each carries one line fit for stderr."""


class ShrikeError(Exception):
    """Base of every expected failure; the CLI prints ``str(err)`` and exits 1."""


class InvalidInput(ShrikeError):
    """Bad user input: malformed address, start after end, overlap, unknown address..."""


class NotFound(ShrikeError):
    """The named address, range or subnet is not known."""


class Conflict(ShrikeError):
    """The request collides with what is stored (address in use, range full)."""


class Damaged(ShrikeError):
    """A record in the store does not have the shape shrike writes (edited by hand, or
    written by something else)."""
