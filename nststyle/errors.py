"""The library's user-facing error: a checkpoint or request that cannot be served, in one line."""
from __future__ import annotations


class StylizeError(ValueError):
    """A checkpoint or request that cannot be served (message is one line)."""
