"""CompactZone answers like Zone: the same nodes, names, cuts and replies, versions included."""

from __future__ import annotations

import random
import types

import dns.name
import dns.rdataset
import dns.rrset
import pytest

from gitdns import core
from gitdns import zone as zone_module
from gitdns.compactzone import CompactZone, decode_node, encode_node, name_key, rdata_wire
from gitdns.diff import zone_diff
from gitdns.fastpath import FastPath
from gitdns.store import ZoneSet
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone
from tests.test_fastpath import QUERIES, ZONES
from tests.test_zone import ORIGIN, random_node, same


def base_rrsets() -> list[dns.rrset.RRset]:
    """test_zone's base, with absolute names in the rdata (as every loaded zone has)."""
    return [dns.rrset.from_text(ORIGIN, 300, "IN", "SOA",
                                "ns.example.test. h.example.test. 1 3600 600 86400 60"),
            dns.rrset.from_text(ORIGIN, 300, "IN", "NS", "ns.example.test."),
            dns.rrset.from_text(dns.name.from_text("ns", ORIGIN), 300, "IN", "A", "192.0.2.1")]


@pytest.fixture(autouse=True)
def deterministic_rendering(monkeypatch):
    monkeypatch.setattr(dns.rdataset, "random", types.SimpleNamespace(shuffle=lambda _l: None))


def test_every_corpus_zone_is_the_same_in_compact_form():
    for zone in ZONES.values():
        compact = CompactZone.from_zone(zone)
        same(compact, zone)
        assert list(compact.rrsets()) == list(zone.rrsets())
        assert compact.soa == zone.soa and compact.signed == zone.signed


def test_every_corpus_query_gets_the_same_reply_from_the_compact_zones():
    plain = ZoneSet(ZONES)
    compact = ZoneSet({o: CompactZone.from_zone(z) for o, z in ZONES.items()})
    fast = FastPath(compact)
    differ = []
    for q in QUERIES[::3]:
        expected = core.handle(core.ServerState(plain), q.wire, core.Request(tcp=q.tcp))
        got = core.handle(core.ServerState(compact), q.wire, core.Request(tcp=q.tcp))
        if got != expected or fast.answer(q.wire, q.tcp) not in (None, expected):
            differ.append(q.text)
    assert not differ, f"{len(differ)} replies differ, e.g. {differ[:5]}"


def test_owners_keep_their_case_and_odd_labels():
    text = ("$ORIGIN Example.TEST.\n$TTL 300\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
            "WWW A 192.0.2.2\nMiXed.Sub MX 10 WWW\na\\.b TXT \"dot in a label\"\n"
            "\\# TXT \"odd\"\n")
    zone, _w = parse_zone(text, "example.test.", "example.test")
    compact = CompactZone.from_zone(zone)
    same(compact, zone)
    assert [r.name.to_text() for r in compact.rrsets()] == \
        [r.name.to_text() for r in zone.rrsets()]
    www = dns.name.from_text("www.example.test.")
    assert compact.nodes[www][(1, 0)].name.to_text() == "WWW.Example.TEST."


def test_a_blob_round_trips_every_rrset_of_the_corpus():
    for zone in ZONES.values():
        olen = len(zone.origin.labels)
        for name, node in zone.nodes.items():
            key = name_key(name.labels, olen)
            assert decode_node(encode_node(name, node, key, zone.origin), name) == node


def test_rdata_wire_is_dnspythons_for_every_record_of_the_corpus():
    for zone in ZONES.values():
        for _name, node in zone.nodes.items():
            for rrset in node.values():
                for rd in rrset:
                    assert rdata_wire(rd) == rd.to_wire()


def test_a_blob_made_from_an_older_one_is_the_blob_made_afresh():
    # encode_node copies the bytes of the RRsets a node shares (as objects) with the old one.
    rng = random.Random(7)
    for zone in ZONES.values():
        olen = len(zone.origin.labels)
        for name, node in zone.nodes.items():
            key = name_key(name.labels, olen)
            old_blob = encode_node(name, node, key, zone.origin)
            old = decode_node(old_blob, name)
            new = dict(old)
            for rrkey in list(new):
                if rng.random() < 0.3:
                    del new[rrkey]
            new.update(random_node(rng, "x"))  # (their owner does not go into the blob)
            assert encode_node(name, new, key, zone.origin, (old_blob, old)) == \
                encode_node(name, new, key, zone.origin)


@pytest.mark.parametrize("compact_after", [3, 4096])
def test_random_changes_match_a_rebuilt_zone(monkeypatch, compact_after):
    monkeypatch.setattr(zone_module, "COMPACT_AFTER", compact_after)
    rng = random.Random(compact_after + 1)
    owners = [f"{a}.{b}" for a in "abcd" for b in ("x", "y.z", "w")] + ["x", "y.z"]
    current = CompactZone.from_zone(Zone(ORIGIN, base_rrsets()))
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
        previous = current
        current = current.with_changes(changes)
        assert isinstance(current, CompactZone)
        rebuilt = Zone(ORIGIN, model.values())
        same(current, rebuilt)
        # What changed is found from the bytes and is what the records say.
        assert zone_diff(previous, current) == zone_diff(
            Zone(ORIGIN, previous.rrsets()), rebuilt)


def test_the_apex_soa_changes_with_the_serial():
    zone = CompactZone.from_zone(Zone(ORIGIN, base_rrsets()))
    soa = dns.rrset.from_text(ORIGIN, 300, "IN", "SOA",
                              "ns.example.test. h.example.test. 2 3600 600 86400 60")
    apex = dict(zone.nodes[ORIGIN])
    apex[(soa.rdtype, 0)] = soa
    newer = zone.with_changes({ORIGIN: apex})
    assert (zone.serial, newer.serial) == (1, 2)
    assert [r for r in newer.rrsets()][0].rdtype == soa.rdtype
    assert sum(1 for r in newer.rrsets() if r.rdtype == soa.rdtype) == 1
