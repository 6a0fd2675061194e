"""The set of served zones, swapped atomically.

Rules this module keeps:
- A ZoneSet is immutable; a reload or an update builds a new one and `Store.swap` installs it
  with one assignment, so every query is answered from exactly one consistent version.
- The zone for a name is the closest enclosing served zone (longest suffix match).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import dns.name
import dns.rdatatype

from gitdns.zone import Zone


class ZoneSet(Mapping[dns.name.Name, Zone]):
    """Served zones by origin."""

    def __init__(self, zones: Mapping[dns.name.Name, Zone] | None = None):
        self._zones: dict[dns.name.Name, Zone] = dict(zones or {})

    def __getitem__(self, origin: dns.name.Name) -> Zone:
        return self._zones[origin]

    def __iter__(self) -> Iterator[dns.name.Name]:
        return iter(self._zones)

    def __len__(self) -> int:
        return len(self._zones)

    def find(self, qname: dns.name.Name, qtype: int = 0) -> Zone | None:
        """The closest enclosing zone of `qname`; for DS, the parent side of a zone cut."""
        zones = self._zones
        labels = qname.labels
        for i in range(len(labels)):
            zone = zones.get(dns.name.Name(labels[i:]) if i else qname)
            if zone is not None:
                if i == 0 and qtype == dns.rdatatype.DS and len(labels) > 1:
                    # RFC 4035 3.1.4.1: DS lives in the parent; answer from it when we have it.
                    parent = self.find(qname.parent())
                    if parent is not None:
                        return parent
                return zone
        return None

    def replace(self, changes: Mapping[dns.name.Name, Zone | None]) -> ZoneSet:
        """A new set with `changes` applied (None removes a zone)."""
        zones = dict(self._zones)
        for origin, zone in changes.items():
            if zone is None:
                zones.pop(origin, None)
            else:
                zones[origin] = zone
        return ZoneSet(zones)


class Store:
    """Holds the current ZoneSet; readers take `store.zones` once per query."""

    def __init__(self, zones: ZoneSet | None = None):
        self.zones = zones or ZoneSet()
        self.generation = 0

    def swap(self, zones: ZoneSet) -> None:
        self.zones = zones
        self.generation += 1
