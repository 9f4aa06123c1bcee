"""The two consoles every `hsi` command prints through: `out` for results, `err` for messages."""

from __future__ import annotations

from rich.console import Console

# soft_wrap: a message is one line however narrow the terminal, so the command lines printed stay whole
err = Console(stderr=True, soft_wrap=True)
out = Console()
