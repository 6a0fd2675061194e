"""The fast path answers with the reference path's bytes, or not at all.

Every query goes to `FastPath.answer` and to `core.handle` (the reference) and the bytes are
compared: the corpus of tests/zones/ (the differential test's queries: every name with its types,
an absent type, ANY, children, empty non-terminals, wildcards, cuts, DNAME, out-of-zone) plus a
zone of edge cases, over UDP without EDNS, with EDNS 512, 600, 1000, 1232 and 4096 (DO on and
off) and TCP, each asked twice (once to fill the cache, once from it) in different letter case,
ids, RD and CD; random names below every name (NXDOMAIN, wildcards, referrals); bit flips of
queries against a warm cache; packets that are not plain queries. Plain queries must all be
answered here (the issue-3 mix: A, AAAA, NXDOMAIN, NODATA, CNAME, MX, referral, wildcard).

dnspython shuffles the records of an RRset when it renders (`Rdataset.to_wire(want_shuffle=True)`),
so the reference path's bytes are not a function of the query; the fixture below turns the
shuffle off, making them one, so they can be compared byte for byte. With the shuffle on, the
fast path still answers with one of the reference path's orders (last test).
"""

from __future__ import annotations

import collections
import random
import struct
import types
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataset
import dns.rdatatype
import dns.tsigkeyring
import pytest

from gitdns import core
from gitdns.fastpath import FastPath
from gitdns.store import ZoneSet
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone
from tests import test_core_malformed as malformed
from tests.interop.test_differential_bind import base_queries, load_corpus, mix_case

A, AAAA, NS, SOA, CNAME, MX, TXT, DS, DNAME, ANY = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.SOA,
    dns.rdatatype.CNAME, dns.rdatatype.MX, dns.rdatatype.TXT, dns.rdatatype.DS,
    dns.rdatatype.DNAME, dns.rdatatype.ANY,
)

# Edge cases of the structural shortcut for names that do not exist: the SOA's RNAME
# (hostmaster.edge.test) does not exist, so a.hostmaster.edge.test compresses against the
# question where a name of the same length does not; a wildcard CNAME that answers its own
# target (a loop that depends on the name asked); wildcards that chain to each other; types
# whose number has a byte that is an ASCII letter (HTTPS is 65, "A"; 97 is "a"), which must not
# be lowercased with the name.
EDGE = """\
$ORIGIN edge.test.
$TTL 300
@          SOA   ns hostmaster 2024010101 3600 600 86400 60
           NS    ns
           NS    ns.elsewhere.example.
           MX    10 mail.example.net.
ns         A     192.0.2.1
*.loop     CNAME foo.loop
*.pair     CNAME a.pair2
*.pair2    CNAME b.pair
*.mx       MX    10 ns
           MX    20 mx.example.net.
*.deep.ent A     192.0.2.9
cut        NS    ns.cut
           NS    ns.elsewhere.example.
ns.cut     A     192.0.2.10
to-nx      CNAME x.nothing
to-wild    CNAME host.mx
web        HTTPS 1 . alpn=h2
           TYPE97 \\# 2 abcd
           TYPE16705 \\# 1 00
"""


@pytest.fixture(autouse=True)
def deterministic_rendering(monkeypatch):
    """dnspython renders the records of an RRset in random order; not in these tests."""
    monkeypatch.setattr(dns.rdataset, "random", types.SimpleNamespace(shuffle=lambda _l: None))


def corpus_zones() -> dict[dns.name.Name, Zone]:
    zones = load_corpus()
    edge, _warnings = parse_zone(EDGE, "edge.test.", "edge.test")
    zones[edge.origin] = edge
    return zones


ZONES = corpus_zones()


# --------------------------------------------------------------------------- the queries


@dataclass(frozen=True)
class Transport:
    tcp: bool
    payload: int | None  # None: no EDNS
    do: bool = False


TRANSPORTS = (
    Transport(False, None),
    Transport(False, 512),
    Transport(False, 600, do=True),
    Transport(False, 1000),
    Transport(False, 1232),
    Transport(False, 4096, do=True),
    Transport(True, None),
    Transport(True, 1232),
    Transport(True, 4096, do=True),
)


@dataclass(frozen=True)
class Query:
    wire: bytes
    tcp: bool
    tag: str
    text: str


def make_wire(qname: dns.name.Name, qtype: int, t: Transport, qid: int, flags: int = 0,
              rd: bool = True) -> bytes:
    query = dns.message.make_query(qname, qtype, use_edns=0 if t.payload else False,
                                   payload=t.payload or 1232, want_dnssec=t.do)
    query.id = qid
    if not rd:
        query.flags &= ~dns.flags.RD
    query.flags |= flags
    return query.to_wire()


def random_label(rng: random.Random, size: int) -> bytes:
    return bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789-") for _ in range(size))


def names_below(zones: dict[dns.name.Name, Zone], rng: random.Random):
    """(qname, tag): names that do not exist, below every name of every zone and below the
    names the zones' records point at, in several lengths, so that names of equal length
    with and without a suffix the reply writes are both asked."""
    parents: set[dns.name.Name] = set()
    for zone in zones.values():
        parents |= set(zone.names)
        for node in zone.nodes.values():
            for rrset in node.values():
                for rd in rrset:
                    for attr in ("target", "exchange", "mname", "rname"):
                        target = getattr(rd, attr, None)
                        if isinstance(target, dns.name.Name) and target.is_subdomain(zone.origin):
                            parents.add(target)
    for parent in sorted(parents):
        if parent.labels[0] == b"*":
            parent = parent.parent()
        for size, depth in ((1, 1), (8, 1), (11, 1), (3, 2)):
            labels = [random_label(rng, size) for _ in range(depth)]
            try:
                yield dns.name.Name((*labels, *parent.labels)), "random"
            except dns.name.NameTooLong:
                pass
    # the longest names there are: the question at its largest offset
    for origin in sorted(zones):
        labels = [random_label(rng, 63) for _ in range(4)]
        while True:
            try:
                yield dns.name.Name((*labels, *origin.labels)), "random/long"
                break
            except dns.name.NameTooLong:
                labels[0] = labels[0][:-1]


def corpus_queries() -> list[Query]:
    """Every query twice (the second time from the cache), in another case, id, RD and CD."""
    rng = random.Random(4711)
    base = [(qname, qtype, tag) for qname, qtype, tag, _every in base_queries(ZONES)]
    for k, (qname, tag) in enumerate(names_below(ZONES, rng)):
        base.append((qname, A, tag))
        base.append((qname, (MX, TXT, ANY, AAAA)[k % 4], tag))
    out: list[Query] = []
    for round_ in range(2):
        for i, (qname, qtype, tag) in enumerate(base):
            for j, t in enumerate(TRANSPORTS):
                if tag == "random" and (i + j) % 3:  # a third of the transports, for time
                    continue
                sent = mix_case(qname, random.Random(i * 31 + j + round_)) if round_ or i % 2 \
                    else qname
                flags = (dns.flags.CD if rng.random() < 0.3 else 0) | \
                    (dns.flags.AD if rng.random() < 0.1 else 0)
                wire = make_wire(sent, qtype, t, rng.randrange(1 << 16), flags,
                                 rd=rng.random() < 0.7)
                label = f"{sent} {dns.rdatatype.to_text(qtype)} {t}"
                out.append(Query(wire, t.tcp, tag, label))
    return out


QUERIES = corpus_queries()


def reference(zones: ZoneSet, wire: bytes, tcp: bool):
    return core.handle(core.ServerState(zones), wire, core.Request(tcp=tcp))


def kind_of(reply: bytes, tag: str) -> str:
    """What kind of answer the reference gave (to show the corpus covers the issue's mix)."""
    msg = dns.message.from_wire(reply)
    rcode = msg.rcode()
    if msg.flags & dns.flags.TC:
        return "truncated"
    if rcode == dns.rcode.NXDOMAIN:
        return "nxdomain"
    if rcode != dns.rcode.NOERROR:
        return dns.rcode.to_text(rcode).lower()
    types_ = {r.rdtype for r in msg.answer}
    if DNAME in types_:
        return "dname"
    if tag.startswith("wildcard") or (tag == "random" and msg.answer):
        return "wildcard"
    if not msg.flags & dns.flags.AA and any(r.rdtype == NS for r in msg.authority):
        return "referral"
    if not msg.answer:
        return "nodata"
    if CNAME in types_ and msg.question[0].rdtype != CNAME:
        return "cname"
    return "answer/" + dns.rdatatype.to_text(msg.question[0].rdtype)


# --------------------------------------------------------------------------- tests


def test_every_plain_query_is_answered_here_with_the_reference_bytes():
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    mismatches, declined = [], []
    kinds: collections.Counter = collections.Counter()
    for q in QUERIES:
        expected = reference(zones, q.wire, q.tcp)
        got = fast.answer(q.wire, q.tcp)
        kinds[kind_of(expected, q.tag)] += 1
        if got is None:
            declined.append(q.text)
        elif got != expected:
            mismatches.append(q.text)
    assert not mismatches, f"{len(mismatches)} replies differ, e.g. {mismatches[:5]}"
    assert not declined, f"{len(declined)} plain queries left to the reference: {declined[:5]}"
    # The issue-3 mix and the hard cases are all among them.
    for kind in ("answer/A", "answer/AAAA", "answer/MX", "nxdomain", "nodata", "cname",
                 "referral", "wildcard", "dname", "truncated", "refused", "servfail",
                 "yxdomain"):
        assert kinds[kind] > 0, f"no {kind} in the corpus: {kinds}"
    assert len(QUERIES) > 20_000


def test_the_case_of_the_question_is_echoed_and_compression_ignores_it():
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    t = Transport(False, 1232)
    for text in ("www.example.test.", "alias1.example.test.", "x.wild.test.",
                 "www.old.dname.test.", "nonexistent.example.test.", "www.child1.deleg.test."):
        name = dns.name.from_text(text)
        for k, sent in enumerate((name, mix_case(name, random.Random(1)),
                                  dns.name.from_text(text.upper()), name)):
            wire = make_wire(sent, A, t, 100 + k)
            got = fast.answer(wire, False)
            assert got == reference(zones, wire, False), sent
            assert dns.message.from_wire(got).question[0].name.labels == sent.labels


def test_every_udp_size_gets_the_reference_bytes():
    """Big replies: complete, without additional data, or TC, exactly where the reference is."""
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    rng = random.Random(7)
    questions = [("big.test.", MX), ("many.big.test.", A), ("manyv6.big.test.", AAAA),
                 ("manytxt.big.test.", TXT), ("big.test.", ANY), ("x.big.deleg.test.", A),
                 ("big.deleg.test.", NS)]
    seen_tc = seen_full = 0
    for text, qtype in questions:
        for payload in [*range(0, 1400, 37), 511, 512, 513, 1231, 1232, 1233, 65535]:
            for do in (False, True):
                name = mix_case(dns.name.from_text(text), rng)
                wire = make_wire(name, qtype, Transport(False, payload, do), rng.randrange(65536))
                expected = reference(zones, wire, False)
                assert fast.answer(wire, False) == expected, (text, qtype, payload, do)
                if expected[2] & 0x02:
                    seen_tc += 1
                else:
                    seen_full += 1
    assert seen_tc and seen_full


def count_reference_calls(monkeypatch) -> list[bytes]:
    calls: list[bytes] = []
    real = core.handle

    def counting(state, wire, request=None, now=0):
        calls.append(wire)
        return real(state, wire, request or core.Request(), now)

    monkeypatch.setattr(core, "handle", counting)
    return calls


def test_random_names_share_templates_instead_of_the_reference(monkeypatch):
    """A flood of random names (NXDOMAIN, wildcard, below a cut, out of zone) is answered by
    class: after the first few of each kind and length, no reference lookup at all."""
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    calls = count_reference_calls(monkeypatch)
    rng = random.Random(99)
    t = Transport(False, 1232)
    parents = ["example.test.", "www.example.test.", "dyn.example.test.", "multi.wild.test.",
               "child1.deleg.test.", "example.com."]
    for parent in parents:
        for _ in range(200):
            qname = dns.name.Name((random_label(rng, 10),
                                   *dns.name.from_text(parent).labels))
            wire = make_wire(qname, A, t, rng.randrange(65536))
            got = fast.answer(wire, False)
            calls_before = len(calls)
            assert got == reference(zones, wire, False), qname
            del calls[calls_before:]
    assert len(calls) <= 4 * len(parents), f"{len(calls)} reference calls for 1200 names"


def test_zone_swap_answers_the_new_data_and_keeps_what_did_not_change(monkeypatch):
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    www = make_wire(dns.name.from_text("www.example.test."), A, Transport(False, 1232), 1)
    host = make_wire(dns.name.from_text("host1.wild.test."), A, Transport(False, 1232), 2)
    nx = make_wire(dns.name.from_text("nope.wild.test."), MX, Transport(True, None), 3)
    before = {w: fast.answer(w, False) for w in (www, host)}
    fast.answer(nx, True)
    assert b"\xc0\x00\x02\x50" in before[www]  # 192.0.2.80

    text = (load_corpus_file("example.test").replace("192.0.2.80", "198.51.100.80")
            .replace("2024010101 ; serial", "2024010102 ; serial"))
    changed, _ = parse_zone(text, "example.test.", "example.test")
    new_zones = zones.replace({changed.origin: changed})
    calls = count_reference_calls(monkeypatch)
    swapped = FastPath(new_zones, previous=fast)
    after = swapped.answer(www, False)
    assert after == reference(new_zones, www, False)
    assert b"\xc6\x33\x64\x50" in after and after != before[www]
    del calls[:]
    # wild.test did not change: its templates (a name's and a class's) are taken over
    assert swapped.answer(host, False) == before[host]
    nx2 = make_wire(dns.name.from_text("else.wild.test."), MX, Transport(True, None), 4)
    assert swapped.answer(nx2, True) is not None
    assert calls == [], "entries of an unchanged zone were computed again"
    assert swapped.answer(nx2, True) == reference(new_zones, nx2, True)
    # DS is answered from the parent side of a cut: a new DS in parent.test is served, though
    # the child zone child.parent.test, the closest enclosing zone of the name, did not change
    ds = make_wire(dns.name.from_text("child.parent.test."), DS, Transport(False, 1232), 6)
    assert swapped.answer(ds, False) == reference(new_zones, ds, False)
    parent_text = (load_corpus_file("parent.test").replace("11111 13 2", "11112 13 2")
                   .replace("2024010101", "2024010102"))
    parent, _ = parse_zone(parent_text, "parent.test.", "parent.test")
    newer_zones = new_zones.replace({parent.origin: parent})
    newer = FastPath(newer_zones, previous=swapped)
    assert newer.answer(ds, False) == reference(newer_zones, ds, False)
    assert b"\x2b\x68" in newer.answer(ds, False)  # key tag 11112
    # a new set of zones (one dropped): nothing is taken over, and the dropped zone is gone
    smaller = FastPath(new_zones.replace({dns.name.from_text("wild.test."): None}),
                       previous=swapped)
    refused = smaller.answer(host, False)
    assert refused is not None and refused[3] & 0xF == dns.rcode.REFUSED


def load_corpus_file(name: str) -> str:
    from tests.interop.test_differential_bind import CORPUS

    return CORPUS[name].read_text()


def test_the_cache_is_bounded():
    zones = ZoneSet(ZONES)
    fast = FastPath(zones, max_entries=16)
    for q in QUERIES[:3000]:
        assert fast.answer(q.wire, q.tcp) in (None, reference(zones, q.wire, q.tcp))
    assert all(len(t) <= 16 for t in (*fast._tables, *fast._exact))
    assert len(fast._classes) <= 16


def header(qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: str = "www.example.test.", qtype: int = A, qclass: int = 1) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", qtype, qclass)


def opt(payload: int = 1232, ext_rcode: int = 0, version: int = 0, flags: int = 0,
        rdata: bytes = b"") -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", 41, payload, ext_rcode, version, flags,
                                 len(rdata)) + rdata


def option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def signed_query() -> bytes:
    keyring = dns.tsigkeyring.from_text({"k._transfer.example.test.": "c2VjcmV0c2VjcmV0"})
    query = dns.message.make_query("www.example.test.", A)
    query.use_tsig(keyring, algorithm="hmac-sha256")
    return query.to_wire()


NOT_PLAIN = {
    "a response": header(1, flags=0x8100) + question(),
    "NOTIFY": header(2, flags=dns.opcode.to_flags(dns.opcode.NOTIFY)) + question(qtype=SOA),
    "UPDATE": header(3, flags=dns.opcode.to_flags(dns.opcode.UPDATE)) + question(qtype=SOA),
    "opcode 3": header(4, flags=3 << 11) + question(),
    "no question": header(5, qd=0),
    "two questions": header(6, qd=2) + question() + question(qtype=AAAA),
    "an answer record": header(7, an=1) + question() + b"\xc0\x0c" + struct.pack(
        "!HHIH", A, 1, 0, 4) + b"\x01\x02\x03\x04",
    "class CH": header(8) + question("version.bind.", TXT, 3),
    "class ANY": header(9) + question(qclass=255),
    "AXFR": header(10) + question("example.test.", dns.rdatatype.AXFR),
    "IXFR": header(11) + question("example.test.", dns.rdatatype.IXFR),
    "type OPT": header(12) + question(qtype=41),
    "type TSIG": header(13) + question(qtype=250),
    "MAILB": header(14) + question(qtype=253),
    "EDNS version 1": header(15, ar=1) + question() + opt(version=1),
    "extended rcode in a query": header(16, ar=1) + question() + opt(ext_rcode=1),
    "ECS option": header(17, ar=1) + question() + opt(
        rdata=option(8, b"\x00\x01\x18\x00\xc0\x00\x02")),
    "short cookie": header(18, ar=1) + question() + opt(rdata=option(10, b"1234")),
    "server cookie of 4": header(18, ar=1) + question() + opt(rdata=option(10, b"c" * 12)),
    "server cookie of 33": header(18, ar=1) + question() + opt(rdata=option(10, b"c" * 41)),
    "option past the end": header(19, ar=1) + question() + opt(rdata=b"\x00\x0a\x00\x20abc"),
    "OPT length past the end": header(20, ar=1) + question() + opt()[:-2] + b"\x00\x05",
    "trailing bytes": header(21) + question() + b"\x00",
    "OPT and trailing bytes": header(22, ar=1) + question() + opt() + b"\x00",
    "compressed question": header(23) + b"\x03www\xc0\x04" + struct.pack("!HH", A, 1),
    "two OPT": header(24, ar=2) + question() + opt() + opt(),
    "OPT not at the root": header(25, ar=1) + question() + b"\x01x" + opt()[1:],
    "a label of 64": header(26) + b"\x40" + b"a" * 64 + b"\x00" + struct.pack("!HH", A, 1),
    "a zero byte in a label": header(27) + b"\x03w\x00w\x04test\x00" + struct.pack("!HH", A, 1),
    "TSIG": signed_query(),
    "a runt": header(28)[:11],
}


@pytest.mark.parametrize("what", sorted(NOT_PLAIN))
@pytest.mark.parametrize("tcp", [False, True])
def test_what_is_not_a_plain_query_goes_to_the_reference(what, tcp):
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    fast.answer(header(99) + question(), tcp)  # the cache is warm for www.example.test A
    assert fast.answer(NOT_PLAIN[what], tcp) is None


def test_edns_options_that_cannot_fail_are_answered_here():
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    for rdata in (option(10, b"clientck"), option(10, b"clientck" + b"s" * 16),
                  option(3, b""), option(65001, b"anything"), option(12, b"\x00" * 10),
                  option(10, b"clientck") + option(65001, b"")):
        for do in (0, 0x8000):
            wire = header(1, ar=1) + question() + opt(flags=do, rdata=rdata)
            for tcp in (False, True):
                got = fast.answer(wire, tcp)
                assert got is not None and got == reference(zones, wire, tcp), rdata


def test_malformed_packets_and_bit_flips_against_a_warm_cache():
    """core's hostile packets, and 20k bit flips of corpus queries once their answers are
    cached: declined, or the reference's bytes."""
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    rng = random.Random(2024)
    sample = rng.sample(QUERIES, 3000)
    for q in sample:
        fast.answer(q.wire, q.tcp)
    packets = [wire for category in malformed.CATEGORIES
               for wire, _expect in malformed.packets(category)]
    for _ in range(20_000):
        q = rng.choice(sample)
        data = bytearray(q.wire)
        for _ in range(rng.randint(1, 2)):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
        packets.append(bytes(data))
    answered = 0
    for wire in packets:
        for tcp in (False, True):
            got = fast.answer(wire, tcp)
            if got is not None:
                answered += 1
                assert got == reference(zones, wire, tcp), wire.hex()
    assert answered > 5000  # flips of the case, id, RD, CD, AD, Z bits, payload, DO ...


def test_with_dnspython_shuffling_the_answer_is_one_of_the_reference_orders(monkeypatch):
    monkeypatch.undo()  # the real, shuffling renderer
    zones = ZoneSet(ZONES)
    fast = FastPath(zones)
    for text, qtype in (("example.test.", MX), ("example.test.", NS), ("big.test.", MX)):
        wire = make_wire(dns.name.from_text(text), qtype, Transport(True, 1232), 5)
        first = fast.answer(wire, True)
        for _ in range(3):
            ours = dns.message.from_wire(fast.answer(wire, True))
            theirs = dns.message.from_wire(reference(zones, wire, True))
            assert ours == theirs  # sections compared as sets of RRsets, rdata as sets
        assert fast.answer(wire, True) == first  # one order, kept
