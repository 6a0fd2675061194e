"""Hostile and malformed packets through `core.handle`: never an exception, always a sane reply.

Every packet is generated deterministically (a `random.Random` seeded per category). For each:
`handle` must not raise; it returns None only for a packet too short for a header or with QR
set, otherwise a reply whose header parses, with the query's id and opcode, QR set, and rcode
FORMERR -- unless the packet, after mutation, happens to parse as a message (bit flips, random
bytes), in which case any well-formed reply will do.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from gitdns.core import Request, handle
from gitdns.store import ZoneSet
from gitdns.zonefile import parse_zone

ZONE = """\
$TTL 3600
@ SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
@ NS ns1
@ MX 10 mail
ns1 A 192.0.2.1
mail A 192.0.2.25
www A 192.0.2.80
www AAAA 2001:db8::80
*.wild TXT "wild"
sub NS ns.sub
ns.sub A 192.0.2.53
"""
NAMES = [
    "www.example.test.",
    "example.test.",
    "mail.example.test.",
    "nope.example.test.",
    "x.wild.example.test.",
    "host.sub.example.test.",
    "www.example.net.",
]

FORMERR = dns.rcode.FORMERR
NONE, FORM, ANY = "none", "formerr", "any"  # what a packet must get
Packet = tuple[bytes, str]


@pytest.fixture(scope="module")
def zones() -> ZoneSet:
    zone, _ = parse_zone(ZONE, "example.test.", "example.test")
    return ZoneSet({zone.origin: zone})


# --- building blocks -----------------------------------------------------------------------------


def header(
    qid: int, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100
) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def name_wire(name: str) -> bytes:
    return dns.name.from_text(name).to_wire()


def question(name: str, qtype: int = 1, qclass: int = 1) -> bytes:
    return name_wire(name) + struct.pack("!HH", qtype, qclass)


def opt(payload: int = 1232, ttl: int = 0, rdata: bytes = b"") -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, payload, ttl, len(rdata)) + rdata


def valid_query(rng: random.Random) -> bytes:
    qid = rng.randrange(1 << 16)
    qname = rng.choice(NAMES)
    qtype = rng.choice([1, 2, 6, 15, 16, 28, 33, 255])
    flags = rng.choice([0x0000, 0x0100])
    if rng.random() < 0.5:
        return (
            header(qid, ar=1, flags=flags)
            + question(qname, qtype)
            + opt(rng.choice([512, 1232, 4096]))
        )
    return header(qid, flags=flags) + question(qname, qtype)


def rng_for(category: str) -> random.Random:
    return random.Random(zlib.crc32(category.encode()))


def rand_id(rng: random.Random) -> int:
    return rng.randrange(1 << 16)


# --- the categories ----------------------------------------------------------------------------


def truncated_headers(rng: random.Random) -> Iterator[Packet]:
    for _ in range(6):
        q = valid_query(rng)
        for length in range(12):
            yield q[:length], NONE


def truncated_questions(rng: random.Random) -> Iterator[Packet]:
    for _ in range(8):
        q = valid_query(rng)
        qd_end = 12 + len(name_wire(NAMES[0]))  # at least cut inside the name or type/class
        for length in range(12 + 1, min(len(q), qd_end + 4)):
            packet = q[:length]
            # A cut right after a complete question of a query without OPT is a legal query.
            try:
                dns.message.from_wire(packet)
            except Exception:
                yield packet, FORM


def pointer_loops(rng: random.Random) -> Iterator[Packet]:
    tail = struct.pack("!HH", 1, 1)
    for _ in range(100):
        qid = rand_id(rng)
        kind = rng.randrange(4)
        if kind == 0:  # the name is a pointer to itself
            body = b"\xc0\x0c" + tail
        elif kind == 1:  # labels, then a pointer back to the start of the name
            labels = b"".join(bytes([k]) + b"a" * k for k in (rng.randint(1, 10) for _ in range(3)))
            body = labels + b"\xc0\x0c" + tail
        elif kind == 2:  # two pointers pointing at each other
            body = b"\xc0\x0e\xc0\x0c" + tail
        else:  # a pointer forward to a pointer that leads back
            body = b"\x01a\xc0\x10\xc0\x0c" + tail
        yield header(qid) + body, FORM


def pointers_past_end(rng: random.Random) -> Iterator[Packet]:
    for _ in range(100):
        qid = rand_id(rng)
        prefix = rng.choice([b"", b"\x03www", b"\x03www\x07example"])
        body_len = 12 + len(prefix) + 2 + 4
        target = rng.randint(body_len, 0x3FFF)
        body = prefix + struct.pack("!H", 0xC000 | target) + struct.pack("!HH", 1, 1)
        yield header(qid) + body, FORM


def bad_label_lengths(rng: random.Random) -> Iterator[Packet]:
    for _ in range(100):
        qid = rand_id(rng)
        # 64..127 and 128..191 are not label lengths (extended/reserved label types)
        length = (
            rng.choice([64, 65, 0x7F, 0x80, 0xBF]) if rng.random() < 0.5 else rng.randint(64, 191)
        )
        label = bytes([length]) + b"x" * min(length, 70)
        body = rng.choice([b"", b"\x03www"]) + label + b"\x04test\x00" + struct.pack("!HH", 1, 1)
        yield header(qid) + body, FORM


def long_names(rng: random.Random) -> Iterator[Packet]:
    for _ in range(80):
        qid = rand_id(rng)
        kind = rng.randrange(3)
        if kind == 0:  # 63-octet labels past 255
            labels = [b"a" * 63] * rng.randint(5, 8)
        elif kind == 1:  # many one-octet labels past 255
            labels = [b"b"] * rng.randint(128, 200)
        else:  # exactly 256 octets on the wire
            labels = [b"c" * 63] * 3 + [b"d" * 62]
            labels += [b"example", b"test"]
            while sum(len(x) + 1 for x in labels) + 1 < 256:
                labels.insert(0, b"e")
        wire_name = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
        assert len(wire_name) > 255
        yield header(qid) + wire_name + struct.pack("!HH", 1, 1), FORM


def ten_questions(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        qs = b"".join(question(rng.choice(NAMES), rng.choice([1, 28, 15])) for _ in range(10))
        edns = rng.random() < 0.5
        yield header(rand_id(rng), qd=10, ar=int(edns)) + qs + (opt() if edns else b""), FORM


def zero_questions(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        edns = rng.random() < 0.5
        yield header(rand_id(rng), qd=0, ar=int(edns)) + (opt() if edns else b""), FORM


def wrong_class(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        qclass = rng.choice([0, 0xFEFE])
        edns = rng.random() < 0.5
        q = question(rng.choice(NAMES), rng.choice([1, 28, 6, 255]), qclass)
        yield header(rand_id(rng), ar=int(edns)) + q + (opt() if edns else b""), FORM


def garbage(rng: random.Random) -> Iterator[Packet]:
    for i in range(150):
        data = bytearray(rng.randbytes(rng.randint(12, 600)))
        if i % 2:
            data[2] &= 0x07  # QR clear, opcode QUERY: it must be looked at
        yield bytes(data), ANY


def huge_counts(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        counts = [rng.choice([0, 1, 2, 0x7FFF, 0xFFFF, rng.randrange(1 << 16)]) for _ in range(4)]
        if not any(counts):
            counts[0] = 0xFFFF
        tail = rng.choice([b"", question("www.example.test.")])
        if tail and counts[0] == 1 and not any(counts[1:]):
            counts[1] = 0xFFFF
        yield header(rand_id(rng), *counts) + tail, FORM


def opt_in_answer(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        q = question(rng.choice(NAMES))
        if rng.random() < 0.5:
            yield header(rand_id(rng), an=1) + q + opt(), FORM
        else:
            yield header(rand_id(rng), ns=1) + q + opt(), FORM


def two_opts(rng: random.Random) -> Iterator[Packet]:
    for _ in range(60):
        q = question(rng.choice(NAMES))
        opts = opt(rng.choice([512, 1232, 4096])) + opt(rng.choice([512, 1232]), ttl=0x8000)
        yield header(rand_id(rng), ar=2) + q + opts, FORM


def bit_flips(rng: random.Random) -> Iterator[Packet]:
    for _ in range(250):
        data = bytearray(valid_query(rng))
        for _ in range(rng.randint(1, 3)):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        yield bytes(data), ANY


CATEGORIES: dict[str, Callable[[random.Random], Iterator[Packet]]] = {
    "truncated-headers": truncated_headers,
    "truncated-questions": truncated_questions,
    "pointer-loops": pointer_loops,
    "pointers-past-end": pointers_past_end,
    "labels-of-64-and-more": bad_label_lengths,
    "names-longer-than-255": long_names,
    "ten-questions": ten_questions,
    "zero-questions": zero_questions,
    "class-0-and-0xFEFE": wrong_class,
    "garbage": garbage,
    "huge-counts": huge_counts,
    "opt-in-answer-or-authority": opt_in_answer,
    "two-opts": two_opts,
    "bit-flips": bit_flips,
}


def packets(category: str) -> list[Packet]:
    return list(CATEGORIES[category](rng_for(category)))


# --- the checks --------------------------------------------------------------------------------


def parses(wire: bytes) -> bool:
    try:
        dns.message.from_wire(wire)
    except Exception:
        return False
    return True


def check(zones: ZoneSet, wire: bytes, expect: str, tcp: bool) -> None:
    reply = handle(zones, wire, Request(tcp=tcp))  # must not raise
    if len(wire) < 12 or wire[2] & 0x80:
        assert reply is None, "no reply to a runt or to a response"
        return
    assert expect != NONE
    assert reply is not None, f"no reply to {wire.hex()}"
    assert len(reply) >= 12
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    qflags = struct.unpack("!H", wire[2:4])[0]
    assert qid == struct.unpack("!H", wire[:2])[0]
    assert flags & dns.flags.QR
    assert (flags >> 11) & 0xF == (qflags >> 11) & 0xF, "opcode copied"
    assert qd <= 1
    if not tcp:
        assert len(reply) <= 1232
    msg = dns.message.from_wire(reply)  # the whole reply is well-formed
    if expect == FORM or not parses(wire):
        assert msg.rcode() == FORMERR, f"{wire.hex()} -> {dns.rcode.to_text(msg.rcode())}"
        assert an == 0 and ns == 0


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_malformed_category(zones: ZoneSet, category: str) -> None:
    batch = packets(category)
    assert len(batch) >= 50
    for i, (wire, expect) in enumerate(batch):
        check(zones, wire, expect, tcp=bool(i % 3 == 0))


def test_generation_is_deterministic() -> None:
    for category in CATEGORIES:
        assert packets(category) == packets(category)


def test_at_least_1000_packets_then_a_normal_query_works(zones: ZoneSet) -> None:
    total = 0
    for category in CATEGORIES:
        for i, (wire, expect) in enumerate(packets(category)):
            check(zones, wire, expect, tcp=bool(i % 2))
            total += 1
    assert total >= 1000
    query = dns.message.make_query("www.example.test.", "A", use_edns=0)
    reply = handle(zones, query.to_wire(), Request())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == query.id
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA
    assert [rd.to_text() for rd in msg.answer[0]] == ["192.0.2.80"]
    assert msg.answer[0].rdtype == dns.rdatatype.A


def test_formerr_header_reply_echoes_id_opcode_and_rd(zones: ZoneSet) -> None:
    # A packet that does not parse: the reply is built from the header alone.
    wire = header(0xBEEF, flags=0x0100) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    reply = handle(zones, wire, Request())
    assert reply is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert qid == 0xBEEF
    assert flags & dns.flags.QR and flags & dns.flags.RD
    assert flags & 0xF == FORMERR
    assert (an, ns) == (0, 0)
    assert dns.message.from_wire(reply).rcode() == FORMERR
