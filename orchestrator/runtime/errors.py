"""The error a failed run raises."""

from __future__ import annotations

from hsi.errors import HsiError


class RunError(HsiError, RuntimeError):
    """A run that failed; the message names the zone, the call and the cause. The session was released."""
