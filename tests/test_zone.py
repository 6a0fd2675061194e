"""Zone versions made by `with_changes` equal zones built from scratch, compaction included."""

from __future__ import annotations

import random

import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from gitdns import zone as zone_module
from gitdns.zone import Layered, Zone

ORIGIN = dns.name.from_text("example.test")


def rrset(name: str, rdtype: str, *data: str, ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text(dns.name.from_text(name, ORIGIN), ttl, "IN", rdtype, *data)


def base_rrsets() -> list[dns.rrset.RRset]:
    return [rrset("@", "SOA", "ns hostmaster 1 3600 600 86400 60"), rrset("@", "NS", "ns"),
            rrset("ns", "A", "192.0.2.1")]


def random_node(rng: random.Random, name: str) -> dict:
    node = {}
    for rdtype, data in (("A", f"10.0.0.{rng.randrange(250)}"), ("TXT", '"x"'),
                         ("NS", f"ns.{name}.example.test."), ("MX", "10 ns.example.test.")):
        if rng.random() < 0.4:
            r = rrset(name, rdtype, data)
            node[(r.rdtype, r.covers)] = r
    return node


def same(a: Zone, b: Zone) -> None:
    assert dict(a.nodes) == dict(b.nodes)
    assert dict(a.names) == dict(b.names)
    assert set(a.cuts) == set(b.cuts)
    assert a.record_count == b.record_count and a.serial == b.serial
    assert dict(a.referrers()) == dict(b.referrers())
    assert len(a.nodes) == len(dict(a.nodes)) and len(a.names) == len(dict(a.names))


@pytest.mark.parametrize("compact_after", [3, 4096])
def test_random_changes_match_a_rebuilt_zone(monkeypatch, compact_after):
    monkeypatch.setattr(zone_module, "COMPACT_AFTER", compact_after)
    rng = random.Random(compact_after)
    owners = [f"{a}.{b}" for a in "abcd" for b in ("x", "y.z", "w")] + ["x", "y.z"]
    current = Zone(ORIGIN, base_rrsets())
    current.referrers()  # kept up to date from here on
    model = {(r.name, r.rdtype, r.covers): r for r in base_rrsets()}
    for _ in range(300):
        changes = {}
        for owner in rng.sample(owners, rng.randrange(1, 4)):
            name = dns.name.from_text(owner, ORIGIN)
            node = random_node(rng, owner) if rng.random() < 0.7 else None
            changes[name] = node
            for key in [k for k in model if k[0] == name]:
                del model[key]
            for key, r in (node or {}).items():
                model[(name, *key)] = r
        current = current.with_changes(changes)
        same(current, Zone(ORIGIN, model.values()))
    assert isinstance(current.nodes, (dict, Layered))


def test_empty_non_terminals_come_and_go():
    z = Zone(ORIGIN, base_rrsets())
    deep = dns.name.from_text("a.b.c", ORIGIN)
    z2 = z.with_changes({deep: {(1, 0): rrset("a.b.c", "A", "192.0.2.9")}})
    assert dns.name.from_text("b.c", ORIGIN) in z2.names  # an empty non-terminal now
    assert dns.name.from_text("b.c", ORIGIN) not in z.names  # the old version is untouched
    z3 = z2.with_changes({deep: None})
    assert dns.name.from_text("c", ORIGIN) not in z3.names
    assert z3.record_count == z.record_count
