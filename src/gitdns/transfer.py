"""Outbound zone transfers, AXFR (RFC 5936) and IXFR (RFC 1995), as a stream of wire messages.

Rules this module keeps:
- Every message of a transfer has the query's ID, QR and AA set, at most `max_size` bytes with
  its OPT and TSIG; the question is in the first message only, as BIND and Knot do
  (RFC 5936 2.2.1 allows it in all). No sockets and no clock: the time to sign with is `now`.
- A signed query gets every message signed with its key, the first over the request MAC and the
  rest chained to the previous MAC (RFC 8945 5.3.1), as BIND does.
- IXFR over UDP is the whole reply in one message, or else only the current SOA, which tells the
  client to retry over TCP (RFC 1995 section 2).
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Callable, Iterable, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.OPT
import dns.rdtypes.ANY.TSIG
import dns.renderer
import dns.rrset
import dns.tsig

from gitdns.compactzone import CompactNodes, CompactZone, blob_owner, records_start
from gitdns.diff import Record, ZoneDiff, condense
from gitdns.serial import serial_gt
from gitdns.zone import Zone

#: The TSIG time fudge we sign with (RFC 8945 10 recommends 300 seconds).
TSIG_FUDGE = 300
#: The EDNS payload size we advertise; the same as the query path's (core.OUR_UDP_PAYLOAD).
OUR_UDP_PAYLOAD = 1232
MIN_MESSAGE = 512
MAX_MESSAGE = 65535

Clock = float | Callable[[], float]


class BadIXFRQuery(dns.exception.FormError, ValueError):
    """An IXFR query without exactly one SOA record of the zone in its authority section.

    Also a ValueError, so callers that catch ValueError for bad input answer FORMERR too."""


def client_serial(query: dns.message.Message) -> int | None:
    """The serial the client has, from the SOA in an IXFR query's authority section.

    None for a query that is not an IXFR (an AXFR names no serial). A malformed IXFR query raises
    BadIXFRQuery, which the caller answers with FORMERR (RFC 1995 section 3 requires the SOA).
    """
    if len(query.question) != 1:
        raise BadIXFRQuery("a transfer query must have exactly one question")
    question = query.question[0]
    if question.rdtype != dns.rdatatype.IXFR:
        return None
    soa = query.authority[0] if len(query.authority) == 1 else None
    if soa is None or soa.rdtype != dns.rdatatype.SOA or len(soa) != 1:
        raise BadIXFRQuery("an IXFR query needs exactly one SOA record in its authority section")
    if soa.name != question.name:
        raise BadIXFRQuery(
            f"the SOA in the IXFR query is for {soa.name}, not for the zone {question.name}"
        )
    return soa[0].serial


class _CaseSensitiveCompression(dict):
    """A compression table that points only at names spelt the same (case included).

    dnspython's table is keyed by Name, which ignores case: `ftp CNAME www` after `alias CNAME
    WWW` would travel as `WWW`, and every secondary would store the other spelling. Zone data
    keeps its case in a transfer (RFC 4343 4.1), as BIND's transfers do.
    """

    def get(self, name, default=None):
        return super().get(name.labels, default)

    def __setitem__(self, name, offset) -> None:
        super().__setitem__(name.labels if isinstance(name, dns.name.Name) else name, offset)


def axfr_messages(
    zone: Zone,
    query: dns.message.Message,
    *,
    max_size: int = MAX_MESSAGE,
    now: Clock | None = None,
) -> Iterator[bytes]:
    """The AXFR reply: SOA, every other RRset, SOA, in as many messages as needed.

    `now` (seconds since the epoch, or a function returning them, read once per message so a
    slow transfer does not outlive the TSIG fudge) is required when the query was signed. The
    checks run at the call, not at the first `next()`, so a caller can still answer an error.
    """
    stream = _Stream(query, max_size, now)
    if isinstance(zone, CompactZone):
        return _CompactWriter(stream, zone).messages()
    return stream.messages(_full(zone))


def ixfr_messages(
    zone: Zone,
    diffs: list[ZoneDiff] | None,
    query: dns.message.Message,
    *,
    tcp: bool,
    max_size: int = MAX_MESSAGE,
    udp_size: int = MIN_MESSAGE,
    now: Clock | None = None,
    condensed: bool = True,
) -> Iterator[bytes]:
    """The IXFR reply for a client at `client_serial(query)`.

    `diffs` is the unbroken chain of differences from the client's serial to `zone.serial`
    (oldest first), or None when it is unknown: the reply is then a full transfer in IXFR form
    (RFC 1995 section 4). A client at or beyond the current serial gets the current SOA alone.
    Over UDP (`tcp=False`) the reply is one message of at most `udp_size` bytes; a reply that
    does not fit becomes the current SOA alone, the RFC's way of saying "ask over TCP".
    With `condensed` (the default) several differences go as one when that is smaller
    (RFC 1995 section 5); False sends every step as it was.
    """
    serial = client_serial(query)
    if serial is None:
        raise BadIXFRQuery("not an IXFR query")
    current: list[dns.rrset.RRset] = [zone.soa]
    rrsets: Iterable[dns.rrset.RRset]
    if not serial_gt(zone.serial, serial):
        rrsets = current
    elif diffs is None:
        if tcp and isinstance(zone, CompactZone):
            return _CompactWriter(_Stream(query, max_size, now), zone).messages()
        rrsets = _full(zone)
    else:
        rrsets = _incremental(zone, _checked(zone, serial, diffs, condensed))
    if tcp:
        return _Stream(query, max_size, now).messages(rrsets)
    stream = _Stream(query, udp_size, now)
    wire = stream.single(rrsets)
    if wire is None:
        wire = stream.single(current)
        assert wire is not None  # an SOA always fits 512 bytes
    return iter((wire,))


# -- what goes into a transfer -----------------------------------------------------------------


def _full(zone: Zone) -> Iterator[dns.rrset.RRset]:
    """AXFR order: the SOA, everything else, the SOA again (RFC 5936 2.2)."""
    yield from zone.rrsets()
    yield zone.soa


def _checked(zone: Zone, serial: int, diffs: list[ZoneDiff], condensed: bool) -> list[ZoneDiff]:
    """The chain, checked (sent as it is, a broken chain would corrupt the client's zone), and
    condensed into one difference when asked and smaller.

    For two or more differences the condensed one always has fewer records: it carries two SOAs
    instead of two per step, and changes that cancel out (a record added, then removed) vanish.
    """
    if not diffs:
        raise ValueError(f"no differences from serial {serial} to {zone.serial}")
    if diffs[0].old_serial != serial:
        raise ValueError(f"the differences start at {diffs[0].old_serial}, not at {serial}")
    for older, newer in zip(diffs, diffs[1:], strict=False):
        if older.new_serial != newer.old_serial:
            raise ValueError(
                f"the differences are not a chain: {older.new_serial} then {newer.old_serial}"
            )
    if diffs[-1].new_serial != zone.serial:
        raise ValueError(f"the differences end at {diffs[-1].new_serial}, not at {zone.serial}")
    if not condensed or len(diffs) == 1:
        return diffs
    one = condense(diffs)
    return [one] if len(one) < sum(len(d) for d in diffs) else diffs


def _incremental(zone: Zone, diffs: list[ZoneDiff]) -> Iterator[dns.rrset.RRset]:
    """RFC 1995 section 4: current SOA, per difference (old SOA, deletions, new SOA, additions),
    current SOA."""
    yield zone.soa
    for diff in diffs:
        yield _record_rrset(diff.old_soa)
        yield from _grouped(diff.deleted)
        yield _record_rrset(diff.new_soa)
        yield from _grouped(diff.added)
    yield zone.soa


def _record_rrset(record: Record) -> dns.rrset.RRset:
    name, ttl, rd = record
    rrset = dns.rrset.RRset(name, rd.rdclass, rd.rdtype, rd.covers())
    rrset.add(rd, ttl)
    return rrset


def _grouped(records: Iterable[Record]) -> Iterable[dns.rrset.RRset]:
    """Records as RRsets, in order of first appearance: one owner name and type header per group
    in the message model, and a reader that sees whole RRsets. Records of one RRset with
    different TTLs (possible in a condensed difference) stay apart, as one RRset has one TTL."""
    groups: dict[tuple[dns.name.Name, int, int, int], dns.rrset.RRset] = {}
    for name, ttl, rd in records:
        key = (name, rd.rdtype, rd.covers(), ttl)
        rrset = groups.get(key)
        if rrset is None:
            rrset = groups[key] = dns.rrset.RRset(name, rd.rdclass, rd.rdtype, rd.covers())
        rrset.add(rd, ttl)
    return groups.values()


# -- messages on the wire ----------------------------------------------------------------------


class _Signer:
    """Signs the messages of one transfer in turn, each chained to the MAC before it."""

    def __init__(self, query: dns.message.Message, clock: Clock):
        key = query.keyring
        if isinstance(key, bytes) and query.keyname is not None and query.keyalgorithm:
            key = dns.tsig.Key(query.keyname, key, query.keyalgorithm)
        if not isinstance(key, dns.tsig.Key):
            raise ValueError("the query is signed but was not parsed with a keyring")
        self.key = key
        self.clock = clock
        self.request_mac = query.mac or b""
        self.template = dns.rdtypes.ANY.TSIG.TSIG(
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            key.algorithm,
            0,
            TSIG_FUDGE,
            b"",
            query.id,
            0,
            b"",
        )
        self.ctx: object | None = None
        self.owner = key.name.to_wire()  # in full: a TSIG owner is never compressed
        full_mac = self.template.replace(mac=b"\x00" * dns.tsig.mac_sizes[key.algorithm])
        self.size = len(self.owner) + 10 + len(full_mac.to_wire())

    def sign(self, wire: bytes) -> bytes:
        """`wire` with its TSIG record appended (RFC 8945 4.2; chained as in 5.3.1)."""
        now = self.clock() if callable(self.clock) else self.clock
        rdata, self.ctx = dns.tsig.sign(
            wire, self.key, self.template, int(now), self.request_mac, self.ctx, True
        )
        rd = rdata.to_wire()
        record = self.owner + struct.pack(
            "!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rd)
        )
        (arcount,) = struct.unpack_from("!H", wire, 10)
        return wire[:10] + struct.pack("!H", arcount + 1) + wire[12:] + record + rd


class _Stream:
    """The messages of one reply: header, question, OPT and TSIG handled once for all."""

    def __init__(self, query: dns.message.Message, max_size: int, now: Clock | None):
        if not MIN_MESSAGE <= max_size <= MAX_MESSAGE:
            raise ValueError(f"message size {max_size} is not within {MIN_MESSAGE}..{MAX_MESSAGE}")
        self.max_size = max_size
        self.id = query.id
        self.flags = dns.flags.QR | dns.flags.AA | (query.flags & dns.flags.RD)
        self.question = [(q.name, q.rdtype, q.rdclass) for q in query.question]
        self.opt: dns.rrset.RRset | None = None
        reserve = 0
        if query.edns >= 0:
            # RFC 6891 7: an EDNS query gets an OPT in the reply; we put one in every message.
            opt = dns.rdtypes.ANY.OPT.OPT(OUR_UDP_PAYLOAD, dns.rdatatype.OPT, ())
            self.opt = dns.rrset.from_rdata(dns.name.root, query.ednsflags & dns.flags.DO, opt)
            out = io.BytesIO()
            self.opt.to_wire(out)
            reserve += len(out.getvalue())
        self.signer: _Signer | None = None
        if query.had_tsig:
            if now is None:
                raise ValueError("the query is signed: the time to sign with (now) is needed")
            self.signer = _Signer(query, now)
            reserve += self.signer.size
        self.reserve = reserve

    def _renderer(self, first: bool) -> dns.renderer.Renderer:
        r = dns.renderer.Renderer(self.id, self.flags, self.max_size)
        r.compress = _CaseSensitiveCompression()
        r.reserve(self.reserve)
        if first:
            for name, rdtype, rdclass in self.question:
                r.add_question(name, rdtype, rdclass)
        return r

    def _finish(self, r: dns.renderer.Renderer) -> bytes:
        r.release_reserved()
        if self.opt is not None:
            r.add_rrset(dns.renderer.ADDITIONAL, self.opt)
        r.write_header()
        wire = r.get_wire()
        return self.signer.sign(wire) if self.signer is not None else wire

    def messages(self, rrsets: Iterable[dns.rrset.RRset]) -> Iterator[bytes]:
        """As few messages as the size allows; RRsets whole where they fit, an RRset larger than
        a message split record by record (the wire form is the same, RRsets are not framed)."""
        r = self._renderer(first=True)
        for rrset in rrsets:
            try:
                r.add_rrset(dns.renderer.ANSWER, rrset)
                continue
            except dns.exception.TooBig:
                pass
            if r.counts[dns.renderer.ANSWER]:
                yield self._finish(r)
                r = self._renderer(first=False)
                try:
                    r.add_rrset(dns.renderer.ANSWER, rrset)
                    continue
                except dns.exception.TooBig:
                    pass
            for rd in rrset:
                one = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
                one.add(rd, rrset.ttl)
                try:
                    r.add_rrset(dns.renderer.ANSWER, one)
                    continue
                except dns.exception.TooBig:
                    if not r.counts[dns.renderer.ANSWER]:
                        raise dns.exception.TooBig(
                            f"a record of {rrset.name} is larger than a {self.max_size}-byte "
                            "message"
                        ) from None
                yield self._finish(r)
                r = self._renderer(first=False)
                r.add_rrset(dns.renderer.ANSWER, one)
        yield self._finish(r)

    def single(self, rrsets: Iterable[dns.rrset.RRset]) -> bytes | None:
        """All of `rrsets` in one message, or None when they do not fit."""
        r = self._renderer(first=True)
        try:
            for rrset in rrsets:
                r.add_rrset(dns.renderer.ANSWER, rrset)
        except dns.exception.TooBig:
            return None
        return self._finish(r)


# -- AXFR of a CompactZone, from its bytes ---------------------------------------------------------

def _pointer(offset: int) -> bytes:
    return (0xC000 | offset).to_bytes(2, "big")


class _CompactWriter:
    """The AXFR of a CompactZone (SOA, every other RRset, SOA) written from its blobs.

    The same messages `_Stream.messages(_full(zone))` would give, up to compression: the records
    of a blob are already in wire form after their owner, so a node costs a few concatenations
    instead of a dnspython RRset, rdata objects and a Renderer per RRset. Owners are compressed
    against the zone's origin (written once per message, where it is spelt as `zone.origin`
    is) and a node's second and later records point to its first owner; rdata go as stored,
    uncompressed (always valid; RFC 3597 4 lets only well-known types be compressed anyway).
    A pointer reaches only the first 16 KiB of a message: later, owners go as labels plus a
    pointer to the origin. RRsets stay whole in one message where they fit; a node that does
    not fit where it falls goes RRset by RRset, and an RRset larger than a message record by
    record, as in `_Stream.messages`.
    """

    def __init__(self, stream: _Stream, zone: CompactZone):
        self.stream = stream
        self.zone = zone
        self.nodes: CompactNodes = zone.nodes  # type: ignore[assignment]
        self.origin_wire = zone.origin.to_wire()
        self.limit = stream.max_size - stream.reserve
        question = b"".join(
            name.to_wire() + struct.pack("!HH", rdtype, rdclass)
            for name, rdtype, rdclass in stream.question
        )
        self.first_head = bytes(12) + question
        # An origin spelt as in the question is pointed to there (the only name in the question).
        self.first_origin = (
            _pointer(12)
            if len(stream.question) >= 1 and stream.question[0][0].to_wire() == self.origin_wire
            else None
        )
        self.opt_wire = b""
        if stream.opt is not None:
            out = io.BytesIO()
            stream.opt.to_wire(out)
            self.opt_wire = out.getvalue()
        self.qdcount = len(stream.question)
        apex = self.nodes.raw(b"")
        if apex is None:
            raise ValueError(f"no apex node in {zone.origin}")
        start = records_start(apex)
        soa, rest = [], []
        for record in _records(apex, start):
            (soa if record[:2] == b"\x00\x06" else rest).append(record)
        self.apex = apex
        self.soa_blob = apex[:start] + b"".join(soa)
        self.apex_rest = apex[:start] + b"".join(rest) if rest else None

    def _finish(self, buf: bytearray, count: int) -> bytes:
        stream = self.stream
        struct.pack_into("!HHHHHH", buf, 0, stream.id, stream.flags, self.qdcount, count, 0,
                         1 if self.opt_wire else 0)
        self.qdcount = 0
        buf += self.opt_wire
        wire = bytes(buf)
        return stream.signer.sign(wire) if stream.signer is not None else wire

    def messages(self) -> Iterator[bytes]:
        limit = self.limit
        origin_wire = self.origin_wire
        apex, apex_rest = self.apex, self.apex_rest
        buf = bytearray(self.first_head)
        optr = self.first_origin  # a pointer to the origin in this message, or None
        count = 0
        soa = ((b"", self.soa_blob),)
        for key, blob in itertools.chain(soa, self.nodes.raw_items(), soa):
            if blob is apex:
                if apex_rest is None:
                    continue
                blob = apex_rest
            mark = len(buf)
            saved = optr
            if blob[0] == 0:
                start = 1
                if optr is None:
                    own = key + origin_wire
                    off = mark + len(key)
                    optr = _pointer(off) if off < 0x4000 else None
                else:
                    own = key + optr
            else:
                start = 2 + blob[1]
                own, optr = self._owner(key, blob, start, mark, optr)
            n = len(blob)
            end = start + 10 + (blob[start + 8] << 8 | blob[start + 9])
            buf += own
            if end == n:  # one record: the node's bytes as they are
                buf += blob[start:]
                added = 1
            else:
                ref = _pointer(mark) if mark < 0x4000 else own
                buf += blob[start:end]
                added = 1
                i = end
                while i < n:
                    j = i + 10 + (blob[i + 8] << 8 | blob[i + 9])
                    buf += ref
                    buf += blob[i:j]
                    i = j
                    added += 1
            if len(buf) <= limit:
                count += added
                continue
            del buf[mark:]
            state = yield from self._split(key, blob, start, buf, count, saved)
            buf, count, optr = state
        yield self._finish(buf, count)

    def _owner(self, key: bytes, blob: bytes, start: int, pos: int,
               optr: bytes | None) -> tuple[bytes, bytes | None]:
        """The owner of a node written at `pos`, and the origin pointer after it."""
        origin_wire = self.origin_wire
        if blob[0] == 0:
            if optr is None:
                off = pos + len(key)
                return key + origin_wire, _pointer(off) if off < 0x4000 else None
            return key + optr, optr
        spelt = blob[2:start]
        if spelt.endswith(origin_wire):  # label-aligned: the owner is inside the origin
            prefix = spelt[: len(spelt) - len(origin_wire)]
            if optr is not None:
                return prefix + optr, optr
            off = pos + len(prefix)
            return spelt, _pointer(off) if off < 0x4000 else None
        return spelt, optr

    def _split(self, key: bytes, blob: bytes, start: int, buf: bytearray, count: int,
               optr: bytes | None):
        """A node that does not fit where it falls, RRset by RRset and, for an RRset larger than
        a message, record by record (`_Stream.messages`' rules); yields the messages it fills
        and returns the state of the last one (buf, count, origin pointer)."""
        limit = self.limit
        own: bytes | None = None  # the owner as first written in this message
        ref = b""  # how later records of the node name it

        def render(records: list[bytes]):
            pos = len(buf)
            if own is None:
                first, new_optr = self._owner(key, blob, start, pos, optr)
                later = _pointer(pos) if pos < 0x4000 else first
                wire = b"".join([first, records[0], *[later + r for r in records[1:]]])
                return wire, first, later, new_optr
            return b"".join([ref + r for r in records]), own, ref, optr

        for rrset in _rrsets(blob, start):
            wire, o, r, p = render(rrset)
            if len(buf) + len(wire) > limit and count:
                yield self._finish(buf, count)
                buf, count, optr, own = bytearray(12), 0, None, None
                wire, o, r, p = render(rrset)
            if len(buf) + len(wire) <= limit:
                buf += wire
                count += len(rrset)
                own, ref, optr = o, r, p
                continue
            for record in rrset:
                while True:
                    wire, o, r, p = render([record])
                    if len(buf) + len(wire) <= limit:
                        buf += wire
                        count += 1
                        own, ref, optr = o, r, p
                        break
                    if not count:
                        owner = blob_owner(blob, key, self.zone.origin)
                        raise dns.exception.TooBig(
                            f"a record of {owner} is larger than a {self.stream.max_size}-byte "
                            "message"
                        )
                    yield self._finish(buf, count)
                    buf, count, optr, own = bytearray(12), 0, None, None
        return buf, count, optr


def _records(blob: bytes, start: int) -> list[bytes]:
    """The records of a blob, each as type, class, TTL, rdata length and rdata."""
    out = []
    i, n = start, len(blob)
    while i < n:
        j = i + 10 + (blob[i + 8] << 8 | blob[i + 9])
        out.append(blob[i:j])
        i = j
    return out


def _rrsets(blob: bytes, start: int) -> list[list[bytes]]:
    """The records of a blob grouped into its RRsets (consecutive, by type and covered type)."""
    groups: list[list[bytes]] = []
    last = None
    for record in _records(blob, start):
        # An RRSIG's RRset is also keyed by the type it covers (its rdata's first field).
        rrset_key = record[:2] + (record[10:12] if record[:2] == b"\x00\x2e" else b"")
        if rrset_key != last:
            last = rrset_key
            groups.append([])
        groups[-1].append(record)
    return groups
