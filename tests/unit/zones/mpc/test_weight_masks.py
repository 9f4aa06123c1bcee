"""Weight masks kept between sessions: the digest the parties compare, the limit, and how a zone takes a session's
outcome (never two sessions' masks mixed)."""

from __future__ import annotations

import numpy as np

from zones.mpc.weight_masks import Entry, MaskTracker, WeightMasks, merge


def entry(origin: str, n: int = 4) -> Entry:
    return Entry(origin, np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64))


def test_the_digest_names_the_weights_and_the_sessions_that_drew_their_masks() -> None:
    a = WeightMasks(1 << 20, {"q#0": entry("s1"), "k#0": entry("s1")})
    same = WeightMasks(1 << 20, {"k#0": Entry("s1", np.zeros(9, np.int64)), "q#0": entry("s1")})
    assert a.digest() == same.digest()  # the values are each party's own: only keys and origins are compared
    assert a.digest() != WeightMasks(1 << 20, {"q#0": entry("s1"), "k#0": entry("s2")}).digest()
    assert a.digest() != WeightMasks(1 << 20, {"q#0": entry("s1")}).digest()


def test_the_limit_counts_eight_bytes_an_element_of_b() -> None:
    kept = WeightMasks(64)
    assert kept.keep("a", entry("s", 4)) and kept.used_bytes() == 32
    assert not kept.keep("b", entry("s", 5))  # 32 + 40 > 64: not kept, at every party alike
    assert kept.keep("c", entry("s", 4)) and set(kept.entries) == {"a", "c"}


def test_a_zone_takes_a_sessions_masks_only_if_nothing_changed_them_meanwhile() -> None:
    zone = WeightMasks(1 << 20, {"q#0": entry("s0")})
    first, second = MaskTracker(zone), MaskTracker(zone)  # two sessions start from the same masks
    first.add("k#0", entry("s1"))
    second.add("k#0", entry("s2"))
    after = merge(zone, first.result())
    assert set(after.entries) == {"q#0", "k#0"} and after.entries["k#0"].origin == "s1"
    assert merge(after, second.result()) is after  # the other session's k#0 never mixes in
    assert zone.entries.keys() == {"q#0"}  # the zone's own object is never changed


def test_a_session_that_drew_afresh_replaces_the_zones_masks() -> None:
    zone = WeightMasks(1 << 20, {"q#0": entry("s0"), "v#0": entry("s0")})
    t = MaskTracker(zone)
    t.drop_all()
    assert t.kept.entries == {} and t.tell_dealer
    t.add("q#0", entry("s3"))
    after = merge(zone, t.result())
    assert {k: e.origin for k, e in after.entries.items()} == {"q#0": "s3"}
