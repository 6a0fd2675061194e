"""ZoneHistory: the in-memory chains of differences IXFR answers from; unbroken, bounded."""

from __future__ import annotations

import dns.name
import pytest

from gitdns.diff import ZoneDiff, apply_diff, zone_diff
from gitdns.history import ZoneHistory
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.")
OTHER = dns.name.from_text("other.")


def make_zone(serial: int, hosts: int = 1, origin: dns.name.Name = ORIGIN) -> Zone:
    """A zone whose content follows from (serial, hosts), so every version differs."""
    body = "".join(f"h{i} A 10.0.{i >> 8 & 255}.{i & 255}\n" for i in range(hosts))
    text = f"$TTL 300\n@ SOA ns hm {serial} 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n{body}"
    return parse_zone(text, origin)[0]


def content(zone: Zone) -> set:
    return {(r.name, r.ttl, rd) for r in zone.rrsets() for rd in r}


def versions(*serials: int, origin: dns.name.Name = ORIGIN) -> list[Zone]:
    return [make_zone(s, hosts=i + 1, origin=origin) for i, s in enumerate(serials)]


def record_all(history: ZoneHistory, zones: list[Zone]) -> list[ZoneDiff]:
    for old, new in zip(zones, zones[1:], strict=False):
        history.record(old, new)
    return [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)]


def serials(diffs: list[ZoneDiff] | None) -> list[tuple[int, int]] | None:
    return None if diffs is None else [(d.old_serial, d.new_serial) for d in diffs]


def test_chain_from_any_recorded_serial_to_the_current():
    zones = versions(1, 2, 3, 4)
    history = ZoneHistory()
    expected = record_all(history, zones)
    assert history.diffs_since(ORIGIN, 1, 4) == expected
    assert history.diffs_since(ORIGIN, 3, 4) == expected[2:]
    assert history.diffs_since(ORIGIN, 4, 4) == []
    # Applied in order, the chain turns the old version into the current one.
    zone = zones[1]
    for diff in history.diffs_since(ORIGIN, 2, 4) or []:
        zone = apply_diff(zone, diff)
    assert content(zone) == content(zones[-1])


def test_unknown_serial_zone_or_stale_current_is_none():
    history = ZoneHistory()
    record_all(history, versions(1, 2, 3))
    assert history.diffs_since(ORIGIN, 7, 3) is None  # never seen
    assert history.diffs_since(ORIGIN, 1, 4) is None  # the zone moved on without us being told
    assert history.diffs_since(OTHER, 1, 3) is None


def test_given_diff_is_used_and_checked():
    old, new = versions(1, 2)
    diff = zone_diff(old, new)
    history = ZoneHistory()
    history.record(old, new, diff)
    assert history.diffs_since(ORIGIN, 1, 2)[0] is diff  # type: ignore[index]
    with pytest.raises(ValueError):
        history.record(new, make_zone(3, hosts=9), diff)
    with pytest.raises(ValueError):
        history.record(old, make_zone(2, origin=OTHER))


def test_a_gap_drops_the_older_part():
    zones = versions(1, 2, 3, 4)
    history = ZoneHistory()
    history.record(zones[0], zones[1])
    history.record(zones[2], zones[3])  # 2 -> 3 was never recorded
    assert history.diffs_since(ORIGIN, 1, 4) is None
    assert history.diffs_since(ORIGIN, 2, 4) is None
    assert serials(history.diffs_since(ORIGIN, 3, 4)) == [(3, 4)]


def test_serial_that_did_not_increase_forgets_the_zone():
    zones = versions(5, 6)
    history = ZoneHistory()
    history.record(*zones)
    history.record(zones[1], make_zone(6, hosts=2))  # same content, a reload: history kept
    assert serials(history.diffs_since(ORIGIN, 5, 6)) == [(5, 6)]
    history.record(zones[1], make_zone(6, hosts=7))  # changed without a serial increase
    assert history.diffs_since(ORIGIN, 5, 6) is None

    history.record(*zones)
    history.record(zones[1], make_zone(3))  # went backwards (an operator reset the serial)
    assert history.diffs_since(ORIGIN, 5, 6) is None
    assert history.diffs_since(ORIGIN, 6, 3) is None


def test_serial_wrap_around_is_an_increase():
    zones = versions(4294967294, 4294967295, 0, 1)
    history = ZoneHistory()
    record_all(history, zones)
    assert serials(history.diffs_since(ORIGIN, 4294967295, 1)) == [(4294967295, 0), (0, 1)]


def test_bound_on_differences_evicts_the_oldest():
    zones = versions(*range(1, 8))  # 6 differences
    history = ZoneHistory(max_diffs_per_zone=3)
    record_all(history, zones)
    assert history.diffs_since(ORIGIN, 3, 7) is None
    assert serials(history.diffs_since(ORIGIN, 4, 7)) == [(4, 5), (5, 6), (6, 7)]


def test_bound_on_records_evicts_the_oldest():
    # make_zone(s, hosts=n) adds one host per version: each difference is 2 SOAs + 1 record.
    zones = versions(1, 2, 3, 4, 5)
    history = ZoneHistory(max_records_per_zone=7)
    record_all(history, zones)
    assert history.diffs_since(ORIGIN, 2, 5) is None
    assert serials(history.diffs_since(ORIGIN, 3, 5)) == [(3, 4), (4, 5)]
    # A single difference larger than the bound is not kept at all.
    history.record(zones[-1], make_zone(6, hosts=100))
    assert history.diffs_since(ORIGIN, 5, 6) is None
    assert history.diffs_since(ORIGIN, 3, 5) is None


def test_zones_are_bounded_separately():
    history = ZoneHistory(max_diffs_per_zone=2)
    record_all(history, versions(1, 2, 3))
    record_all(history, versions(1, 2, 3, 4, 5, origin=OTHER))
    assert serials(history.diffs_since(ORIGIN, 1, 3)) == [(1, 2), (2, 3)]
    assert serials(history.diffs_since(OTHER, 3, 5)) == [(3, 4), (4, 5)]


def test_forget():
    history = ZoneHistory()
    record_all(history, versions(1, 2, 3))
    record_all(history, versions(1, 2, origin=OTHER))
    history.forget(ORIGIN)
    history.forget(dns.name.from_text("never.seen."))
    assert history.diffs_since(ORIGIN, 1, 3) is None
    assert serials(history.diffs_since(OTHER, 1, 2)) == [(1, 2)]


def test_add_older_joins_the_chain():
    zones = versions(1, 2, 3, 4, 5)
    diffs = [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)]
    history = ZoneHistory()
    record_all(history, zones[2:])  # known since the restart: 3 -> 4 -> 5
    history.add_older(ORIGIN, diffs[:2])  # found in git: 1 -> 2 -> 3
    assert history.diffs_since(ORIGIN, 1, 5) == diffs
    zone = zones[0]
    for diff in history.diffs_since(ORIGIN, 1, 5) or []:
        zone = apply_diff(zone, diff)
    assert content(zone) == content(zones[-1])


def test_add_older_skips_the_overlap():
    zones = versions(1, 2, 3, 4, 5)
    diffs = [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)]
    history = ZoneHistory()
    record_all(history, zones[2:])
    history.add_older(ORIGIN, diffs)  # 1 -> ... -> 5, overlapping the known 3 -> 4 -> 5
    assert serials(history.diffs_since(ORIGIN, 1, 5)) == [(1, 2), (2, 3), (3, 4), (4, 5)]


def test_add_older_ignores_what_does_not_join():
    zones = versions(1, 2, 3, 4)
    history = ZoneHistory()
    record_all(history, zones[2:])  # 3 -> 4
    history.add_older(ORIGIN, [zone_diff(zones[0], zones[1])])  # 1 -> 2: a gap to 3
    assert history.diffs_since(ORIGIN, 1, 4) is None
    assert serials(history.diffs_since(ORIGIN, 3, 4)) == [(3, 4)]
    history.add_older(ORIGIN, [])
    assert serials(history.diffs_since(ORIGIN, 3, 4)) == [(3, 4)]


def test_add_older_keeps_only_the_unbroken_tail():
    zones = versions(1, 2, 3, 4, 5)
    history = ZoneHistory()
    record_all(history, zones[3:])  # 4 -> 5
    broken = [zone_diff(zones[0], zones[1]), zone_diff(zones[2], zones[3])]  # 1->2, gap, 3->4
    history.add_older(ORIGIN, broken)
    assert history.diffs_since(ORIGIN, 1, 5) is None
    assert serials(history.diffs_since(ORIGIN, 3, 5)) == [(3, 4), (4, 5)]


def test_add_older_to_an_empty_history():
    zones = versions(1, 2, 3)
    history = ZoneHistory()
    history.add_older(ORIGIN, [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)])
    assert serials(history.diffs_since(ORIGIN, 1, 3)) == [(1, 2), (2, 3)]
    history.record(zones[2], make_zone(4, hosts=4))  # and new versions continue the chain
    assert serials(history.diffs_since(ORIGIN, 1, 4)) == [(1, 2), (2, 3), (3, 4)]


def test_add_older_respects_the_bounds_keeping_the_newest():
    zones = versions(*range(1, 8))
    diffs = [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)]
    history = ZoneHistory(max_diffs_per_zone=4)
    record_all(history, zones[4:])  # 5 -> 6 -> 7
    history.add_older(ORIGIN, diffs[:4])  # 1 -> ... -> 5
    assert history.diffs_since(ORIGIN, 2, 7) is None
    assert serials(history.diffs_since(ORIGIN, 3, 7)) == [(3, 4), (4, 5), (5, 6), (6, 7)]
