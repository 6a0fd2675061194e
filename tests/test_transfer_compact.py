"""AXFR of a CompactZone, written from its bytes (`transfer._CompactWriter`), against the
Renderer path: the same records in the same order (owner with its case, TTL, rdata), every
message within the size with its OPT and TSIG, signed streams that verify as one chain, RRsets
whole unless larger than a message, and the same TooBig for a record larger than a message.

The reference is the dnspython path on the equivalent plain `Zone` (for the corpus and a
generated zone) and on the CompactZone itself (for one with changes layered on it).
"""

from __future__ import annotations

import asyncio
import time
import types

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import pytest

from gitdns import compactzone, core, transfer, xfrout
from gitdns.compactzone import CompactZone
from gitdns.history import ZoneHistory
from gitdns.transfer import axfr_messages, ixfr_messages
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone
from tests.test_fastpath import ZONES

NOW = 1_700_000_000
KEYNAME = dns.name.from_text("sec._transfer.example.")
SECRET = "Zm9vYmFyYmF6cXV1eGZvb2JhcmJhenF1dXhmb29iYXI="
SIZES = (512, 4096, 65535)


@pytest.fixture(autouse=True)
def fixed_rendering_and_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Renderer path in a fixed record order (dnspython shuffles an RRset as it renders),
    and dnspython's TSIG checks at NOW."""
    monkeypatch.setattr(dns.rdataset, "random", types.SimpleNamespace(shuffle=lambda _l: None))
    monkeypatch.setattr(dns.message, "time", types.SimpleNamespace(time=lambda: NOW))


def keyring(algorithm: str = "hmac-sha256") -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({KEYNAME.to_text(): (algorithm, SECRET)})


def make_query(origin: dns.name.Name | str, rdtype: str = "AXFR", *, signed: bool = False,
               edns: bool = False, rd: bool = False, serial: int | None = None,
               algorithm: str = "hmac-sha256"):
    """(the client's query after sending, the server's parse of it)."""
    q = dns.message.make_query(origin, rdtype, use_edns=0 if edns else None,
                               want_dnssec=edns)
    q.flags = (q.flags & ~dns.flags.RD) | (dns.flags.RD if rd else 0)
    if serial is not None:
        soa = q.find_rrset(q.authority, q.question[0].name, dns.rdataclass.IN,
                           dns.rdatatype.SOA, create=True)
        soa.add(dns.rdata.from_text("IN", "SOA", f". . {serial} 0 0 0 0"), 0)
    keys = None
    if signed:
        keys = keyring(algorithm)
        q.use_tsig(keys, KEYNAME)
    wire = q.to_wire()
    return q, dns.message.from_wire(wire, keyring=keys)


def reference(zone: Zone, server_q: dns.message.Message, size: int) -> list[bytes] | str:
    """The Renderer path's messages (whatever the zone's class), or its TooBig's text."""
    try:
        stream = transfer._Stream(server_q, size, NOW)
        return list(stream.messages(transfer._full(zone)))
    except dns.exception.TooBig as e:
        return f"TooBig: {e}"


def fast(zone: CompactZone, server_q: dns.message.Message, size: int) -> list[bytes] | str:
    try:
        return list(axfr_messages(zone, server_q, max_size=size, now=NOW))
    except dns.exception.TooBig as e:
        return f"TooBig: {e}"


def received(wires: list[bytes], q: dns.message.Message, server_q: dns.message.Message,
             size: int) -> list[tuple]:
    """Every record of the stream, in order, as (owner labels, TTL, class, type, rdata wire),
    after checking each message as a client would (the TSIG chain included) and its size."""
    reserve = transfer._Stream(server_q, size, NOW).reserve
    out: list[tuple] = []
    ctx = None
    for i, wire in enumerate(wires):
        assert len(wire) <= size
        m = dns.message.from_wire(wire, keyring=q.keyring, request_mac=q.mac, xfr=True,
                                  multi=True, tsig_ctx=ctx, one_rr_per_rrset=True)
        ctx = m.tsig_ctx
        assert q.is_response(m, xfr_continuation=i > 0)
        assert m.id == q.id and m.rcode() == 0
        assert m.flags & dns.flags.QR and m.flags & dns.flags.AA
        assert m.flags & dns.flags.RD == q.flags & dns.flags.RD
        assert len(m.question) == (1 if i == 0 else 0)
        assert m.had_tsig == q.had_tsig
        if q.had_tsig:
            assert m.tsig[0].time_signed == NOW
        assert (m.edns >= 0) == (q.edns >= 0)
        if q.edns >= 0:
            assert m.ednsflags & dns.flags.DO == q.ednsflags & dns.flags.DO
        assert not m.authority and len(m.additional) == 0 and m.answer
        for rrset in m.answer:
            for rd in rrset:
                out.append((i, rrset.name.labels, rrset.ttl, rrset.rdclass, rrset.rdtype,
                            rd.covers(), rd.to_wire()))
    check_rrsets_whole(out, size - reserve - 12)
    return [r[1:] for r in out]


def check_rrsets_whole(records: list[tuple], room: int) -> None:
    """An RRset spread over messages must be larger than a message's room for answers: even
    with every owner a 2-byte pointer, its records do not fit in an empty message."""
    runs: list[list[tuple]] = []
    for r in records:
        if runs and runs[-1][0][1:6] == r[1:6] and r[0] >= runs[-1][-1][0]:
            runs[-1].append(r)
        else:
            runs.append([r])
    for run in runs:
        if run[0][0] != run[-1][0]:
            smallest = sum(2 + 10 + len(r[6]) for r in run)
            assert smallest > room, f"an RRset of {len(run)} records split over messages"


def both(zone: Zone, compact: CompactZone, size: int, **query) -> tuple[list, list]:
    """The records the Renderer path gives for `zone` and the fast path for `compact`."""
    q, server_q = make_query(compact.origin, **query)
    slow = reference(zone, server_q, size)
    quick = fast(compact, server_q, size)
    if isinstance(slow, str) or isinstance(quick, str):
        return [slow], [quick]
    assert slow and quick
    return received(slow, q, server_q, size), received(quick, q, server_q, size)


QUERY_KINDS = [
    {},
    {"edns": True, "rd": True},
    {"signed": True},
    {"signed": True, "edns": True, "algorithm": "hmac-sha512"},
]


@pytest.mark.parametrize("origin", list(ZONES), ids=str)
@pytest.mark.parametrize("size", SIZES)
def test_corpus_zones_transfer_the_same_records(origin: dns.name.Name, size: int):
    zone = ZONES[origin]
    compact = CompactZone.from_zone(zone)
    for kind in QUERY_KINDS:
        slow, quick = both(zone, compact, size, **kind)
        assert quick == slow, kind


GENERATED_ORIGIN = "Gen.Example."
SIG = "A" * 88  # a 64-byte signature in base64


def generated_zone_text(hosts: int = 1500) -> str:
    """A few thousand records: owners in mixed case (some spelling the origin otherwise), deep
    names, RRSIGs over several types at one owner, long TXT strings, a large RRset (an RRset
    larger than a 4096-byte message) and a 600-byte record (larger than a 512-byte message)."""
    lines = [
        "$TTL 300",
        "@ 3600 SOA ns1 HostMaster 2024010101 7200 900 1209600 300",
        "@ NS ns1",
        "@ NS NS2.Elsewhere.example.",
        f"@ RRSIG SOA 13 2 3600 20300101000000 20200101000000 1234 Gen.Example. {SIG}",
        f"@ RRSIG NS 13 2 300 20300101000000 20200101000000 1234 Gen.Example. {SIG}",
        "@ MX 10 Mail",
        "ns1 A 192.0.2.1",
        "Mail A 192.0.2.25",
        "odd.GEN.EXAMPLE. A 192.0.2.26",
        "Odd.Sub.gen.example. A 192.0.2.27",
        "*.Wild A 192.0.2.28",
    ]
    for i in range(hosts):
        name = f"Host{i}" if i % 3 == 0 else f"host{i}"
        lines.append(f"{name} A 10.0.{i >> 8 & 255}.{i & 255}")
        if i % 2 == 0:
            lines.append(f"{name} AAAA 2001:db8::{i:x}")
        if i % 7 == 0:
            lines.append(f"{name} RRSIG A 13 3 300 20300101000000 20200101000000 1234 "
                         f"Gen.Example. {SIG}")
            lines.append(f"{name} RRSIG AAAA 13 3 300 20300101000000 20200101000000 1234 "
                         f"Gen.Example. {SIG}")
        if i % 11 == 0:
            lines.append(f'a.B.{name} TXT "{"t" * (i % 250)}" "second string {i}"')
        if i % 13 == 0:
            lines.append(f"alias{i} CNAME {name.upper()}")
    lines += [f'Many TXT "record {i} {"x" * 60}"' for i in range(100)]
    lines.append(f'huge TXT "{"h" * 250}" "{"h" * 250}" "{"h" * 100}"')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def generated() -> tuple[Zone, CompactZone]:
    zone, _warnings = parse_zone(generated_zone_text(), GENERATED_ORIGIN, "gen")
    assert zone.record_count > 3000
    return zone, CompactZone.from_zone(zone)


@pytest.mark.parametrize("size", SIZES + (1000, 16384))
@pytest.mark.parametrize("kind", QUERY_KINDS, ids=lambda k: "+".join(k) or "plain")
def test_generated_zone_transfers_the_same_records(generated, size: int, kind: dict):
    zone, compact = generated
    slow, quick = both(zone, compact, size, **kind)
    if size == 512:
        assert slow == quick == [f"TooBig: a record of huge.{GENERATED_ORIGIN} is larger than a "
                                 "512-byte message"]
        return
    assert quick == slow
    owners = {r[0] for r in quick}
    assert (b"Host0", b"Gen", b"Example", b"") in owners
    assert (b"odd", b"GEN", b"EXAMPLE", b"") in owners
    assert (b"Odd", b"Sub", b"gen", b"example", b"") in owners


def test_an_origin_spelt_otherwise_in_the_query(generated):
    """The question's name is pointed to only when it is spelt as the zone's origin."""
    zone, compact = generated
    for origin in ("gen.example.", "GEN.EXAMPLE.", GENERATED_ORIGIN):
        q, server_q = make_query(origin)
        slow = received(reference(zone, server_q, 65535), q, server_q, 65535)
        assert received(fast(compact, server_q, 65535), q, server_q, 65535) == slow


def test_big_zone_fills_messages_and_compresses(generated):
    zone, compact = generated
    q, server_q = make_query(compact.origin, signed=True, edns=True)
    wires = fast(compact, server_q, 4096)
    assert len(wires) > 20
    slow = reference(zone, server_q, 4096)
    # Greedy: short messages only at the end and before the RRset larger than a message (it
    # starts a message of its own, as in the Renderer path).
    assert sum(len(w) < 4096 - 300 for w in wires) == sum(len(w) < 4096 - 300 for w in slow) == 2
    assert len(wires) <= len(slow) + 1
    # Owners compressed (rdata not): within a few percent of the Renderer's size.
    assert sum(map(len, wires)) < sum(map(len, slow)) * 1.1


def test_tampered_or_dropped_message_fails_verification(generated):
    _, compact = generated
    q, server_q = make_query(compact.origin, signed=True)
    wires = fast(compact, server_q, 4096)
    with pytest.raises(dns.tsig.BadSignature):
        received(wires[:3] + wires[4:], q, server_q, 4096)
    tampered = list(wires)
    tampered[5] = wires[5][:-100] + bytes([wires[5][-100] ^ 1]) + wires[5][-99:]
    with pytest.raises((dns.tsig.BadSignature, dns.exception.FormError)):
        received(tampered, q, server_q, 4096)


def test_a_zone_with_changes_layered_on_its_table(generated):
    """Nodes changed, added and removed (CompactNodes.delta), the apex included: the fast path
    follows `raw_items`' order as CompactZone.rrsets does."""
    _, compact = generated
    origin = compact.origin
    apex = dict(compact.nodes[origin])
    soa = apex[(dns.rdatatype.SOA, 0)]
    new_soa = dns.rrset.from_rdata(soa.name, soa.ttl, soa[0].replace(serial=soa[0].serial + 1))
    apex[(dns.rdatatype.SOA, 0)] = new_soa
    apex[(dns.rdatatype.TXT, 0)] = dns.rrset.from_text(origin, 60, "IN", "TXT", '"new"')
    host = dns.name.from_text("host1", origin)
    changed = {(dns.rdatatype.A, 0): dns.rrset.from_text(host, 60, "IN", "A", "192.0.2.99")}
    new_name = dns.name.from_text("NewHost", origin)
    added = {(dns.rdatatype.A, 0): dns.rrset.from_text(new_name, 60, "IN", "A", "192.0.2.98")}
    newer = compact.with_changes({origin: apex, host: changed, new_name: added,
                                  dns.name.from_text("host2", origin): None})
    assert newer.nodes.delta
    for size in (1000, 65535):
        q, server_q = make_query(origin, signed=True, edns=True)
        slow = received(reference(newer, server_q, size), q, server_q, size)
        quick = received(fast(newer, server_q, size), q, server_q, size)
        assert quick == slow
        assert quick[0][4] == quick[-1][4] and quick[0][3] == dns.rdatatype.SOA
        assert dns.message.from_wire(fast(newer, server_q, size)[0], keyring=q.keyring,
                                     request_mac=q.mac, xfr=True).answer[0][0].serial == \
            soa[0].serial + 1


def test_the_fast_path_decodes_no_node(monkeypatch, generated):
    _, compact = generated

    def no(*_args, **_kwargs):
        raise AssertionError("decoded a node")

    monkeypatch.setattr(compactzone, "decode_node", no)
    monkeypatch.setattr(CompactZone, "rrsets", no)
    q, server_q = make_query(compact.origin)
    assert len(list(axfr_messages(compact, server_q))) >= 1
    # A full transfer in IXFR form over TCP too (the client's serial has no chain of
    # differences to the current one).
    _, ixfr_q = make_query(compact.origin, "IXFR", serial=1)
    wires = list(ixfr_messages(compact, None, ixfr_q, tcp=True))
    m = dns.message.from_wire(wires[0], xfr=True)
    assert m.answer[0].rdtype == dns.rdatatype.SOA and len(m.answer) > 100


def test_full_ixfr_of_a_compact_zone_is_the_axfr_records(generated):
    zone, compact = generated
    q, server_q = make_query(compact.origin, "IXFR", serial=1, signed=True)
    slow = list(ixfr_messages(zone, None, server_q, tcp=True, max_size=4096, now=NOW))
    quick = list(ixfr_messages(compact, None, server_q, tcp=True, max_size=4096, now=NOW))

    def records(wires):
        ctx, out = None, []
        for wire in wires:
            m = dns.message.from_wire(wire, keyring=q.keyring, request_mac=q.mac, xfr=True,
                                      multi=True, tsig_ctx=ctx, one_rr_per_rrset=True)
            ctx = m.tsig_ctx
            out += [(r.name.labels, r.ttl, r.rdtype, rd.to_wire()) for r in m.answer for rd in r]
        return out

    assert records(quick) == records(slow)
    # Over UDP the reply does not fit: the current SOA alone, as before.
    (udp,) = ixfr_messages(compact, None, server_q, tcp=False, now=NOW)
    m = dns.message.from_wire(udp, keyring=q.keyring, request_mac=q.mac)
    assert [r.rdtype for r in m.answer] == [dns.rdatatype.SOA]


def test_serve_transfer_uses_the_fast_path(monkeypatch, generated):
    """xfrout.serve_transfer (the edge's entry) returns the fast path's messages as a list."""
    _, compact = generated

    def no(*_args, **_kwargs):
        raise AssertionError("decoded a node")

    monkeypatch.setattr(CompactZone, "rrsets", no)
    q, server_q = make_query(compact.origin, signed=True, edns=True)
    job = core.Deferred("transfer", server_q, None, compact.origin, compact,
                        core.Request(tcp=True, peer=("192.0.2.53", 5353)))
    monkeypatch.setattr(xfrout, "time",
                        types.SimpleNamespace(time=lambda: NOW, monotonic=time.monotonic))
    messages = asyncio.run(xfrout.serve_transfer(job, ZoneHistory()))
    assert isinstance(messages, list) and len(messages) >= 1
    records = received(messages, q, server_q, 65535)
    assert len(records) == compact.record_count + 1  # the SOA twice


@pytest.mark.parametrize("limit", [0, 10_000])
def test_a_big_transfer_is_followed_by_a_trim(monkeypatch, generated, limit):
    """A transfer of more than BIG_TRANSFER messages asks for its memory back (memory.py)."""
    _, compact = generated
    trims = []
    monkeypatch.setattr(xfrout.memory, "trim_soon", lambda: trims.append(1))
    monkeypatch.setattr(xfrout, "BIG_TRANSFER", limit)
    _q, server_q = make_query(compact.origin, signed=False, edns=True)
    job = core.Deferred("transfer", server_q, None, compact.origin, compact,
                        core.Request(tcp=True, peer=("192.0.2.53", 5353)))
    messages = asyncio.run(xfrout.serve_transfer(job, ZoneHistory()))
    assert trims == ([1] if len(messages) > limit else [])
