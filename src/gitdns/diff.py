"""Differences between zone versions, record by record: what IXFR sends and what an UPDATE did.

Rules this module keeps:
- A record is (owner, TTL, rdata); a TTL change is a deletion and an addition (RFC 1995 works on
  whole records).
- A ZoneDiff always carries the old and the new SOA, as an IXFR difference sequence does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gitdns.zone import Zone

Record = tuple[dns.name.Name, int, dns.rdata.Rdata]


def records(zone: Zone) -> Iterator[Record]:
    """Every record of the zone except the SOA."""
    for rrset in zone.rrsets():
        if rrset.rdtype == dns.rdatatype.SOA:
            continue
        for rd in rrset:
            yield (rrset.name, rrset.ttl, rd)


@dataclass(frozen=True)
class ZoneDiff:
    """One step of a zone's history: old SOA, records deleted, new SOA, records added."""

    old_soa: Record
    new_soa: Record
    deleted: tuple[Record, ...]
    added: tuple[Record, ...]

    @property
    def old_serial(self) -> int:
        return self.old_soa[2].serial

    @property
    def new_serial(self) -> int:
        return self.new_soa[2].serial

    def __len__(self) -> int:
        return 2 + len(self.deleted) + len(self.added)


def soa_record(zone: Zone) -> Record:
    return (zone.origin, zone.soa.ttl, zone.soa[0])


def zone_diff(old: Zone, new: Zone) -> ZoneDiff:
    """The difference that turns `old` into `new`."""
    changed_names = getattr(new, "changed_names", None)
    if changed_names is not None and type(old) is type(new):
        # Compact zones (compactzone.py) tell the changed names from their bytes, without
        # making a million records into objects.
        return names_diff(old, new, changed_names(old))
    before = set(records(old))
    after = set(records(new))
    return ZoneDiff(
        soa_record(old),
        soa_record(new),
        tuple(sorted(before - after, key=_order)),
        tuple(sorted(after - before, key=_order)),
    )


def names_diff(old: Zone, new: Zone, names: Iterable[dns.name.Name]) -> ZoneDiff:
    """`zone_diff` for versions that differ only at `names` (an update): O(changes)."""
    before: set[Record] = set()
    after: set[Record] = set()
    for name in names:
        was = old.nodes.get(name) or {}
        now = new.nodes.get(name) or {}
        for key in was.keys() | now.keys():
            a, b = was.get(key), now.get(key)
            if a is b or key[0] == dns.rdatatype.SOA:
                continue  # the same RRset object: nothing to compare (hashing rdatas is dear)
            if a is not None:
                before.update((a.name, a.ttl, rd) for rd in a)
            if b is not None:
                after.update((b.name, b.ttl, rd) for rd in b)
    return ZoneDiff(
        soa_record(old),
        soa_record(new),
        tuple(sorted(before - after, key=_order)),
        tuple(sorted(after - before, key=_order)),
    )


def condense(diffs: Iterable[ZoneDiff]) -> ZoneDiff:
    """Several consecutive differences as one (RFC 1995 section 5 allows sending it)."""
    diffs = list(diffs)
    deleted: dict[Record, None] = {}
    added: dict[Record, None] = {}
    for d in diffs:
        for rec in d.deleted:
            if rec in added:
                del added[rec]
            else:
                deleted[rec] = None
        for rec in d.added:
            if rec in deleted:
                del deleted[rec]
            else:
                added[rec] = None
    return ZoneDiff(diffs[0].old_soa, diffs[-1].new_soa, tuple(deleted), tuple(added))


def apply_diff(zone: Zone, diff: ZoneDiff) -> Zone:
    """`zone` with `diff` applied (the zone's serial must be the diff's old serial)."""
    current: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
    for rrset in zone.rrsets():
        if rrset.rdtype == dns.rdatatype.SOA:
            continue
        copy = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
        copy.update(rrset)
        current[(rrset.name, rrset.rdtype, rrset.covers)] = copy
    for name, _ttl, rd in diff.deleted:
        key = (name, rd.rdtype, rd.covers())
        rrset = current.get(key)
        if rrset is not None:
            rrset.discard(rd)
            if not rrset:
                del current[key]
    for name, ttl, rd in diff.added:
        key = (name, rd.rdtype, rd.covers())
        rrset = current.get(key)
        if rrset is None:
            rrset = current[key] = dns.rrset.RRset(name, dns.rdataclass.IN, rd.rdtype, rd.covers())
        rrset.add(rd, ttl)
    soa_name, soa_ttl, soa_rd = diff.new_soa
    soa = dns.rrset.RRset(soa_name, dns.rdataclass.IN, dns.rdatatype.SOA)
    soa.add(soa_rd, soa_ttl)
    return Zone(zone.origin, [soa, *current.values()])


def _order(rec: Record):
    name, ttl, rd = rec
    return (name, rd.rdtype, ttl, rd.to_digestable())


def replay(zone: Zone, diff: ZoneDiff) -> Zone | None:
    """`diff`'s record changes made on a zone that has moved on since (a rebase of an update):
    deletions of records still there, additions of records not yet there; the SOA is `zone`'s.
    None when nothing is left to change."""
    have = set(records(zone))
    deleted = tuple(r for r in diff.deleted if r in have)
    added = tuple(r for r in diff.added if r not in have)
    if not deleted and not added:
        return None
    soa = soa_record(zone)
    return apply_diff(zone, ZoneDiff(soa, soa, deleted, added))
