"""DCF keys dealt ahead across real zone processes: a session that ends deals its successor's comparison keys, and
the successor's comparisons then take nothing from the dealer; a key never serves twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Deployment, deployment, minilm_cosine


@pytest.fixture(scope="module")
def pooled(hsi_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    yield from deployment("all-mpc-minilm.yaml", tmp_path_factory, zones={"mpc": {"dcf_pool_elements": 1_000_000}})


@pytest.mark.slow  # ~1 min; the protocol itself is tested in tests/unit/zones/mpc/test_fss.py
def test_the_next_session_compares_with_keys_dealt_ahead_and_asks_the_dealer_for_none(pooled: Deployment) -> None:
    text = "Refill lisinopril 10 mg; blood pressure 150/95 at rest."
    figures, cosines = [], []
    for _ in range(3):  # the first deals its keys online; each ends by dealing the next one's
        rt = pooled.runtime()
        try:
            r = rt.embed(text)
        finally:
            rt.close()
        figures.append(r.metrics["mpc"]["mpc"])
        cosines.append(minilm_cosine(r.output["embedding"], text))
    print("sessions:", figures, cosines)
    online, ahead, again = figures
    assert min(cosines) >= 0.999 and max(cosines) - min(cosines) < 1e-4
    saved = online["dealer_bytes"] - ahead["dealer_bytes"]
    assert saved > 35e6, figures  # the DCF keys (~760 bytes an element to each party) came before the session
    assert ahead["dealer_bytes"] == again["dealer_bytes"]  # the second pool, dealt by the second session, served too
    # the pooled sessions compare their pools' digests once more; they open no more than the first
    assert ahead["party_rounds"] <= online["party_rounds"] + 1 and ahead["party_bytes"] <= online["party_bytes"]
