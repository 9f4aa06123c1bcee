"""What one private inference costs: CPU seconds of every zone process and the bytes sent between parties, priced
per core-hour and per GB, beside Zama's estimate for a fully homomorphic LLM."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

# Zama's published estimate (quoted in issue 27): a fully homomorphic LLM costs ~$5,000 per token today, and
# needs to reach ~$0.01 to be practical.
ZAMA_FHE_PER_TOKEN = 5000.0
ZAMA_NEEDED_PER_TOKEN = 0.01
# Assumed list prices, order of magnitude, stated in every record: an on-demand general-purpose vCPU-hour and
# data sent between clouds or regions.
CORE_HOUR_USD = 0.05
GB_USD = 0.02


def cpu_seconds(sessions: Iterable[int]) -> float:
    """CPU seconds (user and system) spent so far by every live process of the given sessions (`setsid` ids),
    with the children each has reaped: a zone process with its fork server and the workers that ended."""
    wanted, total = set(sessions), 0.0
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) in wanted:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        except (psutil.Error, ProcessLookupError, PermissionError):  # gone meanwhile, or a zombie
            continue
    return total


@dataclass(frozen=True)
class Prices:
    """USD per core-hour of CPU and per GB sent between parties."""

    core_hour: float = CORE_HOUR_USD
    gb: float = GB_USD

    def cost(self, cpu_s: float, sent_bytes: float) -> float:
        """The price of `cpu_s` CPU seconds and `sent_bytes` bytes."""
        return cpu_s / 3600 * self.core_hour + sent_bytes / 1e9 * self.gb


def cross_party_bytes(record: dict[str, Any]) -> tuple[int, int, int]:
    """Bytes a run sent between parties: on zone links whose ends are at different parties (a link `a->b+c` fans
    out to every party named), between the compute parties of its MPC zones, and between them and their dealers.
    MPC bytes are the links' exact count where the record has it (`party_bytes`), else CrypTen's own."""
    links = 0
    for link, n in record.get("bytes_by_link", {}).items():
        src, dst = link.split("->", 1)  # principals party/zone
        if any(p.split("/")[0] != src.split("/")[0] for p in dst.split("+")):
            links += int(n)
    zones = record.get("mpc", {}).values()
    mpc = sum(int(z.get("party_bytes", z.get("bytes", 0))) for z in zones)
    dealer = sum(int(z.get("dealer_bytes", 0)) for z in zones)
    return links, mpc, dealer


def priced(record: dict[str, Any], cpu_s: float, prices: Prices, outputs: int) -> dict[str, Any]:
    """The cost fields of a record: CPU seconds, bytes sent, and USD per output (embedding or generated token)."""
    sent = sum(cross_party_bytes(record))
    usd = prices.cost(cpu_s, sent)
    return {"cpu_s": round(cpu_s, 2), "sent_bytes": sent, "usd_per_core_hour": prices.core_hour,
            "usd_per_gb": prices.gb, "usd_per_output": round(usd / max(1, outputs), 6)}
