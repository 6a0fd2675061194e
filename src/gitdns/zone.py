"""One version of one zone, indexed for answering.

Rules this module keeps:
- A Zone never changes after it is built: a new version is a new Zone, swapped in whole, so a
  reader never sees half an update.
- Every owner name is inside the zone; the index knows every name that exists, empty
  non-terminals included (RFC 4592 2.2.2), and every delegation point.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.name
import dns.rdatatype
import dns.rrset

RRsetKey = tuple[int, int]  # (rdtype, covers)


class Zone:
    """The records of one zone, by owner name, with the structure answering needs."""

    __slots__ = (
        "origin", "nodes", "names", "cuts", "soa", "serial", "record_count", "outside", "signed",
    )

    def __init__(
        self,
        origin: dns.name.Name,
        rrsets: Iterable[dns.rrset.RRset],
        outside: dict[dns.name.Name, list[str]] | None = None,
    ):
        self.origin = origin
        # Addresses of out-of-zone name servers given in the file: used for NOTIFY, never served.
        self.outside = outside or {}
        nodes: dict[dns.name.Name, dict[RRsetKey, dns.rrset.RRset]] = {}
        count = 0
        for rrset in rrsets:
            nodes.setdefault(rrset.name, {})[(rrset.rdtype, rrset.covers)] = rrset
            count += len(rrset)
        self.nodes = nodes
        self.record_count = count
        names: set[dns.name.Name] = set()
        for name in nodes:
            n = name
            while n not in names:
                names.add(n)
                if n == origin:
                    break
                n = n.parent()
        self.names = frozenset(names)
        self.cuts = frozenset(
            n for n, node in nodes.items() if n != origin and (dns.rdatatype.NS, 0) in node
        )
        self.soa = nodes[origin][(dns.rdatatype.SOA, 0)]
        self.signed = any(key[0] == dns.rdatatype.RRSIG for node in nodes.values() for key in node)
        self.serial: int = self.soa[0].serial

    def get(self, name: dns.name.Name, rdtype: int, covers: int = 0) -> dns.rrset.RRset | None:
        node = self.nodes.get(name)
        return None if node is None else node.get((rdtype, covers))

    def addresses_of(self, host: dns.name.Name) -> list[str]:
        """IPv4 and IPv6 addresses of `host` that the zone file gives (in-zone or outside)."""
        found = [rd.address for t in (dns.rdatatype.A, dns.rdatatype.AAAA)
                 for rd in (self.get(host, t) or ())]
        return found + self.outside.get(host, [])

    def rrsets(self) -> Iterable[dns.rrset.RRset]:
        """Every RRset, SOA first (the order AXFR needs)."""
        yield self.soa
        for node in self.nodes.values():
            for rrset in node.values():
                if rrset is not self.soa:
                    yield rrset

    def negative_soa(self) -> dns.rrset.RRset:
        """The SOA for negative answers: TTL = min(SOA TTL, MINIMUM) (RFC 2308 section 3)."""
        soa = dns.rrset.RRset(self.origin, self.soa.rdclass, dns.rdatatype.SOA)
        soa.add(self.soa[0], min(self.soa.ttl, self.soa[0].minimum))
        return soa

    def __repr__(self) -> str:
        return f"<Zone {self.origin} serial {self.serial}, {self.record_count} records>"
