"""bench/e2e.py --comparisons: a shipped policy's copy whose MPC zones compare the way named, and nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from hsi.policy import load_policy
from tests.conftest import ROOT
from tests.support.scripts import load_script

E2E = load_script(ROOT / "bench" / "e2e.py")


@pytest.mark.parametrize("how,limit,bound", [("circuit", 0, None), ("dcf", sys.maxsize, None),
                                              ("dcf:4096", 4096, 4096)])
def test_a_variant_sets_the_comparisons_and_replaces_the_shipped_bound(tmp_path: Path, how: str, limit: int,
                                                                       bound: int | None) -> None:
    path, label = E2E._with_comparisons("all-mpc-minilm", how, tmp_path)  # ships with dcf_max_elements 16384
    assert label == f"all-mpc-minilm+{how}"
    zone = load_policy(path).zones["mpc"]
    assert zone.dcf_limit() == limit and zone.dcf_max_elements == bound  # type: ignore[union-attr]
    shipped = yaml.safe_load((ROOT / "deploy" / "policies" / "all-mpc-minilm.yaml").read_text())
    copied = yaml.safe_load(path.read_text())
    for z in (shipped["zones"]["mpc"], copied["zones"]["mpc"]):
        z.pop("comparisons"), z.pop("dcf_max_elements", None)
    assert copied == shipped


def test_a_variant_name_it_does_not_know_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="comparisons are `circuit`, `dcf` or `dcf:N`.*'dcf:x'"):
        E2E._with_comparisons("all-mpc-minilm", "dcf:x", tmp_path)
    with pytest.raises(SystemExit, match="plain-minilm has no MPC zone"):
        E2E._with_comparisons("plain-minilm", "dcf", tmp_path)


def test_a_pool_variant_deals_dcf_keys_ahead(tmp_path: Path) -> None:
    path, label = E2E._with_comparisons("all-mpc-minilm", "dcf:16384+pool", tmp_path)
    zone = load_policy(path).zones["mpc"]
    assert label == "all-mpc-minilm+dcf:16384+pool"
    assert zone.dcf_limit() == 16384 and zone.dcf_pool_elements == E2E.POOL_ELEMENTS  # type: ignore[union-attr]
    for bad in ("circuit+pool", "dcf+keys"):
        with pytest.raises(ValueError, match="a DCF way takes `\\+pool`"):
            E2E._with_comparisons("all-mpc-minilm", bad, tmp_path)
