"""Dynamic updates (RFC 2136 sections 2 and 3): prerequisites, then changes, all or nothing.

Rules this module keeps:
- An update is checked in the RFC's order (zone section, prerequisites, prescan, changes); the
  first failing rule decides the rcode, and a refused update changes nothing.
- The result is a new Zone whose serial is greater (RFC 1982) and that passes the loader's checks,
  or no new zone at all; the old Zone is never touched. No sockets, no git, no clock.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.wire

from gitdns.diff import ZoneDiff, names_diff
from gitdns.serial import serial_gt, serial_increase
from gitdns.zone import RRsetKey, Zone
from gitdns.zonefile import check_changes

_SOA, _NS, _CNAME, _DNAME, _ANY = (
    dns.rdatatype.SOA,
    dns.rdatatype.NS,
    dns.rdatatype.CNAME,
    dns.rdatatype.DNAME,
    dns.rdatatype.ANY,
)
_IN, _CLASS_ANY, _CLASS_NONE = dns.rdataclass.IN, dns.rdataclass.ANY, dns.rdataclass.NONE
# Types that may stand beside a CNAME (RFC 2181 10.1, RFC 4035 2.5), as the loader allows.
_CNAME_COMPANIONS = {_CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.KEY}
# Types of which a name holds one record: an add replaces it (RFC 2136 3.4.2.2; DNAME as BIND).
_SINGLETONS = {_CNAME, _DNAME, _SOA}
_POLICIES = ("increment", "date")
# Section numbers of an UPDATE message (RFC 2136 2): zone, prerequisite, update.
_ZONE_SECTION, _PREREQ_SECTION, _UPDATE_SECTION = 0, 1, 2


@dataclass(frozen=True)
class UpdateResult:
    """What an UPDATE did: the rcode to answer, and the new zone version if there is one."""

    rcode: int  # dns.rcode value to answer
    zone: Zone | None  # the new version; None when refused or when nothing changed
    diff: ZoneDiff | None  # from the old to the new version (with the new SOA)
    reason: str = ""  # for the log when refused: which rule, in words an operator understands
    summary: tuple[str, ...] = ()  # one short line per change, for the commit message


@dataclass(frozen=True)
class _RR:
    """One resource record of an UPDATE message, with the class that gives it its meaning."""

    name: dns.name.Name
    rdclass: int  # IN, ANY or NONE carry the RFC 2136 meaning; anything else is a FORMERR
    rdtype: int
    covers: int
    ttl: int  # as sent on the wire (0 for an empty RR built in memory)
    rdata: dns.rdata.Rdata | None  # None: RDLENGTH 0


class _Refused(Exception):
    """An update rule decided the rcode; nothing is changed."""

    def __init__(self, rcode: int, reason: str):
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason


def apply_update(
    zone: Zone,
    update: dns.message.Message,
    *,
    serial_policy: str = "increment",
    today: datetime.date | None = None,
) -> UpdateResult:
    """Apply an RFC 2136 UPDATE to `zone`; the result says what to answer and what changed.

    The caller parses and authenticates the message first, and must not relativize it:
    ``dns.message.from_wire(wire, keyring=..., one_rr_per_rrset=True)`` (no ``origin``; dnspython
    always keeps each RR of an UPDATE apart, and gives the RFC 2136 classes ANY and NONE as the
    RRset's ``deleting``). A message built in memory with ``dns.update.UpdateMessage`` works too
    (its relative names are taken relative to its ``origin``).
    The TTLs of RRs without data (which dnspython drops) are read back from ``update.wire`` to
    enforce the rule that they are 0.

    Choices where the RFC leaves room, as BIND makes them:
    - an add to an existing RRset with another TTL gives the whole RRset the new TTL
      (RFC 2181 5.2 wants one TTL per RRset, and the newest one is what the client asked for);
    - an SOA add replaces the SOA only if its serial is greater (RFC 1982), else it is ignored;
    - a DNAME add replaces the DNAME at its name, as a CNAME add does (RFC 6672: one per name);
    - deleting the last NS record is ignored at the apex only; a delegation may be removed.

    `serial_policy` "increment" adds 1 to the serial; "date" keeps the YYYYMMDDnn form and needs
    `today`, since this module reads no clock.
    """
    if serial_policy not in _POLICIES:
        raise ValueError(f"unknown serial policy {serial_policy!r}; use one of {_POLICIES}")
    if serial_policy == "date" and today is None:
        raise ValueError('the "date" serial policy needs today\'s date')
    try:
        _check_zone_section(zone, update)
        prereqs = _section(update, _PREREQ_SECTION)
        changes = _section(update, _UPDATE_SECTION)
        _check_prerequisites(zone, prereqs)
        _prescan(zone, changes)
    except _Refused as e:
        return UpdateResult(e.rcode, None, None, e.reason)

    work = _WorkingCopy(zone)
    summary: list[str] = []
    for rr in changes:
        summary.extend(_apply_change(work, rr))
    if not work.changes():
        return UpdateResult(dns.rcode.NOERROR, None, None)

    old_soa = zone.soa[0]
    new_soa_rrset = work.get(zone.origin, (_SOA, 0))
    assert new_soa_rrset is not None  # an SOA is never deleted
    if new_soa_rrset[0] is old_soa or new_soa_rrset[0] == old_soa:
        serial = serial_increase(zone.serial, serial_policy, today)
        bumped = dns.rrset.RRset(zone.origin, _IN, _SOA)
        bumped.add(old_soa.replace(serial=serial), new_soa_rrset.ttl)
        work.put(bumped)
    changed = work.changes()
    new_zone = zone.with_changes(changed)
    errors = check_changes(new_zone, changed)
    if errors:
        reason = "the update would break the zone: " + "; ".join(e.message for e in errors)
        return UpdateResult(dns.rcode.REFUSED, None, None, reason)
    return UpdateResult(
        dns.rcode.NOERROR, new_zone, names_diff(zone, new_zone, changed), summary=tuple(summary)
    )


# --- RFC 2136 3.1: the zone section --------------------------------------------------------


def _check_zone_section(zone: Zone, update: dns.message.Message) -> None:
    section = update.sections[_ZONE_SECTION]
    if len(section) != 1:
        raise _Refused(dns.rcode.FORMERR, f"the zone section holds {len(section)} entries, not 1")
    zsec = section[0]
    if zsec.rdtype != _SOA:
        kind = dns.rdatatype.to_text(zsec.rdtype)
        raise _Refused(dns.rcode.FORMERR, f"the zone section asks for type {kind}, not SOA")
    if zsec.name != zone.origin or zsec.rdclass != _IN:
        raise _Refused(
            dns.rcode.NOTAUTH,
            f"the update is for zone {zsec.name} class {dns.rdataclass.to_text(zsec.rdclass)}, "
            f"not {zone.origin} IN",
        )


def _section(update: dns.message.Message, number: int) -> list[_RR]:
    """The RRs of a section one by one, with their RFC 2136 class and their wire TTL."""
    rrs: list[_RR] = []
    origin = update.origin  # None when parsed from the wire; set on messages built in memory
    for rrset in update.sections[number]:
        rdclass = rrset.deleting if rrset.deleting is not None else rrset.rdclass
        name = rrset.name if origin is None else rrset.name.derelativize(origin)
        if len(rrset) == 0:
            rrs.append(_RR(name, rdclass, rrset.rdtype, rrset.covers, rrset.ttl, None))
        for rd in rrset:
            rd = rd if origin is None else _absolute(rd, origin)
            rrs.append(_RR(name, rdclass, rrset.rdtype, rrset.covers, rrset.ttl, rd))
    wire_ttls = _wire_ttls(update, number, rrs)
    if wire_ttls is not None:
        rrs = [
            _RR(rr.name, rr.rdclass, rr.rdtype, rr.covers, ttl, rr.rdata)
            for rr, ttl in zip(rrs, wire_ttls, strict=True)
        ]
    return rrs


def _absolute(rd: dns.rdata.Rdata, origin: dns.name.Name) -> dns.rdata.Rdata:
    """`rd` with every relative name in it made absolute (the zone stores absolute names)."""
    wire = rd.to_wire(origin=origin)
    assert wire is not None
    return dns.rdata.from_wire(rd.rdclass, rd.rdtype, wire, 0, len(wire))


def _wire_ttls(update: dns.message.Message, number: int, rrs: list[_RR]) -> list[int] | None:
    """The TTLs of a section as sent, when `update.wire` is the message (None otherwise).

    dnspython keeps no TTL for an RR without data, yet RFC 2136 requires it to be 0 there.
    """
    wire = getattr(update, "wire", None)
    if not wire:
        return None
    try:
        parser = dns.wire.Parser(wire)
        counts = parser.get_struct("!HHHHHH")[2:]
        if counts[number] != len(rrs):
            return None
        for _ in range(counts[0]):
            parser.get_name(decompress=True)
            parser.get_struct("!HH")
        ttls: list[int] = []
        for section in range(1, number + 1):
            for i in range(counts[section]):
                name = parser.get_name(decompress=True)
                rdtype, rdclass, ttl, rdlen = parser.get_struct("!HHIH")
                parser.seek(parser.current + rdlen)
                if section == number:
                    rr = rrs[i]
                    if (name, rdtype, rdclass) != (rr.name, rr.rdtype, rr.rdclass):
                        return None
                    ttls.append(ttl)
        return ttls
    except (dns.exception.DNSException, ValueError, IndexError, struct.error):
        return None


# --- RFC 2136 3.2: prerequisites ------------------------------------------------------------


def _check_prerequisites(zone: Zone, prereqs: list[_RR]) -> None:
    """RFC 2136 3.2.5, in its order; the first RR that fails decides the rcode."""
    origin = zone.origin
    wanted: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
    for rr in prereqs:
        what = _describe_rr(rr)
        if rr.ttl != 0:
            raise _Refused(dns.rcode.FORMERR, f"prerequisite {what} has TTL {rr.ttl}, not 0")
        if not rr.name.is_subdomain(origin):
            raise _Refused(dns.rcode.NOTZONE, f"prerequisite {what} is outside the zone {origin}")
        if rr.rdclass in (_CLASS_ANY, _CLASS_NONE):
            if rr.rdata is not None:
                raise _Refused(
                    dns.rcode.FORMERR, f"prerequisite {what} of class ANY/NONE carries data"
                )
            in_use = rr.name in zone.nodes
            if rr.rdclass == _CLASS_ANY and rr.rdtype == _ANY and not in_use:
                raise _Refused(
                    dns.rcode.NXDOMAIN, f"prerequisite failed: {rr.name} must be in use but is not"
                )
            if rr.rdclass == _CLASS_NONE and rr.rdtype == _ANY and in_use:
                raise _Refused(
                    dns.rcode.YXDOMAIN, f"prerequisite failed: {rr.name} must not be in use but is"
                )
            if rr.rdtype != _ANY:
                exists = _has_type(zone.nodes.get(rr.name, {}), rr.rdtype)
                tname = dns.rdatatype.to_text(rr.rdtype)
                if rr.rdclass == _CLASS_ANY and not exists:
                    raise _Refused(
                        dns.rcode.NXRRSET,
                        f"prerequisite failed: {rr.name} {tname} must exist but does not",
                    )
                if rr.rdclass == _CLASS_NONE and exists:
                    raise _Refused(
                        dns.rcode.YXRRSET,
                        f"prerequisite failed: {rr.name} {tname} must not exist but does",
                    )
        elif rr.rdclass == _IN:
            if rr.rdata is None or dns.rdatatype.is_metatype(rr.rdtype):
                raise _Refused(dns.rcode.FORMERR, f"prerequisite {what} is not a record")
            key = (rr.name, rr.rdtype, rr.covers)
            rrset = wanted.get(key)
            if rrset is None:
                rrset = wanted[key] = dns.rrset.RRset(rr.name, _IN, rr.rdtype, rr.covers)
            rrset.add(rr.rdata)
        else:
            raise _Refused(dns.rcode.FORMERR, f"prerequisite {what} has a class RFC 2136 forbids")
    for (name, rdtype, covers), rrset in wanted.items():
        have = zone.get(name, rdtype, covers)
        if have is None or set(have) != set(rrset):
            tname = dns.rdatatype.to_text(rdtype)
            raise _Refused(
                dns.rcode.NXRRSET,
                f"prerequisite failed: {name} {tname} is not exactly the RRset given",
            )


def _has_type(node: dict[RRsetKey, dns.rrset.RRset], rdtype: int) -> bool:
    return any(key[0] == rdtype for key in node)


# --- RFC 2136 3.4.1: prescan ----------------------------------------------------------------

_NEVER_ADDED = {dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA, dns.rdatatype.MAILB}


def _prescan(zone: Zone, changes: list[_RR]) -> None:
    """RFC 2136 3.4.1.3: every update RR is checked before any is applied."""
    origin = zone.origin
    for rr in changes:
        what = _describe_rr(rr)
        if not rr.name.is_subdomain(origin):
            raise _Refused(dns.rcode.NOTZONE, f"update {what} is outside the zone {origin}")
        if rr.rdclass == _IN:
            if rr.rdata is None or dns.rdatatype.is_metatype(rr.rdtype):
                raise _Refused(dns.rcode.FORMERR, f"update {what} cannot be added to a zone")
        elif rr.rdclass == _CLASS_ANY:
            if rr.ttl != 0 or rr.rdata is not None or rr.rdtype in _NEVER_ADDED:
                raise _Refused(
                    dns.rcode.FORMERR, f"update {what}: a class ANY delete needs TTL 0, no data "
                    "and a type that can be stored"
                )
        elif rr.rdclass == _CLASS_NONE:
            if (
                rr.ttl != 0
                or rr.rdata is None
                or rr.rdtype == _ANY
                or rr.rdtype in _NEVER_ADDED
            ):
                raise _Refused(
                    dns.rcode.FORMERR,
                    f"update {what}: a class NONE delete needs TTL 0, data and a real type",
                )
        else:
            raise _Refused(dns.rcode.FORMERR, f"update {what} has a class RFC 2136 forbids")


# --- RFC 2136 3.4.2: the changes ------------------------------------------------------------


class _WorkingCopy:
    """The zone being updated: copy on write of the nodes it touches, so refusing is free and
    the cost follows the size of the update, not of the zone."""

    def __init__(self, zone: Zone):
        self.old = zone
        self.origin = zone.origin
        self.touched: dict[dns.name.Name, dict[RRsetKey, dns.rrset.RRset]] = {}

    def node(self, name: dns.name.Name) -> dict[RRsetKey, dns.rrset.RRset]:
        node = self.touched.get(name)
        return node if node is not None else self.old.nodes.get(name, {})

    def get(self, name: dns.name.Name, key: RRsetKey) -> dns.rrset.RRset | None:
        return self.node(name).get(key)

    def _writable(self, name: dns.name.Name) -> dict[RRsetKey, dns.rrset.RRset]:
        node = self.touched.get(name)
        if node is None:
            node = self.touched[name] = dict(self.old.nodes.get(name, {}))
        return node

    def put(self, rrset: dns.rrset.RRset) -> None:
        self._writable(rrset.name)[(rrset.rdtype, rrset.covers)] = rrset

    def remove(self, name: dns.name.Name, key: RRsetKey) -> None:
        self._writable(name).pop(key, None)  # an empty node is a deleted name

    def changes(self) -> dict[dns.name.Name, dict[RRsetKey, dns.rrset.RRset]]:
        """The touched names whose records (or TTLs) differ from the old version."""
        return {n: node for n, node in self.touched.items()
                if not _same_node(self.old.nodes.get(n, {}), node)}

    def zone(self) -> Zone:
        return self.old.with_changes(self.changes())


def _same_node(a: dict[RRsetKey, dns.rrset.RRset], b: dict[RRsetKey, dns.rrset.RRset]) -> bool:
    # `is` first: an untouched RRset is the same object, and comparing RRsets hashes every
    # rdata (its wire form), the better part of an update's cost at the apex.
    return a.keys() == b.keys() and all(
        a[k] is b[k] or (a[k] == b[k] and a[k].ttl == b[k].ttl) for k in a)


def _apply_change(work: _WorkingCopy, rr: _RR) -> Iterator[str]:
    """Apply one update RR (RFC 2136 3.4.2); yields a summary line for each real change."""
    if rr.rdclass == _IN:
        yield from _add(work, rr)
    elif rr.rdclass == _CLASS_ANY:
        yield from _delete_rrsets(work, rr)
    else:
        yield from _delete_record(work, rr)


def _add(work: _WorkingCopy, rr: _RR) -> Iterator[str]:
    assert rr.rdata is not None
    name, rdtype, key = rr.name, rr.rdtype, (rr.rdtype, rr.covers)
    node = work.node(name)
    # 3.4.2.2: a CNAME cannot join other data, nor other data a CNAME; such adds are ignored.
    if rdtype == _CNAME and any(k[0] not in _CNAME_COMPANIONS for k in node):
        return
    if rdtype not in _CNAME_COMPANIONS and (_CNAME, 0) in node:
        return
    old = node.get(key)
    if rdtype == _SOA and (old is None or not serial_gt(rr.rdata.serial, old[0].serial)):
        return  # only the apex has an SOA, and only a greater serial replaces it
    new = dns.rrset.RRset(name, _IN, rdtype, rr.covers)
    if old is not None and rdtype not in _SINGLETONS:
        new.update(old)
    new.add(rr.rdata)
    new.ttl = rr.ttl  # the whole RRset takes the TTL of the newest add (as BIND does)
    if old is not None and old == new and old.ttl == new.ttl:
        return  # a duplicate
    work.put(new)
    owner, tname = _rel(name, work.origin), dns.rdatatype.to_text(rdtype)
    if old is None or rr.rdata not in old:
        if old is not None and rdtype in _SINGLETONS:
            yield f"-{owner} {old.ttl} {tname} {old[0].to_text()}"
        yield f"+{owner} {rr.ttl} {tname} {rr.rdata.to_text()}"
    if old is not None and old.ttl != rr.ttl and (rr.rdata in old or rdtype not in _SINGLETONS):
        yield f"~{owner} {tname} TTL {old.ttl} -> {rr.ttl}"


def _delete_rrsets(work: _WorkingCopy, rr: _RR) -> Iterator[str]:
    name, origin = rr.name, work.origin
    owner = _rel(name, origin)
    node = work.node(name)
    if rr.rdtype == _ANY:
        keep = {(_SOA, 0), (_NS, 0)} if name == origin else set()
        doomed = [k for k in node if k not in keep]
        for key in doomed:
            work.remove(name, key)
        if doomed:
            yield f"-{owner} (all but SOA and NS)" if keep else f"-{owner} (all)"
        return
    if name == origin and rr.rdtype in (_SOA, _NS):
        return  # the apex SOA and NS RRsets are never deleted whole (3.4.2.3)
    doomed = [k for k in node if k[0] == rr.rdtype]
    for key in doomed:
        work.remove(name, key)
    if doomed:
        yield f"-{owner} {dns.rdatatype.to_text(rr.rdtype)} (RRset)"


def _delete_record(work: _WorkingCopy, rr: _RR) -> Iterator[str]:
    assert rr.rdata is not None
    name, key = rr.name, (rr.rdtype, rr.covers)
    if rr.rdtype == _SOA:
        return  # 3.4.2.4: the SOA is never deleted
    old = work.get(name, key)
    if old is None or rr.rdata not in old:
        return
    if rr.rdtype == _NS and name == work.origin and len(old) == 1:
        return  # 3.4.2.4: the apex keeps at least one NS record
    if len(old) == 1:
        work.remove(name, key)
    else:
        new = old.copy()
        new.discard(rr.rdata)
        work.put(new)
    tname = dns.rdatatype.to_text(rr.rdtype)
    yield f"-{_rel(name, work.origin)} {old.ttl} {tname} {rr.rdata.to_text()}"


# --- words for operators --------------------------------------------------------------------


def _rel(name: dns.name.Name, origin: dns.name.Name) -> str:
    """An owner name as the zone file writes it: relative inside the zone, `@` for the apex."""
    if name.is_subdomain(origin):
        return name.relativize(origin).to_text()
    return name.to_text()


def _describe_rr(rr: _RR) -> str:
    cls = dns.rdataclass.to_text(rr.rdclass)
    tname = dns.rdatatype.to_text(rr.rdtype)
    data = f" {rr.rdata.to_text()}" if rr.rdata is not None else ""
    return f"`{rr.name} {rr.ttl} {cls} {tname}{data}`"
