"""Authoritative answers: RFC 1034 4.3.2 as refined by RFC 2181, RFC 4592, RFC 6672 and RFC 6604.

Rules this module keeps:
- `lookup` is a pure function of a zone and a question; it returns the sections, never bytes.
  It is the reference path: the fast path must give byte-identical answers.
- Answers are minimal (like BIND's `minimal-responses no-auth`, Knot and NSD): no NS in the
  authority section of a positive answer; the SOA in negative ones; NS and glue in referrals;
  addresses of NS, MX and SRV targets from the zone in the additional section.
- CNAME and DNAME chains are followed inside the zone, at most MAX_CHAIN links, loops stopped.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rrset

from gitdns.zone import Zone

MAX_CHAIN = 16
_A, _AAAA, _NS, _CNAME, _DNAME, _DS, _ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.NS,
    dns.rdatatype.CNAME,
    dns.rdatatype.DNAME,
    dns.rdatatype.DS,
    dns.rdatatype.ANY,
)
_WILD = b"*"


@dataclass
class Lookup:
    """The sections of an authoritative answer, before rendering."""

    rcode: int = dns.rcode.NOERROR
    aa: bool = True
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    referral: bool = False  # glue in `additional` is required (RFC 9471)
    dnssec_ok: bool = False
    served: Container[dns.name.Name] = ()


def lookup(
    zone: Zone,
    qname: dns.name.Name,
    qtype: int,
    any_in_full: bool = True,
    dnssec_ok: bool = False,
    served: Container[dns.name.Name] = (),
) -> Lookup:
    """Answer `qname`/`qtype` from `zone` (which must enclose `qname`).

    `any_in_full` False answers ANY with a single RRset (RFC 8482 section 4.2, used over UDP).
    `dnssec_ok` (the DO bit) adds the DS of a delegation to a referral of a signed zone.
    `served` names the other zones we serve: a chain that leads into one of them ends there,
    as BIND ends it, instead of referring the client to ourselves.
    """
    result = Lookup(dnssec_ok=dnssec_ok, served=served)
    name: dns.name.Name | None = qname
    seen: set[dns.name.Name] = set()
    for _ in range(MAX_CHAIN):
        seen.add(name)
        name = _resolve(zone, name, qtype, any_in_full, result)
        if name is None or not name.is_subdomain(zone.origin):
            break
        if name in seen:
            result.rcode = dns.rcode.SERVFAIL  # a CNAME loop (RFC 1034 3.6.2: an error)
            break
    else:
        result.rcode = dns.rcode.SERVFAIL  # longer than MAX_CHAIN, as BIND's max restarts
    _add_additional(zone, result)
    return result


def _resolve(
    zone: Zone, name: dns.name.Name, qtype: int, any_in_full: bool, result: Lookup
) -> dns.name.Name | None:
    """One step of RFC 1034 4.3.2 step 3; returns the next name of a CNAME/DNAME chain."""
    origin = zone.origin
    nodes = zone.nodes
    labels = name.labels
    depth = len(labels) - len(origin.labels)
    closest = origin
    # Walk down from the apex towards `name`: a delegation or a DNAME above `name` decides.
    for i in range(depth, -1, -1):
        n = dns.name.Name(labels[i:]) if i else name
        if n not in zone.names:
            break
        closest = n
        node = nodes.get(n)
        if node is None:
            continue
        if i and (_DNAME, 0) in node:
            target = _dname(zone, name, n, node[(_DNAME, 0)], result)
            # The synthesized CNAME answers a CNAME or ANY query (RFC 1034 4.3.2 step 3a).
            return None if qtype in (_CNAME, _ANY) else target
        if n in zone.cuts and not (i == 0 and qtype == _DS):
            _referral(zone, n, result)
            return None
    node = nodes.get(name)
    if node is not None:
        return _from_node(zone, name, node, qtype, any_in_full, result)
    if closest == name:  # an empty non-terminal: the name exists, with no data
        _nodata(zone, result)
        return None
    wildcard = dns.name.Name((_WILD, *closest.labels))
    if wildcard in zone.names:  # RFC 4592 3.3.1: the source of synthesis
        wnode = nodes.get(wildcard)
        if wnode is None:
            _nodata(zone, result)
            return None
        return _from_node(zone, name, wnode, qtype, any_in_full, result)
    result.rcode = dns.rcode.NXDOMAIN
    result.authority = [zone.negative_soa()]
    return None


def _owned(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    """`rrset` under `owner` (wildcard synthesis); the same object when the owner matches."""
    if rrset.name == owner:
        return rrset
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype, rrset.covers)
    copy.update(rrset)
    return copy


def _from_node(
    zone: Zone,
    owner: dns.name.Name,
    node: dict,
    qtype: int,
    any_in_full: bool,
    result: Lookup,
) -> dns.name.Name | None:
    if qtype == _ANY:
        rrsets = sorted(node.values(), key=lambda r: (r.rdtype, r.covers))
        if not any_in_full:
            rrsets = rrsets[:1]
        result.answer.extend(_owned(r, owner) for r in rrsets)
        return None
    cname = node.get((_CNAME, 0))
    if cname is not None and qtype != _CNAME:
        result.answer.append(_owned(cname, owner))
        return cname[0].target
    rrset = node.get((qtype, 0))
    if rrset is None:
        _nodata(zone, result)
        return None
    result.answer.append(_owned(rrset, owner))
    return None


def _nodata(zone: Zone, result: Lookup) -> None:
    result.authority = [zone.negative_soa()]


def _referral(zone: Zone, cut: dns.name.Name, result: Lookup) -> None:
    """RFC 1034 4.3.2 3.b: NS of the cut in authority, AA clear unless a chain led here."""
    if result.answer and cut in result.served:
        return  # a chain into a child zone we serve ends at the alias (as BIND does)
    if not result.answer:
        result.aa = False
    result.authority = [zone.nodes[cut][(_NS, 0)]]
    ds = zone.get(cut, _DS) if result.dnssec_ok and zone.signed else None
    if ds is not None:
        result.authority.append(ds)
    result.referral = True


def _dname(
    zone: Zone,
    name: dns.name.Name,
    owner: dns.name.Name,
    dname: dns.rrset.RRset,
    result: Lookup,
) -> dns.name.Name | None:
    """RFC 6672 2.2: the DNAME, then a CNAME synthesized for `name`."""
    result.answer.append(dname)
    try:
        target = name.relativize(owner).derelativize(dname[0].target)
    except dns.name.NameTooLong:
        result.rcode = dns.rcode.YXDOMAIN
        return None
    cname = dns.rrset.RRset(name, dns.rdataclass.IN, _CNAME)
    cname.add(dns.rdtypes.ANY.CNAME.CNAME(dns.rdataclass.IN, _CNAME, target), dname.ttl)
    result.answer.append(cname)
    return target


def _add_additional(zone: Zone, result: Lookup) -> None:
    """Addresses of NS, MX and SRV targets held in the zone (glue included for NS)."""
    present = {(r.name, r.rdtype) for r in result.answer}
    targets: list[tuple[dns.name.Name, bool]] = []  # (target, glue allowed)
    for section in (result.answer, result.authority):
        for rrset in section:
            rdtype = rrset.rdtype
            if rdtype == _NS:
                targets.extend((rd.target, True) for rd in rrset)
            elif rdtype == dns.rdatatype.MX:
                targets.extend((rd.exchange, False) for rd in rrset)
            elif rdtype == dns.rdatatype.SRV:
                targets.extend((rd.target, False) for rd in rrset)
    added: set[tuple[dns.name.Name, int]] = set()
    for target, glue_allowed in targets:
        node = zone.nodes.get(target)
        if node is None:
            continue
        if not glue_allowed and _below_cut(zone, target):
            continue  # glue is for referrals only, never authoritative data (RFC 2181 5.4.1)
        for rdtype in (_A, _AAAA):
            key = (target, rdtype)
            rrset = node.get((rdtype, 0))
            if rrset is not None and key not in present and key not in added:
                added.add(key)
                result.additional.append(rrset)


def _below_cut(zone: Zone, name: dns.name.Name) -> bool:
    """Is `name` at or below a delegation of `zone`?"""
    if not zone.cuts:
        return False
    n = name
    while n != zone.origin and len(n) > len(zone.origin):
        if n in zone.cuts:
            return True
        n = n.parent()
    return False
