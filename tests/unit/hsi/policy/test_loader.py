"""Policy loading: good policies load; every bad one gets a precise message with file:line and key path."""

from __future__ import annotations

import json
import textwrap

import pytest

from hsi.policy import PolicyError, load_policy, load_policy_text, policy_json_schema
from tests.conftest import POLICIES

GOOD = textwrap.dedent("""\
    version: 1
    name: t
    model: {name: minilm-l6, owner: owner}
    client: client
    parties:
      client: {address: 127.0.0.1}
      owner: {address: 127.0.0.1}
      keyholder: {address: 127.0.0.1}
      dealer: {address: 127.0.0.1}
    zones:
      c: {kind: plain, party: client, port: 6001}
      h:
        kind: he
        party: owner
        port: 6002
        ckks: {ring_dim: 16384, scale_bits: 35}
      m:
        kind: mpc
        parties: {owner: {port: 6003}, keyholder: {port: 6004}}
        dealer: dealer
        dealer_port: 6005
        rendezvous_port: 6006
      t: {kind: tee, party: keyholder, port: 6007}
    placement:
      - {match: "embeddings*", zone: c}
      - {match: "*", types: [linear], zone: h}
      - {match: "*", zone: m}
    """)


def test_shipped_policies_load() -> None:
    for path in sorted(POLICIES.glob("*.yaml")):
        p = load_policy(path)
        assert p.name == path.stem


def test_good_policy_with_all_zone_kinds() -> None:
    p = load_policy_text(GOOD, "good.yaml")
    assert {z.kind for z in p.zones.values()} == {"plain", "he", "mpc", "tee"}
    assert p.zone_parties("m") == ["owner", "keyholder"]
    assert p.zone_endpoints("h") == {"owner": "127.0.0.1:6002"}
    assert p.principal("owner", "h") == "owner/h"


def _error(text: str) -> str:
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "/tmp/bad.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # unknown key, with its line
        ("name: t\n", "name: t\ncolour: red\n", "bad.yaml:3 colour: unknown key"),
        # missing required key
        ("client: client\n", "", "bad.yaml:1 client: required key is missing"),
        # wrong version
        ("version: 1", "version: 2", "bad.yaml:1 version: Input should be 1"),
        # unknown zone kind
        ("kind: plain, party: client", "kind: gpu, party: client", "unknown zone kind 'gpu'"),
        # ring dimension not a power of two
        ("ring_dim: 16384", "ring_dim: 10000", "bad.yaml:16 zones.h.ckks.ring_dim: Value error, ring_dim must be a power of two"),
        # a single token's width not a power of two
        ("scale_bits: 35}\n", "scale_bits: 35}\n    token_width: 1000\n",
         "bad.yaml:17 zones.h.token_width: Value error, token_width must be a power of two, got 1000"),
        # port out of range
        ("port: 6001", "port: 70000", "bad.yaml:11 zones.c.port: Input should be less than or equal to 65535"),
        # placement references an unknown zone
        ("zone: m}", "zone: nowhere}", "bad.yaml:27 placement.2.zone: unknown zone 'nowhere'"),
        # zone at an unknown party
        ("party: keyholder, port: 6007", "party: mars, port: 6007", "bad.yaml:23 zones.t.party: unknown party 'mars'"),
        # MPC with one party
        ("parties: {owner: {port: 6003}, keyholder: {port: 6004}}", "parties: {owner: {port: 6003}}",
         "zones.m.parties: Value error, an MPC zone needs at least 2 compute parties, got 1"),
        # dealer co-located with a compute party
        ("dealer: dealer\n", "dealer: keyholder\n", "zones.m.dealer: dealer 'keyholder' is also a compute party"),
        # two zones on one endpoint
        ("port: 6007", "port: 6001", "zones.t.port: 127.0.0.1:6001 is already used by zones.c.port"),
        # unknown op type in a placement filter
        ("types: [linear]", "types: [convolution]", "placement.1.types.0: Input should be"),
        # unknown security level
        ("scale_bits: 35}", "scale_bits: 35, security: 100}", "zones.h.ckks.security: Input should be 128, 192 or 256"),
        # unknown client party
        ("client: client\n", "client: nobody\n", "bad.yaml:4 client: unknown party 'nobody'"),
        # empty placement
        ("placement:\n  - {match: \"embeddings*\", zone: c}\n  - {match: \"*\", types: [linear], zone: h}\n"
         "  - {match: \"*\", zone: m}\n", "placement: []\n", "placement: List should have at least 1 item"),
    ],
)
def test_bad_policy_messages(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    msg = _error(GOOD.replace(old, new, 1))
    assert expected in msg, msg


def test_every_error_reported_at_once() -> None:
    text = GOOD.replace("name: t\n", "name: t\nfoo: 1\n").replace("port: 6001", "port: 0")
    msg = _error(text)
    assert "2 errors" in msg and "foo: unknown key" in msg and "zones.c.port" in msg


def test_yaml_syntax_error_has_line() -> None:
    assert "bad.yaml:3: not valid YAML" in _error("version: 1\nname: [unclosed\n")


def test_duplicate_key_refused() -> None:
    assert "duplicate key 'name'" in _error("version: 1\nname: a\nname: b\n")


def test_not_a_mapping() -> None:
    assert "a policy is a YAML mapping, got list" in _error("- 1\n- 2\n")


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy("/nonexistent/policy.yaml")


def test_json_schema_covers_all_sections() -> None:
    schema = policy_json_schema()
    assert set(schema["properties"]) >= {"version", "model", "parties", "zones", "placement", "privacy", "keys",
                                          "transport"}
    assert schema["additionalProperties"] is False
    json.dumps(schema)
