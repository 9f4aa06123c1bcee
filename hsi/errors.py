"""The error base of hsi: an error a user caused or can fix, with the exit code the CLI answers it with."""

from __future__ import annotations


class HsiError(Exception):
    """An error a user caused or can fix; `exit_code` is what the `hsi` command exits with."""

    exit_code: int = 2
