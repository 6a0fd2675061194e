"""A zone kept as one bytes object of wire records per owner name: the form big zones live in.

Why: a `Zone` of dnspython RRsets costs about 950 bytes and 30 us of construction per record
(1.2 GB and two minutes for a 1.2M-record zone, which BIND loads in 4 s and 350 MB). Here a name
costs a dict entry, its key and one bytes object (about 150 bytes for a host with A and AAAA);
the dnspython objects the rest of gitdns works with are made on demand, per node, when the
reference path (`answer.lookup`, updates, checks) asks for one. The fast path answers from its
templates and never asks twice for the same question, and transfers read the bytes directly.

The format (`encode_node` writes it, `decode_node` reads it; the loader writes it directly):
- key: the owner relative to the zone's origin, lowercased, as wire labels without the root
  (`b"\\x05host1"` for `Host1.<origin>`; the apex is `b""`).
- blob: one flag byte, then the records. Flag 0: the owner is the key's labels followed by the
  zone's origin exactly as `Zone.origin` spells it. Flag 1: a length byte and the owner's full
  wire form follow (its case as written: zone data keeps its case, RFC 4343 4.1).
- records: each as in a message without its owner: type, class, TTL, rdata length, rdata
  (uncompressed, names as written). The records of one RRset are consecutive and share its TTL;
  RRsets come in the order the node had them. An RRSIG's covered type is its rdata's first field.

Rules this module keeps:
- A CompactZone answers every question a `Zone` answers with the same objects' values: `nodes`,
  `names` and `cuts` are mappings keyed by `dns.name.Name` like `Zone`'s (tests compare them over
  the zone corpus), so answering, updates and checks run unchanged on it.
- A new version (`with_changes`) costs time in proportion to the change, as for `Zone`: changed
  nodes are encoded into a small layer over the shared table, folded into a new table after
  COMPACT_AFTER changes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gitdns import zone as _zone
from gitdns.zone import _GONE, Node, Zone, _target_changes, _up_to, layered

_SOA, _NS, _RRSIG = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.RRSIG
_IN = dns.rdataclass.IN
_MX = dns.rdatatype.MX
_NAME_ONLY = frozenset({dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR,
                        dns.rdatatype.DNAME})
_HEAD = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_SOA_TIMES = struct.Struct("!IIIII")
DECODED_CACHE = 4096  # decoded nodes kept per zone (all its versions together)


def name_key(labels: tuple[bytes, ...], origin_len: int) -> bytes:
    """The key of a name given by its labels (the caller knows it is inside the zone)."""
    rel = labels[: len(labels) - origin_len]
    if len(rel) == 1:
        label = rel[0]
        return bytes((len(label),)) + label.lower()
    return b"".join(bytes((len(label),)) + label.lower() for label in rel)


def key_labels(key: bytes) -> tuple[bytes, ...]:
    """The labels a key holds (lowercase)."""
    out = []
    i, n = 0, len(key)
    while i < n:
        size = key[i]
        out.append(key[i + 1 : i + 1 + size])
        i += 1 + size
    return tuple(out)


def name_wire(name: dns.name.Name) -> bytes:
    """An absolute name's uncompressed wire form, without dnspython's Name per suffix."""
    return b"".join([bytes((len(label),)) + label for label in name.labels])


def rdata_wire(rd: dns.rdata.Rdata) -> bytes:
    """`rd.to_wire()` (uncompressed, names as written), by hand for the types an update writes
    most: dnspython's writer makes a Name object for every suffix of every name it writes (an
    SOA cost 70 us, the better part of encoding an apex after each update)."""
    rdtype = rd.rdtype
    if rdtype == _SOA and rd.mname.is_absolute() and rd.rname.is_absolute():
        return (name_wire(rd.mname) + name_wire(rd.rname)
                + _SOA_TIMES.pack(rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum))
    if rdtype in _NAME_ONLY and rd.target.is_absolute():
        return name_wire(rd.target)
    if rdtype == _MX and rd.exchange.is_absolute():
        return rd.preference.to_bytes(2, "big") + name_wire(rd.exchange)
    return rd.to_wire()


def encode_node(name: dns.name.Name, node: Node, key: bytes, origin: dns.name.Name,
                old: tuple[bytes, Node] | None = None) -> bytes:
    """The blob of one node (see the module docstring). `old`: a blob and the node it decodes
    to; the RRsets `node` shares with it (the same objects) are copied as bytes, not encoded
    again (an update at the apex changes the SOA and keeps the NS and MX RRsets)."""
    if name.labels == key_labels(key) + origin.labels:
        parts = [b"\x00"]
    else:
        owner = name.to_wire()
        parts = [b"\x01", bytes((len(owner),)), owner]
    spans = _type_spans(old[0]) if old is not None else None
    for rrkey, rrset in node.items():
        if spans is not None and rrkey[0] != _RRSIG and old[1].get(rrkey) is rrset:  # type: ignore[index]
            span = spans.get(rrkey[0])
            if span is not None:
                parts.append(old[0][span[0] : span[1]])  # type: ignore[index]
                continue
        ttl = rrset.ttl
        for rd in rrset:
            data = rdata_wire(rd)
            parts.append(_HEAD.pack(rrset.rdtype, rrset.rdclass, ttl, len(data)))
            parts.append(data)
    return b"".join(parts)


def _type_spans(blob: bytes) -> dict[int, tuple[int, int]]:
    """rdtype -> (start, end) of its records in `blob`, for types whose records are together."""
    spans: dict[int, tuple[int, int]] = {}
    split: set[int] = set()
    last = None
    for rdtype, _ttl, start, end in iter_records(blob):
        if rdtype == last:
            spans[rdtype] = (spans[rdtype][0], end)
        elif rdtype in spans:
            split.add(rdtype)
        else:
            spans[rdtype] = (start - 10, end)
        last = rdtype
    for rdtype in split:
        del spans[rdtype]
    return spans


def records_start(blob: bytes) -> int:
    """Where a blob's records start (after the flag and any spelt-out owner)."""
    return 1 if blob[0] == 0 else 2 + blob[1]


def iter_records(blob: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(rdtype, ttl, rdata start, rdata end) of each record of a blob."""
    i = records_start(blob)
    n = len(blob)
    unpack = _HEAD.unpack_from
    while i < n:
        rdtype, _rdclass, ttl, size = unpack(blob, i)
        i += 10
        yield rdtype, ttl, i, i + size
        i += size


def decode_node(blob: bytes, owner: dns.name.Name) -> Node:
    """The node a blob holds, as dnspython RRsets owned by `owner`."""
    node: Node = {}
    rrset = None
    last = None
    i = records_start(blob)
    n = len(blob)
    unpack = _HEAD.unpack_from
    from_wire = dns.rdata.from_wire
    while i < n:
        rdtype, rdclass, ttl, size = unpack(blob, i)
        i += 10
        rd = from_wire(rdclass, rdtype, blob, i, size)
        i += size
        covers = rd.covers() if rdtype == _RRSIG else 0
        if (rdtype, covers) != last:
            last = (rdtype, covers)
            rrset = node.get(last)
            if rrset is None:
                rrset = node[last] = dns.rrset.RRset(owner, rdclass, rdtype, covers)
        rrset.add(rd, ttl)
    return node


def blob_owner(blob: bytes, key: bytes, origin: dns.name.Name) -> dns.name.Name:
    """The owner name a blob gives for its key."""
    if blob[0] == 0:
        return dns.name.Name(key_labels(key) + origin.labels) if key else origin
    return dns.name.from_wire(blob, 2)[0]


class _Keys:
    """Names to keys for one origin."""

    __slots__ = ("origin", "_olen", "_lower")

    def __init__(self, origin: dns.name.Name):
        self.origin = origin
        self._olen = len(origin.labels)
        self._lower = tuple(label.lower() for label in origin.labels)

    def key(self, name: dns.name.Name) -> bytes | None:
        """The key of `name`, or None when it is not inside the origin."""
        labels = name.labels
        extra = len(labels) - self._olen
        if extra < 0:
            return None
        if tuple(label.lower() for label in labels[extra:]) != self._lower:
            return None
        if extra == 0:
            return b""
        return name_key(labels, self._olen)

    def name(self, key: bytes) -> dns.name.Name:
        return dns.name.Name(key_labels(key) + self.origin.labels) if key else self.origin


class CompactNodes(Mapping):
    """Owner name -> node (dnspython RRsets, decoded on each access) over key -> blob bytes."""

    __slots__ = ("keys_of", "table", "delta", "_len", "_decoded")

    def __init__(self, keys_of: _Keys, table: dict[bytes, bytes],
                 delta: dict[bytes, bytes | None] | None = None, length: int | None = None,
                 decoded: dict[tuple[bytes, int], tuple[bytes, Node]] | None = None):
        self.keys_of = keys_of
        self.table = table  # never changed once built: versions share it
        self.delta = delta or {}  # key -> blob, or None: removed from the table
        self._len = len(table) if length is None else length
        # Nodes decoded lately, by key, with the blob they came from (checked by identity, so
        # versions can share this cache): the reference path asks for a node several times
        # per question, and dnspython hashes every rdata it adds to an RRset (about 40 us).
        self._decoded = {} if decoded is None else decoded

    def remember(self, key: bytes, blob: bytes, node: Node) -> None:
        """`node` is what `blob` decodes to."""
        if len(self._decoded) >= DECODED_CACHE:
            self._decoded.clear()
        self._decoded[(key, id(blob))] = (blob, node)

    def _node(self, key: bytes, blob: bytes) -> Node:
        # By key and blob: an update compares a node's old and new versions (the entry holds
        # the blob, so its id is not reused while the entry lives).
        hit = self._decoded.get((key, id(blob)))
        if hit is not None and hit[0] is blob:
            return hit[1]
        node = decode_node(blob, blob_owner(blob, key, self.keys_of.origin))
        if len(self._decoded) >= DECODED_CACHE:
            self._decoded.clear()
        self._decoded[(key, id(blob))] = (blob, node)
        return node

    # -- bytes ------------------------------------------------------------------------------

    def raw(self, key: bytes) -> bytes | None:
        blob = self.delta.get(key, _GONE)
        if blob is _GONE:
            return self.table.get(key)
        return blob

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, blob) of every node, the table's first (in load order), then the changed."""
        delta = self.delta
        if not delta:
            yield from self.table.items()
            return
        for key, blob in self.table.items():
            if key not in delta:
                yield key, blob
        for key, blob in delta.items():
            if blob is not None:
                yield key, blob

    def changed_keys(self, other: CompactNodes) -> Iterator[bytes]:
        """Keys whose blob differs between `other` and self (O(changes) when they share a
        table, O(zone) of bytes comparisons otherwise)."""
        if other.table is self.table:
            for key in self.delta.keys() | other.delta.keys():
                if self.raw(key) != other.raw(key):
                    yield key
            return
        mine = self.table if not self.delta else dict(self.raw_items())
        theirs = other.table if not other.delta else dict(other.raw_items())
        for key, blob in mine.items():
            if theirs.get(key) != blob:
                yield key
        for key in theirs:
            if key not in mine:
                yield key

    def with_blobs(self, changes: Mapping[bytes, bytes | None]) -> CompactNodes:
        delta = dict(self.delta)
        length = self._len
        for key, blob in changes.items():
            before = self.raw(key) is not None
            delta[key] = blob
            length += (blob is not None) - before
        if len(delta) <= _zone.COMPACT_AFTER:
            return CompactNodes(self.keys_of, self.table, delta, length, self._decoded)
        table = dict(self.table)
        for key, blob in delta.items():
            if blob is None:
                table.pop(key, None)
            else:
                table[key] = blob
        return CompactNodes(self.keys_of, table, decoded=self._decoded)

    # -- the Mapping a Zone's nodes are -------------------------------------------------------

    def __getitem__(self, name: dns.name.Name) -> Node:
        key = self.keys_of.key(name)
        blob = None if key is None else self.raw(key)
        if blob is None:
            raise KeyError(name)
        return self._node(key, blob)

    def get(self, name, default=None):
        key = self.keys_of.key(name)
        blob = None if key is None else self.raw(key)
        if blob is None:
            return default
        return self._node(key, blob)

    def __contains__(self, name) -> bool:
        key = self.keys_of.key(name)
        return key is not None and self.raw(key) is not None

    def __iter__(self) -> Iterator[dns.name.Name]:
        origin = self.keys_of.origin
        for key, blob in self.raw_items():
            yield blob_owner(blob, key, origin)

    def items(self) -> Iterator[tuple[dns.name.Name, Node]]:  # type: ignore[override]
        origin = self.keys_of.origin
        for key, blob in self.raw_items():
            owner = blob_owner(blob, key, origin)
            yield owner, decode_node(blob, owner)

    def values(self) -> Iterator[Node]:  # type: ignore[override]
        for _name, node in self.items():
            yield node

    def __len__(self) -> int:
        return self._len


class CompactNames(Mapping):
    """Every existing name -> the number of nodes at or below it, over a CompactNodes.

    Only names whose count is not implied are stored (`counts`, by key): a node's own name is
    implied to count 1, so a zone of leaves (hosts under the apex) stores the apex alone.
    """

    __slots__ = ("nodes", "counts")

    def __init__(self, nodes: CompactNodes, counts: Mapping[bytes, int]):
        self.nodes = nodes
        self.counts = counts  # key -> count, where it is not 1 for a node

    def _count(self, key: bytes) -> int:
        count = self.counts.get(key)
        if count is not None:
            return count
        return 1 if self.nodes.raw(key) is not None else 0

    def __getitem__(self, name: dns.name.Name) -> int:
        key = self.nodes.keys_of.key(name)
        count = 0 if key is None else self._count(key)
        if not count:
            raise KeyError(name)
        return count

    def get(self, name, default=None):
        key = self.nodes.keys_of.key(name)
        count = 0 if key is None else self._count(key)
        return count or default

    def __contains__(self, name) -> bool:
        key = self.nodes.keys_of.key(name)
        return key is not None and self._count(key) > 0

    def __iter__(self) -> Iterator[dns.name.Name]:
        keys_of = self.nodes.keys_of
        yield from self.nodes
        for key, count in self.counts.items():
            if count and self.nodes.raw(key) is None:
                yield keys_of.name(key)

    def __len__(self) -> int:
        extra = sum(1 for key, c in self.counts.items() if c and self.nodes.raw(key) is None)
        return len(self.nodes) + extra


class CompactCuts(Mapping):
    """Delegation points -> True, by key (a zone may delegate a million names)."""

    __slots__ = ("keys_of", "keys")

    def __init__(self, keys_of: _Keys, keys: frozenset[bytes] | set[bytes]):
        self.keys_of = keys_of
        self.keys = keys

    def __getitem__(self, name: dns.name.Name) -> bool:
        if name not in self:
            raise KeyError(name)
        return True

    def __contains__(self, name) -> bool:
        key = self.keys_of.key(name)
        return key is not None and key in self.keys

    def __iter__(self) -> Iterator[dns.name.Name]:
        for key in self.keys:
            yield self.keys_of.name(key)

    def __len__(self) -> int:
        return len(self.keys)


class CompactZone(Zone):
    """A Zone whose nodes are bytes (see the module docstring)."""

    __slots__ = ()

    @classmethod
    def build(
        cls,
        origin: dns.name.Name,
        table: dict[bytes, bytes],
        counts: dict[bytes, int],
        cuts: Iterable[bytes],
        record_count: int,
        signed: bool,
        referrers: dict[dns.name.Name, int] | None = None,
        outside: dict[dns.name.Name, list[str]] | None = None,
    ) -> CompactZone:
        """A zone from its table (key -> blob), the counts of names not implied by a node of
        their own, its delegation keys and record count (as the loader gathers them)."""
        zone = object.__new__(cls)
        zone.origin = origin
        zone.outside = outside or {}
        keys_of = _Keys(origin)
        nodes = CompactNodes(keys_of, table)
        zone.nodes = nodes
        zone.names = CompactNames(nodes, counts)
        zone.cuts = CompactCuts(keys_of, frozenset(cuts))
        zone.record_count = record_count
        zone.signed = signed
        zone._referrers = referrers
        apex = nodes.get(origin)
        if apex is None or (_SOA, 0) not in apex:
            raise ValueError(f"no SOA at the apex of {origin}")
        zone.soa = apex[(_SOA, 0)]
        zone.serial = zone.soa[0].serial
        return zone

    @classmethod
    def from_zone(cls, zone: Zone) -> CompactZone:
        """The same zone in compact form."""
        origin = zone.origin
        olen = len(origin.labels)
        table: dict[bytes, bytes] = {}
        counts: dict[bytes, int] = {}
        for name, node in zone.nodes.items():
            key = name_key(name.labels, olen)
            table[key] = encode_node(name, node, key, origin)
        for name, count in zone.names.items():
            key = name_key(name.labels, olen)
            if count != (1 if key in table else 0):
                counts[key] = count
        cuts = [name_key(name.labels, olen) for name in zone.cuts]
        return cls.build(origin, table, counts, cuts, zone.record_count, zone.signed,
                         dict(zone.referrers()), zone.outside)

    def with_changes(self, changes: Mapping[dns.name.Name, Node | None]) -> CompactZone:
        """A new version: each changed owner's whole node replaced (None or {} removes it)."""
        nodes: CompactNodes = self.nodes  # type: ignore[assignment]
        keys_of = nodes.keys_of
        origin = self.origin
        blobs: dict[bytes, bytes | None] = {}
        count_changes: dict[bytes, int] = {}
        cut_keys = set()
        uncut_keys = set()
        referrer_changes: dict[dns.name.Name, int] = {}
        names: CompactNames = self.names  # type: ignore[assignment]
        record_count = self.record_count
        signed = self.signed
        for name, node in changes.items():
            key = keys_of.key(name)
            if key is None:
                raise ValueError(f"{name} is not inside the zone {origin}")
            old_blob = nodes.raw(key)
            old = None if old_blob is None else nodes._node(key, old_blob)
            node = node or None
            blobs[key] = None if node is None else encode_node(
                name, node, key, origin, None if old is None else (old_blob, old))
            if node is not None:
                # The node as given is what decoding the new blob would make (a Zone keeps
                # the nodes it is given too): no decoding the apex again after every update.
                nodes.remember(key, blobs[key], node)
            record_count += _records(node) - _records(old)
            if (old is None) != (node is None):
                step = 1 if node is not None else -1
                for n in _up_to(name, origin):
                    k = keys_of.key(n)
                    count_changes[k] = count_changes.get(k, names._count(k)) + step
            if key:
                (cut_keys if node and (_NS, 0) in node else uncut_keys).add(key)
            if node and any(k[0] == _RRSIG for k in node):
                signed = True
            if self._referrers is not None:
                for target, step in _target_changes(old, node):
                    referrer_changes[target] = referrer_changes.get(
                        target, self._referrers.get(target, 0)) + step
        new_nodes = nodes.with_blobs(blobs)
        stored = {}
        for key, count in count_changes.items():
            implied = 1 if new_nodes.raw(key) is not None else 0
            stored[key] = _GONE if count == implied else count
        new = object.__new__(CompactZone)
        new.origin, new.outside = origin, self.outside
        new.nodes = new_nodes
        new.names = CompactNames(new_nodes, layered(names.counts, stored) if stored
                                 else names.counts)
        cuts: CompactCuts = self.cuts  # type: ignore[assignment]
        if cut_keys - cuts.keys or uncut_keys & cuts.keys:
            new.cuts = CompactCuts(keys_of, (cuts.keys - uncut_keys) | cut_keys)
        else:
            new.cuts = cuts
        new.record_count = record_count
        new.signed = signed
        apex = new_nodes.get(origin)
        new.soa = apex[(_SOA, 0)]
        new.serial = new.soa[0].serial
        new._referrers = None if self._referrers is None else layered(
            self._referrers, {t: (c if c > 0 else _GONE) for t, c in referrer_changes.items()})
        return new

    def rrsets(self) -> Iterable[dns.rrset.RRset]:
        """Every RRset, SOA first (the order AXFR needs)."""
        yield self.soa
        for name, node in self.nodes.items():
            apex = name == self.origin
            for key, rrset in node.items():
                if not (apex and key == (_SOA, 0)):
                    yield rrset

    def changed_names(self, older: CompactZone) -> list[dns.name.Name]:
        """The owner names whose data differ from `older`'s."""
        mine: CompactNodes = self.nodes  # type: ignore[assignment]
        theirs: CompactNodes = older.nodes  # type: ignore[assignment]
        out = []
        for key in mine.changed_keys(theirs):
            blob = mine.raw(key) or theirs.raw(key)
            out.append(blob_owner(blob, key, self.origin))
        return out

    def __repr__(self) -> str:
        return f"<CompactZone {self.origin} serial {self.serial}, {self.record_count} records>"


def _records(node: Node | None) -> int:
    return sum(len(r) for r in node.values()) if node else 0
