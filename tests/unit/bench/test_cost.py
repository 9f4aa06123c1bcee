"""The cost of a run: CPU seconds of the zones' process sessions (children that ended included), bytes between
parties, and the price."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.cost import Prices, cpu_seconds, cross_party_bytes, priced

BURN = ("import os, time\n"
        "def burn(s):\n"
        "    end = time.process_time() + s\n"
        "    while time.process_time() < end: pass\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    burn(0.6); os._exit(0)\n"  # a child that ends and is reaped: counted through its parent
        "os.waitpid(pid, 0)\n"
        "burn(0.4)\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n")


def test_cpu_seconds_count_a_sessions_processes_and_their_ended_children() -> None:
    proc = subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        sid = os.getsid(proc.pid)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        got = cpu_seconds([sid])
        assert 0.95 <= got < 3.0, got  # 0.6 s in the reaped child, 0.4 s in the process, plus its start
        assert cpu_seconds([]) == 0.0
        start = time.process_time()
        assert cpu_seconds([os.getsid(0)]) >= start  # this process's own session holds at least this process
    finally:
        proc.kill()
        proc.wait()


def test_bytes_between_parties_count_cross_party_links_and_the_exact_mpc_figures() -> None:
    record = {"bytes_by_link": {"client/embed->owner/mpc+keyholder/mpc": 100, "owner/he->owner/plain": 50,
                                "owner/he->keyholder/tee": 7},
              "mpc": {"mpc": {"rounds": 9, "bytes": 1000, "party_rounds": 3, "party_bytes": 400,
                              "dealer_rounds": 2, "dealer_bytes": 60}}}
    assert cross_party_bytes(record) == (107, 400, 60)
    older = {"bytes_by_link": {}, "mpc": {"mpc": {"rounds": 9, "bytes": 1000}}}  # before the links were counted
    assert cross_party_bytes(older) == (0, 1000, 0)


def test_the_price_of_cpu_and_bytes_per_output() -> None:
    prices = Prices(core_hour=0.36, gb=0.5)
    assert prices.cost(cpu_s=10, sent_bytes=2e9) == pytest.approx(0.001 + 1.0)
    record = {"bytes_by_link": {"a/x->b/y": int(1e9)}}
    out = priced(record, cpu_s=3600, prices=prices, outputs=4)
    assert out["sent_bytes"] == int(1e9) and out["usd_per_output"] == pytest.approx((0.36 + 0.5) / 4)
