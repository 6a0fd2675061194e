"""The query hot path: a plain query's reply spliced from ready wire bytes, no dnspython on a hit.

Why hand-written: the reference path (`core.handle`: dnspython parses the query, `answer.lookup`
walks the zone, dnspython renders the reply) costs 100-200 us per query, about 9k queries per
second per core. Here a repeated question costs one pass over the header, one slice-and-lower of
the name, one dict lookup and four concatenations, about 1 us, so a core answers as many queries
as BIND's. Every byte we send is still a byte the reference path produced: it is run once per
kind of question, and its reply is cut into a template.

Rules this module keeps:
- `answer` returns exactly what `core.handle(ServerState(zones), wire, Request(tcp=tcp))` returns
  for the same bytes, or None, and then the reference path answers. None for anything but a plain
  query: QR set, an opcode other than QUERY, counts other than one question (and one OPT), a
  compressed or malformed name, a class other than IN, transfers and meta types, EDNS version > 0
  or an extended rcode, an EDNS option dnspython validates (but COOKIE, NSID), trailing bytes, TSIG.
  One caveat: dnspython shuffles the records of an RRset at every rendering (`want_shuffle`), so
  the reference path itself is not a function of the query; a template keeps the order of the
  rendering it was cut from (one order, as Knot and NSD answer by default). With the shuffle off
  the bytes are equal (tests/test_fastpath.py turns it off to compare them).
- A reply is id + template header + the question as sent + template tail. Its header differs from
  the query's by id only in RD and CD (copied), the rest (QR, AA, TC, rcode, counts) is the
  template's; the question is echoed byte for byte (0x20 case included). The tail (answer,
  authority, additional, OPT) is dnspython's rendering of the reference reply; its compression
  pointers into the question depend only on offsets, and dnspython compares names without case,
  so the tail does not depend on the case of the question, except after a DNAME (the synthesized
  CNAME's target carries the query's labels): such replies are cached by the exact question.
- Templates are cached per (lowercased question, mode); the mode is the transport and EDNS
  (none / DO clear / DO set). UDP replies over EDNS depend on the client's size only when the
  complete reply (the TCP one) exceeds 512 octets: then one template per size limit, each the
  reference path's own (the complete one, additional data dropped, or TC with the question only).
- Names that do not exist (NXDOMAIN, wildcards, names below a cut) have no cache line of their
  own on a first query: their reply is a function of (zone, closest encloser, qtype, mode), of
  the length of the question name, and of the longest suffix of it that is a name the reply
  writes (`_Class`; the proof is at `_Class`). So a flood of random names costs a few
  microseconds each, not a reference lookup each.
- Bounded: at most `max_entries` entries per table (6 modes, exact and lowercased, classes); a
  full table drops its older half (a hit does no bookkeeping). Built empty and filled on
  demand, so a new version of a 1.2M-record zone answers at once; entries of zones that did not
  change are taken over from the previous FastPath (`previous=`) when the set of zones is the
  same.
"""

from __future__ import annotations

import io
import itertools
import struct

import dns.edns
import dns.name
import dns.rdata
import dns.rdatatype

from gitdns import core
from gitdns.answer import lookup
from gitdns.store import ZoneSet
from gitdns.zone import Zone

DEFAULT_MAX_ENTRIES = 100_000

_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # one question, nothing else
_OPT_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # one question and the OPT record
_OPT_START = b"\x00\x00\x29"  # OPT: the root name, type 41
_CLASS_IN = b"\x00\x01"
_DS, _ANY, _DNAME = dns.rdatatype.DS, dns.rdatatype.ANY, dns.rdatatype.DNAME
_SOA, _OPT, _NS, _CNAME = dns.rdatatype.SOA, dns.rdatatype.OPT, dns.rdatatype.NS, \
    dns.rdatatype.CNAME
_STRUCTURAL_TYPES = frozenset({_NS, _CNAME, _DNAME})
_VOLATILE = ((), None)  # info of entries dropped at every update (_Sized)
_HARD = object()  # an SOA the fast path cannot patch: the entry is volatile
# The reference path answers these itself: transfers, meta types (FORMERR), MAILA/MAILB.
_NOT_HERE = frozenset({
    dns.rdatatype.OPT, dns.rdatatype.TKEY, dns.rdatatype.TSIG, dns.rdatatype.IXFR,
    dns.rdatatype.AXFR, dns.rdatatype.MAILB, dns.rdatatype.MAILA,
})
# Modes: the tables a question is looked up in.
UDP, UDP_EDNS, UDP_EDNS_DO, TCP, TCP_EDNS, TCP_EDNS_DO = range(6)
_MODES = 6
_NO_LIMIT = 1 << 17  # a full_len no UDP size reaches

# EDNS options dnspython parses into classes that validate their content: those we accept here
# are the ones that never fail (NSID, unknown ones) and COOKIE, whose rule we copy below.
_OPTION_FREE, _OPTION_COOKIE, _OPTION_REFERENCE = 0, 1, 2
_option_kinds: dict[int, int] = {}


def _option_kind(code: int) -> int:
    kind = _option_kinds.get(code)
    if kind is None:
        cls = dns.edns.get_option_class(code)
        if cls is dns.edns.GenericOption or cls is dns.edns.NSIDOption:
            kind = _OPTION_FREE
        elif cls is dns.edns.CookieOption:
            kind = _OPTION_COOKIE
        else:
            kind = _OPTION_REFERENCE
        _option_kinds[code] = kind
    return kind


def _opt_ok(wire: bytes, e: int) -> bool:
    """The OPT record at `e` ends the message, has version 0 and no extended rcode, and its
    options parse as dnspython parses them (the common case, no options, is checked inline)."""
    n = len(wire)
    if n < e + 11 or wire[e : e + 3] != _OPT_START or wire[e + 5] or wire[e + 6]:
        return False
    p = e + 11
    if p + ((wire[e + 9] << 8) | wire[e + 10]) != n:
        return False
    while p < n:
        if p + 4 > n:
            return False
        code = (wire[p] << 8) | wire[p + 1]
        size = (wire[p + 2] << 8) | wire[p + 3]
        p += 4 + size
        if p > n:
            return False
        kind = _option_kind(code)
        if kind == _OPTION_COOKIE:
            if size != 8 and not 16 <= size <= 40:  # client cookie 8, server cookie 8 to 32
                return False
        elif kind != _OPTION_FREE:
            return False
    return True


def _labels(wire: bytes, z: int) -> list[bytes] | None:
    """The labels of the question name, if it is uncompressed, well-formed and ends at `z`."""
    labels = []
    p = 12
    while True:
        size = wire[p]
        if size == 0:
            break
        if size > 63:
            return None
        labels.append(wire[p + 1 : p + 1 + size])
        p += size + 1
    if p != z or z - 12 + 1 > 255:
        return None
    return labels


def _answer_has_dname(reply: bytes, e: int) -> bool:
    """Does the answer section (starting at `e`) hold a DNAME record?"""
    p = e
    for _ in range((reply[6] << 8) | reply[7]):
        while True:
            size = reply[p]
            if size == 0:
                p += 1
                break
            if size >= 0xC0:
                p += 2
                break
            p += size + 1
        if (reply[p] << 8) | reply[p + 1] == _DNAME:
            return True
        p += 10 + ((reply[p + 8] << 8) | reply[p + 9])
    return False


class _Sized:
    """UDP templates of a question whose complete reply may not fit every client's size."""

    __slots__ = ("full", "full_len", "variants", "exact")

    def __init__(self, full: tuple | None, full_len: int, exact: bool):
        self.full = full  # the complete template (the TCP one); None for ANY (RFC 8482)
        self.full_len = full_len  # its length with the question; _NO_LIMIT if unknown
        self.variants: dict[int, tuple] = {}  # size limit -> template, for limits < full_len
        self.exact = exact  # filed under the exact question (its bytes depend on the case)


class _Class:
    """Questions for names that do not exist in their zone, answered alike.

    For a name q with no node and no empty non-terminal in zone Z, `answer.lookup` decides from
    the closest encloser ce (the longest suffix of q in Z.names: a cut or DNAME at or above it,
    the wildcard *.ce, or NXDOMAIN), and uses q itself only (a) as the owner of what a wildcard
    synthesizes, which dnspython always compresses to a pointer to the question (offset 12),
    (b) in DNAME substitution, and (c) in the chain's loop check, when a CNAME chain leads back
    to q. Classes with a DNAME in the answer are refused (`None` in the class table). Let S be
    every name the reply's records write (owners other than q, and the compressible names in
    RDATA), with all their suffixes; it is computed once, from a q0 not in S, so (c) did not
    cut q0's chain. Then for q1, q2 with the same name length and the same longest suffix m
    below ce that is in S (or none): their lookups give the same records but for the owner q,
    and when the reply is rendered every name looked up in the compression table is in S, and
    a name n of S is a suffix of q1 iff it is a suffix of q2 (iff n is a suffix of m, or n is
    ce or above), at the same offset (the same length from the end of the question). So every
    byte after the question is the same, truncation included. If q1 is in S, m = q1 and the
    template is its own. Tested against the reference path in tests/test_fastpath.py.
    """

    __slots__ = ("names", "templates")

    def __init__(self, names: frozenset[bytes]):
        self.names = names  # S, as lowercased wire names
        self.templates: dict[tuple[int, bytes], tuple] = {}


_UNSTRUCTURED = _Class(frozenset())  # marks classes the proof does not cover (DNAME)


class FastPath:
    """Answers plain queries for one ZoneSet from cached wire templates."""

    def __init__(self, zones: ZoneSet, max_entries: int = DEFAULT_MAX_ENTRIES,
                 previous: FastPath | None = None):
        self.zones = zones
        self.max_entries = max(16, max_entries)
        self._state = core.ServerState(zones)
        self._tables: tuple[dict[bytes, tuple], ...] = tuple({} for _ in range(_MODES))
        self._exact: tuple[dict[bytes, tuple], ...] = tuple({} for _ in range(_MODES))
        self._negative: tuple[dict[bytes, tuple], ...] = tuple({} for _ in range(_MODES))
        self._classes: dict[bytes, dict[tuple, _Class]] = {}
        self._heads: dict[bytes, tuple[bytes, ...]] = {}
        self._origins: dict[bytes, Zone] = {
            origin.canonicalize().to_wire(): zone for origin, zone in zones.items()
        }
        # Updates (see `after_update`): each entry names its zone by a token that lives as long
        # as its entries stay valid (not the zone, so that old versions are not kept alive);
        # `_index` maps a lowercased wire name to the (table, key) slots of the entries whose
        # reply depends on it; `_volatile` lists the (mode, key) of hot-table entries dropped at
        # every update (_Sized entries, negative ones copied from `_negative`).
        self._tokens: dict[bytes, object] = {o: object() for o in self._origins}
        self._zone_token: dict[int, object] = {
            id(z): self._tokens[o] for o, z in self._origins.items()}
        self._index: dict[bytes, list] = {}
        self._slots = 0
        self._volatile: list[tuple[int, bytes]] = []
        self._soa_now: dict[bytes, tuple] = {}
        # Entries of the previous version are valid here when they were made from a zone that is
        # the very same object, and the set of origins (closest enclosing zone, served children
        # at the end of a chain) is the same.
        self._previous: FastPath | None = None
        self._kept: set[int] = set()
        if previous is not None and previous._origins.keys() == self._origins.keys():
            for o, z in self._origins.items():
                if previous._origins.get(o) is z:
                    self._tokens[o] = self._zone_token[id(z)] = previous._tokens[o]
            self._kept = {id(self._tokens[o]) for o, z in self._origins.items()
                          if previous._origins.get(o) is z}
            self._kept.add(id(None))
            self._previous = previous
            previous._previous = None  # one generation back, never a chain

    # -- the hot path ----------------------------------------------------------------------

    def answer(self, wire: bytes, tcp: bool) -> bytes | None:
        """The reply to a plain query; None when the reference path (core.handle) must answer."""
        n = len(wire)
        if n < 17 or wire[2] & 0xF8:  # a response, or an opcode other than QUERY
            return None
        z = wire.find(0, 12)  # the end of the question name (checked label by label on a miss)
        e = z + 5  # the end of the question
        counts = wire[4:12]
        if counts == _PLAIN_COUNTS:
            if e != n:
                return None
            mode = TCP if tcp else UDP
        elif counts == _OPT_COUNTS:
            # OPT: root owner, type 41, payload, extended rcode 0, version 0, flags, no options
            if not (n == e + 11 and wire[e : e + 3] == _OPT_START
                    and not (wire[e + 5] | wire[e + 6] | wire[e + 9] | wire[e + 10])) \
                    and not _opt_ok(wire, e):
                return None
            mode = (TCP_EDNS if tcp else UDP_EDNS) + (wire[e + 7] >> 7)
        else:
            return None
        key = wire[12:z].lower() + wire[z:e]
        entry = self._tables[mode].get(key)
        if entry is None:
            try:
                entry = self._find(wire, tcp, mode, key, z, e)
            except Exception:  # anything unexpected is the reference path's to answer
                return None
            if entry is None:
                return None
        heads = entry[0]
        if heads is None:
            try:
                entry = self._sized(wire, e, entry[1])
            except Exception:
                return None
            if entry is None:
                return None
            heads = entry[0]
        return wire[:2] + heads[(wire[2] & 1) | ((wire[3] >> 3) & 2)] + wire[12:e] + entry[1]

    # -- misses ----------------------------------------------------------------------------

    def _find(self, wire: bytes, tcp: bool, mode: int, key: bytes, z: int, e: int):
        """The entry for a question not in the table: exact, inherited, by class, or new."""
        question = wire[12:e]
        entry = self._exact[mode].get(question)
        if entry is not None:
            return entry
        entry = self._negative[mode].get(key)
        if entry is not None:
            entry = self._fresh(entry)
            if entry is None:
                del self._negative[mode][key]
            else:
                self._negative[mode][key] = entry
                self._store(self._tables[mode], key, entry)
                self._volatile.append((mode, key))
                return entry
        previous = self._previous
        if previous is not None:
            entry = previous._tables[mode].get(key)
            if entry is not None and id(entry[2]) in self._kept:
                self._file(mode, key, entry, key[: z - 11])
                return entry
            entry = previous._exact[mode].get(question)
            if entry is not None and id(entry[2]) in self._kept:
                self._store(self._exact[mode], question, entry)
                return entry
        labels = _labels(wire, z)
        if labels is None or wire[z + 3 : z + 5] != _CLASS_IN:
            return None
        qtype = (wire[z + 1] << 8) | wire[z + 2]
        if qtype in _NOT_HERE:
            return None
        qwire = key[: z - 11]  # the lowercased name
        starts = list(itertools.accumulate((len(label) + 1 for label in labels), initial=0))
        zone, origin_start = self._zone_for(qwire, starts, qtype)
        if zone is None or starts[0] != origin_start:
            known = self._class_entry(wire, tcp, mode, key, e, zone, qwire, starts,
                                      origin_start, labels, qtype)
            if known is not None:
                return known
        return self._new_entry(wire, tcp, mode, key, e, zone)

    def _zone_for(self, qwire: bytes, starts: list[int], qtype: int) -> tuple[Zone | None, int]:
        """ZoneSet.find on wire names: the closest enclosing zone (for DS, the parent side)."""
        origins = self._origins
        for i, start in enumerate(starts):
            zone = origins.get(qwire[start:])
            if zone is not None:
                if i == 0 and qtype == _DS and len(starts) > 1:
                    for parent_start in starts[1:]:
                        parent = origins.get(qwire[parent_start:])
                        if parent is not None:
                            return parent, parent_start
                return zone, start
        return None, -1

    def _new_entry(self, wire: bytes, tcp: bool, mode: int, key: bytes, e: int,
                   zone: Zone | None):
        """Run the reference path for this question and file its template."""
        entry = self._compute(wire, tcp, mode, key, e, zone)
        if entry is None:
            return None
        if self._case_dependent(entry, e):
            self._store(self._exact[mode], wire[12:e], entry)
        else:
            self._file(mode, key, entry, key[: e - 16])
        return entry

    def _compute(self, wire: bytes, tcp: bool, mode: int, key: bytes, e: int,
                 zone: Zone | None):
        """A new entry (not filed) for this question in this mode."""
        if tcp:
            return self._template(self._reference(wire, True), wire, e, zone)
        is_any = (wire[e - 4] << 8 | wire[e - 3]) == _ANY
        if is_any:
            if mode == UDP:
                return self._template(self._reference(wire, False), wire, e, zone)
            return (None, _Sized(None, _NO_LIMIT, False), self._zone_token.get(id(zone)),
                    _VOLATILE)
        # Not ANY: the complete UDP reply is the TCP one (same EDNS); the size limit decides.
        full = self._tables[mode + 3].get(key) or self._find(
            wire, True, mode + 3, key, e - 5, e)
        if full is None:
            return None
        full_len = e + len(full[1])
        if full_len <= core.MIN_UDP:
            return full
        exact = self._case_dependent(full, e)
        if mode == UDP:  # no EDNS: the limit is always 512
            return self._template(self._reference(wire, False), wire, e, zone)
        return (None, _Sized(full, full_len, exact), self._zone_token.get(id(zone)), _VOLATILE)

    def _sized(self, wire: bytes, e: int, sized: _Sized):
        """The template for this query's UDP size limit."""
        payload = (wire[e + 3] << 8) | wire[e + 4]
        limit = min(max(payload, core.MIN_UDP), core.OUR_UDP_PAYLOAD)
        if limit >= sized.full_len:
            return sized.full
        entry = sized.variants.get(limit)
        if entry is None:
            entry = self._template(self._reference(wire, False), wire, e, None)
            if entry is None:
                return None
            if not sized.exact and self._case_dependent(entry, e):
                return entry  # ANY after a DNAME: right for this query only, not filed
            sized.variants[limit] = entry
        return entry

    def _class_entry(self, wire: bytes, tcp: bool, mode: int, key: bytes, e: int,
                     zone: Zone | None, qwire: bytes, starts: list[int], origin_start: int,
                     labels: list[bytes], qtype: int):
        """The entry for a name that does not exist in its zone, by its class (see _Class)."""
        if zone is None:
            ce_start = len(qwire) - 1  # nothing is written but the question: every q alike
        else:
            names = zone.names
            ce_start = origin_start
            for i, start in enumerate(starts):
                if start >= origin_start:
                    break
                if dns.name.Name((*labels[i:], b"")) in names:
                    ce_start = start
                    break
            if ce_start == 0:
                return None  # the name exists: its own entry
        zone_key = b"" if zone is None else qwire[origin_start:]
        class_key = (qwire[ce_start:], qtype, mode)
        classes = self._classes.get(zone_key)
        if classes is None:
            classes = self._classes[zone_key] = {}
        cls = classes.get(class_key)
        if cls is None:
            previous = self._previous
            if previous is not None and id(self._zone_token.get(id(zone))) in self._kept:
                cls = previous._classes.get(zone_key, {}).get(class_key)
            if cls is None:
                cls = self._new_class(zone, labels, qtype, mode)
                if cls is None:
                    return None  # q is in its own S: not a class maker, answered alone
            self._store(classes, class_key, cls)
        if cls is _UNSTRUCTURED:
            return None
        names = cls.names
        m = b""
        for start in starts:
            if start >= ce_start:
                break
            if qwire[start:] in names:
                m = qwire[start:]
                break
        tkey = (len(qwire), m)
        entry = cls.templates.get(tkey)
        if entry is not None and entry[3] is not _VOLATILE and entry[3][1] is not None \
                and entry[3][1] is not _HARD:  # (after_update drops those of its zone)
            fresh = self._fresh(entry)
            if fresh is None:
                del cls.templates[tkey]
            elif fresh is not entry:
                cls.templates[tkey] = fresh
            entry = fresh
        if entry is None:
            entry = self._compute(wire, tcp, mode, key, e, zone)
            if entry is None:
                return None
            if self._case_dependent(entry, e):  # cannot happen without a DNAME; never filed
                return entry
            cls.templates[tkey] = entry
        self._file(mode, key, entry, qwire)
        return entry

    def _new_class(self, zone: Zone | None, labels: list[bytes], qtype: int,
                   mode: int) -> _Class | None:
        if zone is None:
            return _Class(frozenset())
        qname = dns.name.Name((*labels, b""))
        result = lookup(zone, qname, qtype, any_in_full=mode >= TCP,
                        dnssec_ok=mode in (UDP_EDNS_DO, TCP_EDNS_DO), served=self.zones)
        written: set[bytes] = set()
        for rrset in (*result.answer, *result.authority, *result.additional):
            if rrset.rdtype == _DNAME:
                return _UNSTRUCTURED
            if rrset.name != qname:
                n = rrset.name
                while len(n) > 1:
                    written.add(n.canonicalize().to_wire())
                    n = n.parent()
            compress: dict = {}
            out = io.BytesIO()
            for rdata in rrset:
                rdata.to_wire(out, compress, None)
            written.update(n.canonicalize().to_wire() for n in compress)
        if qname.canonicalize().to_wire() in written:
            return None
        return _Class(frozenset(written))

    # -- templates -------------------------------------------------------------------------

    def _reference(self, wire: bytes, tcp: bool) -> bytes | None:
        reply = core.handle(self._state, wire, core.Request(tcp=tcp))
        return reply if isinstance(reply, bytes) else None

    def _template(self, reply: bytes | None, wire: bytes, e: int,
                  zone: Zone | None) -> tuple | None:
        """(headers by RD and CD, the bytes after the question, the zone it came from)."""
        if reply is None or reply[12:e] != wire[12:e] or reply[:2] != wire[:2]:
            return None
        fixed = bytes((reply[2] & 0xFE, reply[3] & 0xEF)) + reply[4:12]  # RD, CD cleared
        heads = self._heads.get(fixed)
        if heads is None:
            heads = tuple(
                bytes((fixed[0] | (i & 1), fixed[1] | ((i & 2) << 3))) + fixed[2:]
                for i in range(4)
            )
            if len(self._heads) < 4096:
                self._heads[fixed] = heads
        tail = reply[e:]
        return (heads, tail, self._zone_token.get(id(zone)),
                self._info(reply[:12] + wire[12:e] + tail, e))

    def _info(self, msg: bytes, e: int) -> tuple:
        """(names the reply depends on, its SOA) from a reply (header, question, tail): every
        owner name and every name in RDATA with their suffixes below a served origin, as
        lowercased wire names; the SOA as None, _HARD, or (origin, TTL offset, rdata end,
        in answer, the zone's SOA values) with offsets into the tail."""
        names: set[bytes] = set()
        soa = None
        counts = (msg[6] << 8 | msg[7], msg[8] << 8 | msg[9], msg[10] << 8 | msg[11])
        p = e
        for section, count in enumerate(counts):
            for _ in range(count):
                owner, used = dns.name.from_wire(msg, p)
                p += used
                rdtype = msg[p] << 8 | msg[p + 1]
                rdclass = msg[p + 2] << 8 | msg[p + 3]
                rdlen = msg[p + 8] << 8 | msg[p + 9]
                rd_start = p + 10
                if rdtype == _OPT:
                    p = rd_start + rdlen
                    continue
                self._add_name(names, owner)
                rdata = dns.rdata.from_wire(rdclass, rdtype, msg, rd_start, rdlen)
                for cls in type(rdata).__mro__:
                    for slot in getattr(cls, "__slots__", ()):
                        value = getattr(rdata, slot, None)
                        if isinstance(value, dns.name.Name):
                            self._add_name(names, value)
                        elif isinstance(value, (tuple, list)):
                            for v in value:
                                if isinstance(v, dns.name.Name):
                                    self._add_name(names, v)
                if rdtype == _SOA:
                    soa = self._soa_info(soa, owner, rdata, msg, p, rd_start + rdlen, e, section)
                p = rd_start + rdlen
        return tuple(names), soa

    def _soa_info(self, soa, owner: dns.name.Name, rdata, msg: bytes, p: int, end: int, e: int,
                  section: int):
        if soa is not None or section == 2:
            return _HARD
        origin = owner.canonicalize().to_wire()
        zone = self._origins.get(origin)
        if zone is None or zone.signed:
            return _HARD
        values = self._soa_values(origin, zone)
        ttl = int.from_bytes(msg[p + 4 : p + 8], "big")
        expected = values[2] if section == 0 else min(values[2], values[7])
        if ttl != expected or (rdata.mname.to_text(), rdata.rname.to_text()) != values[:2] \
                or struct.unpack("!5I", msg[end - 20 : end]) != values[3:]:
            return _HARD
        return (origin, p + 4 - e, end - e, section == 0, values)

    def _soa_values(self, origin: bytes, zone: Zone) -> tuple:
        values = self._soa_now.get(origin)
        if values is None:
            soa = zone.soa
            rd = soa[0]
            values = (rd.mname.to_text(), rd.rname.to_text(), soa.ttl, rd.serial, rd.refresh,
                      rd.retry, rd.expire, rd.minimum)
            self._soa_now[origin] = values
        return values

    def _add_name(self, names: set[bytes], name: dns.name.Name) -> None:
        names.update(self._below_origin(name.canonicalize().to_wire()))

    def _below_origin(self, wire: bytes) -> list[bytes]:
        """The suffixes of a lowercased wire name strictly below the closest served origin
        (none when no served zone holds it: such names never change without a reload)."""
        out = []
        p = 0
        origins = self._origins
        while wire[p]:
            suffix = wire[p:]
            if suffix in origins:
                return out
            out.append(suffix)
            p += wire[p] + 1
        return []

    def _file(self, mode: int, key: bytes, entry: tuple, qwire: bytes) -> None:
        """File an entry under its lowercased question: negative ones (with an SOA) apart, the
        others in the hot table, indexed by the names they depend on (see after_update)."""
        names, soa = entry[3]
        if soa is _HARD or entry[3] is _VOLATILE:
            self._store(self._tables[mode], key, entry)
            self._volatile.append((mode, key))
            return
        table = self._tables[mode] if soa is None else self._negative[mode]
        self._store(table, key, entry)
        index = self._index
        slot = (table, key)
        deps = self._below_origin(qwire)
        deps.extend(names)
        for name in deps:
            slots = index.get(name)
            if slots is None:
                index[name] = [slot]
            else:
                slots.append(slot)
        self._slots += len(deps)

    def _fresh(self, entry: tuple) -> tuple | None:
        """A negative entry with the SOA its zone has now (patched), or None (to drop)."""
        names, soa = entry[3]
        origin, ttl_off, rd_end, in_answer, values = soa
        zone = self._origins.get(origin)
        if zone is None:
            return None
        now = self._soa_values(origin, zone)
        if now == values:
            return entry
        if now[:2] != values[:2]:
            return None
        ttl = now[2] if in_answer else min(now[2], now[7])
        tail = entry[1]
        tail = (tail[:ttl_off] + ttl.to_bytes(4, "big") + tail[ttl_off + 4 : rd_end - 20]
                + struct.pack("!5I", *now[3:]) + tail[rd_end:])
        return (entry[0], tail, entry[2], (names, (origin, ttl_off, rd_end, in_answer, now)))

    # -- updates ---------------------------------------------------------------------------

    def after_update(self, zones: ZoneSet, origin: dns.name.Name, old: Zone, new: Zone,
                     changed) -> FastPath:
        """The FastPath for `zones`, which differ from ours by an update of one zone (`old` ->
        `new`, `changed`: the owner names whose nodes differ, or None if unknown). Takes over
        this FastPath's tables (this one must not be used any more) and drops exactly the
        entries the change can affect; a structural change drops the zone's entries, as a new
        FastPath(zones, previous=self) does."""
        if changed is None or self._slots > 16 * _MODES * self.max_entries \
                or len(self._volatile) > 4 * _MODES * self.max_entries \
                or self._structural(zones, origin, old, new, changed):
            return FastPath(zones, self.max_entries, previous=self)
        fast = object.__new__(FastPath)
        fast.zones = zones
        fast.max_entries = self.max_entries
        fast._state = core.ServerState(zones)
        fast._tables, fast._exact, fast._negative = self._tables, self._exact, self._negative
        fast._heads = self._heads
        fast._origins = {o.canonicalize().to_wire(): z for o, z in zones.items()}
        origin_wire = origin.canonicalize().to_wire()
        fast._tokens = self._tokens
        fast._zone_token = {id(z): self._tokens[o] for o, z in fast._origins.items()}
        fast._index, fast._slots = self._index, self._slots
        fast._soa_now = {}
        # Entries inherited lazily from a reload's previous FastPath are not indexed: dropped.
        fast._previous, fast._kept = None, set()
        # Classes (names that do not exist) depend on their closest encloser, the names their
        # reply writes (S) and the SOA: a class goes when a changed name is its encloser or in
        # S; the apex here changed in its SOA only, which their templates get patched for.
        classes = self._classes.get(origin_wire)
        if classes:
            wires = {n.canonicalize().to_wire() for n in changed} - {origin_wire}
            if wires:
                for class_key in [k for k, c in classes.items() if k[0] in wires
                                  or not c.names.isdisjoint(wires)]:
                    del classes[class_key]
            for cls in classes.values():  # templates whose SOA cannot be patched
                if cls is not _UNSTRUCTURED:
                    for tkey in [k for k, t in cls.templates.items()
                                 if t[3] is _VOLATILE or t[3][1] is _HARD]:
                        del cls.templates[tkey]
        fast._classes = self._classes
        for table in self._exact:  # case-dependent replies (DNAME): simply dropped
            table.clear()
        tables = self._tables
        for mode, key in self._volatile:
            tables[mode].pop(key, None)
        fast._volatile = []
        index = self._index
        for name in changed:
            slots = index.pop(name.canonicalize().to_wire(), ())
            fast._slots -= len(slots)
            for table, key in slots:
                table.pop(key, None)
        return fast

    def _structural(self, zones: ZoneSet, origin: dns.name.Name, old: Zone, new: Zone,
                    changed) -> bool:
        """Can the change affect replies beyond those that write a changed name (or the SOA)?"""
        if zones.keys() != self.zones.keys() or self.zones.get(origin) is not old \
                or zones.get(origin) is not new or old.signed or new.signed:
            return True
        for name in changed:
            old_node, new_node = old.nodes.get(name), new.nodes.get(name)
            if name == origin:
                if not old_node or not new_node or old_node.keys() != new_node.keys():
                    return True
                for k, rrset in old_node.items():
                    other = new_node[k]
                    if k[0] == _SOA:
                        a, b = rrset[0], other[0]
                        if len(rrset) != 1 or len(other) != 1 \
                                or a.mname.to_text() != b.mname.to_text() \
                                or a.rname.to_text() != b.rname.to_text():
                            return True
                    elif rrset != other or rrset.ttl != other.ttl:
                        return True
                continue
            if not name.is_subdomain(origin) or name.labels[0] == b"*" \
                    or name.canonicalize().to_wire() in self._origins:
                return True
            for node in (old_node, new_node):
                if node and any(k[0] in _STRUCTURAL_TYPES for k in node):
                    return True
            if bool(old_node) != bool(new_node):
                parent = name.parent()
                if not old.nodes.get(parent) or not new.nodes.get(parent):
                    return True
        return False

    @staticmethod
    def _case_dependent(entry: tuple, e: int) -> bool:
        heads, tail = entry[0], entry[1]
        if heads is None:
            return tail.exact
        return _answer_has_dname(b"\0\0" + heads[0] + bytes(e - 12) + tail, e)

    def _store(self, table: dict, key, value) -> None:
        if len(table) >= self.max_entries:
            keep = list(itertools.islice(table.items(), len(table) // 2, None))
            table.clear()
            table.update(keep)
        table[key] = value


def changed_names(old: Zone, new: Zone, diff=None) -> list[dns.name.Name] | None:
    """The owner names whose nodes differ between two versions of a zone (from the diff of
    the update, or CompactZone.changed_names), or None when unknown."""
    if diff is not None:
        return [r[0] for r in (*diff.deleted, *diff.added)] + [new.origin]
    if old is new:
        return []
    compare = getattr(new, "changed_names", None)
    if compare is not None and type(old) is type(new):
        return compare(old)
    return None
