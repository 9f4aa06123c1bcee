"""The HTTP service's metrics: a run's per-zone costs become series that Prometheus' parser reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.http.metrics import HttpMetrics


def samples(m: HttpMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_runs_add_up_per_zone_link_and_mpc_zone() -> None:
    m = HttpMetrics("private-minilm", "minilm-l6")
    run = {"time_by_zone": {"he": 1.5, "mpc": 2.0}, "bytes_by_link": {"owner/he->keyholder/tee": 1000},
           "mpc": {"mpc": {"rounds": 900, "bytes": 9000, "party_rounds": 300, "party_bytes": 5000, "dealer_rounds": 40,
                           "dealer_bytes": 700}}, "time_by_conversion": {"he->mpc": 0.25}}
    m.run(run)
    m.run(run)
    m.queue(3, 1)
    got = samples(m)
    assert got[("hsi_zone_seconds_total", (("zone", "he"),))] == 3.0
    assert got[("hsi_link_bytes_total", (("link", "owner/he->keyholder/tee"),))] == 2000
    assert got[("hsi_mpc_rounds_total", (("zone", "mpc"),))] == 600
    assert got[("hsi_mpc_bytes_total", (("zone", "mpc"),))] == 10000
    assert got[("hsi_mpc_dealer_bytes_total", (("zone", "mpc"),))] == 1400
    assert got[("hsi_conversion_seconds_total", (("conversion", "he->mpc"),))] == 0.5
    assert got[("hsi_queue_depth", ())] == 3 and got[("hsi_active_sessions", ())] == 1
    assert got[("hsi_info", (("model", "minilm-l6"), ("policy", "private-minilm")))] == 1


def test_two_services_in_one_process_keep_their_own_series() -> None:
    a, b = HttpMetrics("p", "m"), HttpMetrics("p", "m")
    a.tokens.labels("prompt").inc(5)
    assert samples(a)[("hsi_tokens_total", (("kind", "prompt"),))] == 5
    assert ("hsi_tokens_total", (("kind", "prompt"),)) not in samples(b)
