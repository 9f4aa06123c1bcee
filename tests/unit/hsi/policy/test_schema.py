"""The policy's own queries: zones by kind, who runs a zone, its principals and dealer."""

from __future__ import annotations

import pytest

from hsi.policy import HeZone, MpcZone, PolicyError, TeeZone, load_policy, load_policy_text
from tests.conftest import POLICIES


def test_zones_by_kind_parties_and_dealers() -> None:
    p = load_policy(POLICIES / "private-minilm.yaml")
    assert list(p.zones_of(TeeZone)) == ["enclave"] and list(p.zones_of(HeZone)) == ["he"]
    assert all(isinstance(z, MpcZone) for z in p.zones_of(MpcZone).values())
    assert p.zone_parties("mpc") == ["owner", "keyholder"] and p.zone_parties("he") == ["owner"]
    assert p.has_dealer("mpc") and not p.has_dealer("he")
    assert p.principal("owner", "he") == "owner/he" and p.runtime_principal == "client/runtime"
    assert {proc.key for proc in p.processes()} >= {"mpc@owner", "mpc@keyholder", "mpc@dealer+dealer"}


def _dealer_in_enclave(text: str) -> str:
    return text.replace("dealer: dealer\n", "dealer: enclave\n").replace("  dealer: {address: 127.0.0.1}\n", "")


def test_a_dealer_in_the_enclave_is_served_by_the_enclaves_process() -> None:
    p = load_policy_text(_dealer_in_enclave((POLICIES / "private-minilm.yaml").read_text()))
    assert p.dealer_enclave("mpc") == "enclave" and p.hosted_dealers("enclave") == ["mpc"]
    assert p.dealer_endpoint("mpc") == ("keyholder", "127.0.0.1:50195")
    assert p.dealer_principal("mpc") == "keyholder/enclave"  # not keyholder/mpc, the keyholder's own MPC party
    dealer = next(proc for proc in p.processes() if proc.dealer)
    assert dealer.host == "enclave" and p.process_principal(dealer) == "keyholder/enclave"
    assert dealer not in p.started_processes()  # no process of its own
    assert {proc.key for proc in p.started_processes()} == {"embed-client@client", "he@owner", "mpc@owner",
                                                            "mpc@keyholder", "enclave@keyholder"}
    plain = load_policy(POLICIES / "private-minilm.yaml")
    assert plain.dealer_enclave("mpc") is None and plain.dealer_principal("mpc") == "dealer/mpc"
    assert plain.processes() == plain.started_processes()


def test_a_dealer_in_the_enclave_needs_exactly_one_enclave_and_a_free_port() -> None:
    no_enclave = _dealer_in_enclave((POLICIES / "all-mpc-minilm.yaml").read_text())
    with pytest.raises(PolicyError, match=r"zones\.mpc\.dealer.*dealer: enclave runs the dealer inside the policy's "
                                          r"tee zone; the policy has 0 \(none\)"):
        load_policy_text(no_enclave)
    clash = _dealer_in_enclave((POLICIES / "private-minilm.yaml").read_text()).replace("dealer_port: 50195",
                                                                                        "dealer_port: 50197")
    with pytest.raises(PolicyError, match=r"zones\.enclave\.port: 127\.0\.0\.1:50197 is already used by zones\.mpc\.dealer_port"):
        load_policy_text(clash)


def test_dcf_comparisons_take_exactly_two_compute_parties() -> None:
    shipped = (POLICIES / "all-mpc-minilm.yaml").read_text()
    assert "    comparisons: dcf\n    dcf_max_elements: 16384\n" in shipped
    assert load_policy_text(shipped).zones["mpc"].dcf_limit() == 16384  # type: ignore[union-attr]
    dcf = shipped.replace("    dcf_max_elements: 16384\n", "")
    assert load_policy_text(dcf).zones["mpc"].dcf_limit() > 2**62  # type: ignore[union-attr]
    circuit = dcf.replace("    comparisons: dcf\n", "")
    assert load_policy_text(circuit).zones["mpc"].dcf_limit() == 0  # type: ignore[union-attr]
    keyholder = "      keyholder: {port: 50173}\n"
    three = dcf.replace(keyholder, keyholder + "      client: {port: 50176}\n")
    with pytest.raises(PolicyError, match=r"comparisons: dcf takes exactly 2 compute parties, this zone has 3"):
        load_policy_text(three)
    with pytest.raises(PolicyError, match=r"comparisons: Input should be 'circuit' or 'dcf'"):
        load_policy_text(dcf.replace("comparisons: dcf", "comparisons: garbled"))


def test_dcf_keys_dealt_ahead_need_dcf_comparisons() -> None:
    shipped = (POLICIES / "all-mpc-minilm.yaml").read_text()
    pooled = shipped.replace("    comparisons: dcf\n", "    comparisons: dcf\n    dcf_pool_elements: 100000\n")
    assert load_policy_text(pooled).zones["mpc"].dcf_pool_elements == 100000  # type: ignore[union-attr]
    with pytest.raises(PolicyError, match="dcf_pool_elements deals DCF keys ahead; it needs comparisons: dcf"):
        load_policy_text(pooled.replace("    comparisons: dcf\n", ""))
    with pytest.raises(PolicyError, match="dcf_pool_elements"):
        load_policy_text(pooled.replace("100000", "-1"))
