"""One version of one zone, indexed for answering.

Rules this module keeps:
- A Zone never changes after it is built: a new version is a new Zone, swapped in whole, so a
  reader never sees half an update.
- Every owner name is inside the zone; the index knows every name that exists, empty
  non-terminals included (RFC 4592 2.2.2), and every delegation point.
- A version made by `with_changes` costs time in proportion to the change, not the zone: it
  shares the previous version's dicts through a small layer of changes (`Layered`), which is
  folded into a new dict once it grows past COMPACT_AFTER entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import dns.name
import dns.rdatatype
import dns.rrset

RRsetKey = tuple[int, int]  # (rdtype, covers)
Node = dict[RRsetKey, dns.rrset.RRset]
COMPACT_AFTER = 4096
_GONE = object()
_MISSING = object()
_TARGET_TYPES = (dns.rdatatype.NS, dns.rdatatype.MX, dns.rdatatype.SRV)


class Layered(Mapping):
    """A read-only mapping: a shared base dict seen through a small dict of changes."""

    __slots__ = ("base", "delta", "_len")

    def __init__(self, base: dict, delta: dict, length: int):
        self.base = base
        self.delta = delta  # key -> value, or _GONE for a key removed from the base
        self._len = length

    def __getitem__(self, key):
        value = self.delta.get(key, _MISSING)
        if value is _MISSING:
            return self.base[key]
        if value is _GONE:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = self.delta.get(key, _MISSING)
        if value is _MISSING:
            return self.base.get(key, default)
        return default if value is _GONE else value

    def __contains__(self, key) -> bool:
        value = self.delta.get(key, _MISSING)
        if value is _MISSING:
            return key in self.base
        return value is not _GONE

    def __iter__(self) -> Iterator:
        delta = self.delta
        for key in self.base:
            if key not in delta:
                yield key
        for key, value in delta.items():
            if value is not _GONE:
                yield key

    def __len__(self) -> int:
        return self._len


def layered(mapping: Mapping, changes: Mapping) -> Mapping:
    """`mapping` with `changes` (key -> new value, or _GONE to remove) applied, sharing it."""
    if isinstance(mapping, Layered):
        base, delta = mapping.base, dict(mapping.delta)
    else:
        base, delta = mapping, {}
    length = len(mapping)
    for key, value in changes.items():
        before = key in mapping
        if value is _GONE:
            if key in base:
                delta[key] = _GONE
            else:
                delta.pop(key, None)
            length -= before
        else:
            delta[key] = value
            length += not before
    if not delta:
        return base
    result = Layered(base, delta, length)
    if len(delta) > COMPACT_AFTER:
        return dict(result.items())
    return result


class Zone:
    """The records of one zone, by owner name, with the structure answering needs.

    `nodes`: owner -> {(type, covers): RRset}; `names`: every existing name (nodes and empty
    non-terminals) -> the number of nodes at or below it; `cuts`: delegation points.
    """

    __slots__ = (
        "origin", "nodes", "names", "cuts", "soa", "serial", "record_count", "outside", "signed",
        "_referrers",
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
        nodes: dict[dns.name.Name, Node] = {}
        count = 0
        for rrset in rrsets:
            nodes.setdefault(rrset.name, {})[(rrset.rdtype, rrset.covers)] = rrset
            count += len(rrset)
        self.nodes: Mapping[dns.name.Name, Node] = nodes
        self.record_count = count
        names: dict[dns.name.Name, int] = {}
        for name in nodes:
            for n in _up_to(name, origin):
                names[n] = names.get(n, 0) + 1
        self.names: Mapping[dns.name.Name, int] = names
        self.cuts: Mapping[dns.name.Name, bool] = {
            n: True for n, node in nodes.items() if n != origin and (dns.rdatatype.NS, 0) in node
        }
        self.soa = nodes[origin][(dns.rdatatype.SOA, 0)]
        self.serial: int = self.soa[0].serial
        self.signed = any(key[0] == dns.rdatatype.RRSIG for node in nodes.values() for key in node)
        self._referrers: Mapping[dns.name.Name, int] | None = None

    def with_changes(self, changes: Mapping[dns.name.Name, Node | None]) -> Zone:
        """A new version: each changed owner's whole node replaced (None or {} removes it).

        Costs time in proportion to the changes; the apex must keep its SOA.
        """
        new = object.__new__(Zone)
        new.origin, new.outside = self.origin, self.outside
        node_changes: dict = {}
        name_counts: dict[dns.name.Name, int] = {}
        cut_changes: dict = {}
        referrer_changes: dict[dns.name.Name, int] = {}
        count = self.record_count
        signed = self.signed
        for name, node in changes.items():
            old = self.nodes.get(name)
            node = node or None
            node_changes[name] = node if node is not None else _GONE
            count += _records(node) - _records(old)
            if (old is None) != (node is None):
                step = 1 if node is not None else -1
                for n in _up_to(name, self.origin):
                    name_counts[n] = name_counts.get(n, self.names.get(n, 0)) + step
            if name != self.origin:
                cut_changes[name] = True if node and (dns.rdatatype.NS, 0) in node else _GONE
            if node and any(key[0] == dns.rdatatype.RRSIG for key in node):
                signed = True
            if self._referrers is not None:
                for target, step in _target_changes(old, node):
                    referrer_changes[target] = referrer_changes.get(
                        target, self._referrers.get(target, 0)) + step
        new.nodes = layered(self.nodes, node_changes)
        new.names = layered(
            self.names, {n: (c if c > 0 else _GONE) for n, c in name_counts.items()}
        )
        new.cuts = layered(self.cuts, cut_changes)
        new.record_count = count
        new.signed = signed
        new.soa = new.nodes[self.origin][(dns.rdatatype.SOA, 0)]
        new.serial = new.soa[0].serial
        new._referrers = None if self._referrers is None else layered(
            self._referrers, {t: (c if c > 0 else _GONE) for t, c in referrer_changes.items()})
        return new

    def referrers(self) -> Mapping[dns.name.Name, int]:
        """Target name -> number of NS, MX and SRV records of the zone that point at it (built
        on first use, then kept up to date by `with_changes`)."""
        if self._referrers is None:
            counts: dict[dns.name.Name, int] = {}
            for node in self.nodes.values():
                for target, step in _target_changes(None, node):
                    counts[target] = counts.get(target, 0) + step
            self._referrers = counts
        return self._referrers

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


def _up_to(name: dns.name.Name, origin: dns.name.Name) -> Iterator[dns.name.Name]:
    """`name` and its ancestors down to (and including) `origin`."""
    labels = name.labels
    last = len(labels) - len(origin.labels)
    for i in range(last):
        yield dns.name.Name(labels[i:]) if i else name
    yield origin  # the shared object, not a new one per name (it is every name's last step)


def _records(node: Node | None) -> int:
    return sum(len(r) for r in node.values()) if node else 0


def _target_changes(old: Node | None, new: Node | None) -> Iterator[tuple[dns.name.Name, int]]:
    """(target, -1/+1) for the NS, MX and SRV targets a node change removes and adds."""
    for node, step in ((old, -1), (new, 1)):
        if not node:
            continue
        for rdtype in _TARGET_TYPES:
            rrset = node.get((rdtype, 0))
            for rd in rrset or ():
                yield (rd.exchange if rdtype == dns.rdatatype.MX else rd.target), step
