"""Outbound AXFR and IXFR, checked by the receiver's side: dnspython's inbound transfer machine
(`dns.xfr.Inbound`, as `dns.query.inbound_xfr` drives it) with TSIG verification of the stream.

RFC 5936 (AXFR), RFC 1995 (IXFR), RFC 8945 5.3.1 (TSIG on multi-message transfers), RFC 1982.
"""

from __future__ import annotations

import io
import struct
import types
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.versioned
import dns.xfr
import dns.zone
import pytest

from gitdns.diff import ZoneDiff, apply_diff, zone_diff
from gitdns.transfer import BadIXFRQuery, axfr_messages, client_serial, ixfr_messages
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.")
NOW = 1_700_000_000
KEYNAME = dns.name.from_text("sec._transfer.example.")
SECRET = "Zm9vYmFyYmF6cXV1eGZvb2JhcmJhenF1dXhmb29iYXI="
AXFR, IXFR, SOA = dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """dnspython signs queries and checks TSIG times with time.time(); pin it to NOW, so the
    tests do not depend on the clock and a wrong signing time is caught."""
    monkeypatch.setattr(dns.message, "time", types.SimpleNamespace(time=lambda: NOW))


def make_zone(serial: int, body: str = "") -> Zone:
    text = (
        "$TTL 300\n"
        f"@ 3600 SOA ns1 hostmaster {serial} 7200 900 1209600 300\n"
        "@ NS ns1\n@ MX 10 mail\nns1 A 192.0.2.1\nmail A 192.0.2.25\n" + body
    )
    zone, _ = parse_zone(text, ORIGIN)
    return zone


def hosts(n: int, start: int = 0) -> str:
    return "".join(
        f"host{i} A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(start, start + n)
    )


def keyring(algorithm: str = "hmac-sha256") -> dict[dns.name.Name, dns.tsig.Key]:
    return dns.tsigkeyring.from_text({KEYNAME.to_text(): (algorithm, SECRET)})


def make_query(
    rdtype: int,
    serial: int | None = None,
    keys: dict[dns.name.Name, dns.tsig.Key] | None = None,
    edns: bool = False,
) -> tuple[dns.message.Message, dns.message.Message]:
    """(the client's query after sending, the server's parse of it) — as on each end of a wire."""
    target = dns.zone.Zone(ORIGIN, relativize=False)
    q, _ = dns.xfr.make_query(
        target, serial=serial if rdtype == IXFR else None, use_edns=0 if edns else None
    )
    if keys is not None:
        q.use_tsig(keys, KEYNAME)
    wire = q.to_wire()
    return q, dns.message.from_wire(wire, keyring=keys)


def to_dns_zone(zone: Zone | None, versioned: bool = False) -> dns.zone.Zone:
    """A dnspython zone (the secondary's copy) holding `zone`, or empty."""
    cls = dns.versioned.Zone if versioned else dns.zone.Zone
    target = cls(ORIGIN, relativize=False)
    if zone is not None:
        with target.writer() as txn:
            for rrset in zone.rrsets():
                txn.add(rrset)
    return target


def content(zone: Zone) -> set[tuple[dns.name.Name, int, dns.rdata.Rdata]]:
    return {(rrset.name, rrset.ttl, rd) for rrset in zone.rrsets() for rd in rrset}


def dns_content(target: dns.zone.Zone) -> set[tuple[dns.name.Name, int, dns.rdata.Rdata]]:
    return set(target.iterate_rdatas())


def receive(
    wires: Iterable[bytes],
    query: dns.message.Message,
    target: dns.zone.Zone,
    *,
    udp: bool = False,
) -> list[dns.message.Message]:
    """Feed the messages to dnspython's inbound transfer, as dns.query.inbound_xfr does: each
    message parsed with the query's key, MAC and the running TSIG context, checked to answer the
    query, and processed; the transfer must end exactly at the last message."""
    rdtype = query.question[0].rdtype
    serial = dns.xfr.extract_serial_from_query(query)
    messages = []
    with dns.xfr.Inbound(target, rdtype, serial, is_udp=udp) as inbound:
        tsig_ctx = None
        done = False
        for wire in wires:
            assert not done, "messages after the end of the transfer"
            r = dns.message.from_wire(
                wire,
                keyring=query.keyring,
                request_mac=query.mac,
                xfr=True,
                tsig_ctx=tsig_ctx,
                multi=not udp,
                one_rr_per_rrset=rdtype == IXFR,
            )
            assert query.is_response(r, xfr_continuation=bool(messages))
            messages.append(r)
            done = inbound.process_message(r)
            tsig_ctx = r.tsig_ctx
        assert done, "the transfer did not end"
    return messages


def answer_types(messages: list[dns.message.Message]) -> list[int]:
    return [rrset.rdtype for m in messages for rrset in m.answer for _ in rrset]


def soa_serials(messages: list[dns.message.Message]) -> list[int]:
    return [
        rd.serial for m in messages for rrset in m.answer if rrset.rdtype == SOA for rd in rrset
    ]


# -- AXFR ------------------------------------------------------------------------------------------


def test_axfr_small_zone_is_one_message_soa_first_and_last():
    zone = make_zone(7, 'www A 192.0.2.80\nwww AAAA 2001:db8::80\ntxt TXT "a" "b"\n')
    q, server_q = make_query(AXFR)
    wires = list(axfr_messages(zone, server_q))
    assert len(wires) == 1
    target = to_dns_zone(None)
    (m,) = receive(wires, q, target)
    assert m.flags & dns.flags.AA and m.flags & dns.flags.QR
    assert m.id == q.id and m.rcode() == 0
    assert [(r.name, r.rdtype) for r in m.question] == [(ORIGIN, AXFR)]
    assert m.answer[0].rdtype == SOA and m.answer[-1].rdtype == SOA
    assert answer_types([m]).count(SOA) == 2
    assert dns_content(target) == content(zone)
    assert m.edns < 0, "no OPT in reply to a query without EDNS"


def test_axfr_uses_name_compression():
    zone = make_zone(1, hosts(200))
    _, server_q = make_query(AXFR)
    (wire,) = axfr_messages(zone, server_q)
    # Uncompressed, every owner would repeat "example." (9 bytes) and more.
    out = io.BytesIO()
    for rrset in zone.rrsets():
        rrset.to_wire(out)  # no compression table: names in full
    plain = len(out.getvalue())
    assert len(wire) < plain * 0.8


@pytest.fixture(scope="module")
def big_zone() -> Zone:
    """20,000 records: several 64 KiB messages (parsed once, it takes a second)."""
    return make_zone(2024010101, hosts(20_000))


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sha512"])
def test_axfr_big_zone_split_and_every_message_signed(algorithm: str, big_zone: Zone):
    zone = big_zone
    keys = keyring(algorithm)
    q, server_q = make_query(AXFR, keys=keys, edns=True)
    assert server_q.had_tsig
    wires = list(axfr_messages(zone, server_q, now=NOW))
    assert len(wires) >= 6
    assert all(len(w) <= 65535 for w in wires)
    # Greedy packing: only the last message may be much short of the limit.
    assert all(len(w) > 65535 - 200 for w in wires[:-1])
    target = to_dns_zone(None)
    messages = receive(wires, q, target)
    assert dns_content(target) == content(zone)
    for i, m in enumerate(messages):
        assert m.had_tsig and m.keyname == KEYNAME
        assert m.keyalgorithm == dns.name.from_text(algorithm)
        assert m.tsig[0].time_signed == NOW and m.tsig[0].original_id == q.id
        assert m.id == q.id and m.flags & dns.flags.AA
        assert len(m.question) == (1 if i == 0 else 0)
        assert m.edns == 0, "OPT in every message of a reply to an EDNS query"


def test_axfr_signature_depends_on_the_request_mac():
    zone = make_zone(1, hosts(10))
    keys = keyring()
    _, server_q = make_query(AXFR, keys=keys)
    other_q, _ = make_query(AXFR, keys=keys)  # another request: another MAC
    other_q.id = server_q.id
    wires = list(axfr_messages(zone, server_q, now=NOW))
    with pytest.raises(dns.tsig.BadSignature):
        receive(wires, other_q, to_dns_zone(None))


def signed_big_transfer() -> tuple[Zone, dns.message.Message, list[bytes]]:
    zone = make_zone(1, hosts(3000))
    keys = keyring()
    q, server_q = make_query(AXFR, keys=keys)
    wires = list(axfr_messages(zone, server_q, max_size=8192, now=NOW))
    assert len(wires) >= 5
    return zone, q, wires


def test_axfr_tampered_message_fails_verification():
    zone, q, wires = signed_big_transfer()
    receive(list(wires), q, to_dns_zone(None))  # the untouched stream verifies
    ip = bytes([10, 0, 5, 0])  # host1280's address, in the middle of the transfer
    index = next(i for i, w in enumerate(wires) if ip in w)
    assert 0 < index < len(wires) - 1
    tampered = list(wires)
    tampered[index] = wires[index].replace(ip, bytes([10, 0, 5, 1]), 1)
    target = to_dns_zone(None)
    with pytest.raises(dns.tsig.BadSignature):
        receive(tampered, q, target)
    assert not dns_content(target), "nothing of a failed transfer is committed"


def test_axfr_dropped_message_breaks_the_chain():
    _, q, wires = signed_big_transfer()
    with pytest.raises(dns.tsig.BadSignature):
        receive(wires[:2] + wires[3:], q, to_dns_zone(None))


def test_axfr_wrong_key_fails():
    zone = make_zone(1)
    _, server_q = make_query(AXFR, keys=keyring())
    client_q, _ = make_query(
        AXFR,
        keys=dns.tsigkeyring.from_text(
            {KEYNAME.to_text(): ("hmac-sha256", "b3RoZXJvdGhlcm90aGVyb3RoZXI=")}
        ),
    )
    client_q.id = server_q.id
    with pytest.raises(dns.tsig.BadSignature):
        receive(axfr_messages(zone, server_q, now=NOW), client_q, to_dns_zone(None))


def test_axfr_signing_time_outside_fudge_is_badtime():
    zone = make_zone(1)
    q, server_q = make_query(AXFR, keys=keyring())
    with pytest.raises(dns.tsig.BadTime):
        receive(axfr_messages(zone, server_q, now=NOW - 301), q, to_dns_zone(None))


def test_axfr_clock_is_read_per_message():
    """A function as `now` is read for each message, so a long transfer keeps current times."""
    zone = make_zone(1, hosts(3000))
    q, server_q = make_query(AXFR, keys=keyring())
    ticks = iter(range(NOW, NOW + 100))
    wires = list(axfr_messages(zone, server_q, max_size=8192, now=lambda: next(ticks)))
    messages = receive(wires, q, to_dns_zone(None))
    assert [m.tsig[0].time_signed for m in messages] == list(range(NOW, NOW + len(wires)))


def test_axfr_signed_query_needs_now_at_call_time():
    _, server_q = make_query(AXFR, keys=keyring())
    with pytest.raises(ValueError, match="now"):
        axfr_messages(make_zone(1), server_q)  # raised before the first message is asked for


def test_axfr_rrset_larger_than_a_message_is_split():
    txt = "".join(f'big TXT "record number {i} {"x" * 40}"\n' for i in range(300))
    zone = make_zone(3, txt)
    q, server_q = make_query(AXFR, keys=keyring(), edns=True)
    wires = list(axfr_messages(zone, server_q, max_size=2048, now=NOW))
    assert len(wires) >= 10 and all(len(w) <= 2048 for w in wires)
    target = to_dns_zone(None)
    receive(wires, q, target)
    assert dns_content(target) == content(zone)


def test_axfr_small_messages_stay_within_the_size_with_opt_and_tsig():
    zone = make_zone(3, hosts(500))
    q, server_q = make_query(AXFR, keys=keyring("hmac-sha512"), edns=True)
    wires = list(axfr_messages(zone, server_q, max_size=512, now=NOW))
    assert len(wires) > 20 and all(len(w) <= 512 for w in wires)
    target = to_dns_zone(None)
    receive(wires, q, target)
    assert dns_content(target) == content(zone)


def test_axfr_rejects_impossible_sizes():
    _, server_q = make_query(AXFR)
    with pytest.raises(ValueError):
        axfr_messages(make_zone(1), server_q, max_size=100)
    with pytest.raises(ValueError):
        axfr_messages(make_zone(1), server_q, max_size=70000)


# -- client_serial -------------------------------------------------------------------------------


def test_client_serial():
    _, axfr_q = make_query(AXFR)
    assert client_serial(axfr_q) is None
    _, ixfr_q = make_query(IXFR, serial=4294967295)
    assert client_serial(ixfr_q) == 4294967295


def bad_ixfr(authority: list[dns.rrset.RRset]) -> dns.message.Message:
    q = dns.message.make_query(ORIGIN, IXFR)
    q.authority = authority
    # One RR per RRset, or dnspython would merge two SOAs into one on reading (a singleton).
    return dns.message.from_wire(q.to_wire(), one_rr_per_rrset=True)


@pytest.mark.parametrize(
    "authority",
    [
        [],
        [
            dns.rrset.from_text("example.", 0, "IN", "SOA", ". . 1 0 0 0 0"),
            dns.rrset.from_text("example.", 0, "IN", "SOA", ". . 2 0 0 0 0"),
        ],
        [dns.rrset.from_text("other.", 0, "IN", "SOA", ". . 1 0 0 0 0")],
        [dns.rrset.from_text("example.", 0, "IN", "NS", "ns.example.")],
        [
            dns.rrset.from_text("example.", 0, "IN", "SOA", ". . 1 0 0 0 0"),
            dns.rrset.from_text("example.", 0, "IN", "NS", "ns.example."),
        ],
    ],
    ids=["none", "two-soa", "other-zone", "not-soa", "extra"],
)
def test_malformed_ixfr_query_is_a_formerr(authority):
    q = bad_ixfr(authority)
    with pytest.raises(BadIXFRQuery) as raised:
        client_serial(q)
    assert isinstance(raised.value, dns.exception.FormError)
    assert isinstance(raised.value, ValueError)
    with pytest.raises(BadIXFRQuery):  # before any message is asked for
        ixfr_messages(make_zone(1), None, q, tcp=True)


# -- IXFR ------------------------------------------------------------------------------------------


def versions(*bodies: str, first_serial: int = 10) -> list[Zone]:
    return [make_zone((first_serial + i) % 2**32, body) for i, body in enumerate(bodies)]


def chain(zones: list[Zone]) -> list[ZoneDiff]:
    return [zone_diff(a, b) for a, b in zip(zones, zones[1:], strict=False)]


def test_ixfr_up_to_date_gets_the_current_soa_alone():
    zone = make_zone(20, hosts(10))
    for serial in (20, 21):  # the same, or (oddly) newer than ours
        q, server_q = make_query(IXFR, serial=serial)
        wires = list(ixfr_messages(zone, [], server_q, tcp=True))
        assert len(wires) == 1
        m = dns.message.from_wire(wires[0])
        assert [(r.rdtype, len(r)) for r in m.answer] == [(SOA, 1)]
        assert m.answer[0][0].serial == 20 and m.flags & dns.flags.AA
    q, server_q = make_query(IXFR, serial=20)
    target = to_dns_zone(zone)
    receive(ixfr_messages(zone, None, server_q, tcp=True), q, target)
    assert dns_content(target) == content(zone)


def test_ixfr_unknown_serial_is_a_full_transfer_in_ixfr_form():
    old, new = versions(hosts(50), hosts(40, start=5) + "www A 192.0.2.80\n")
    q, server_q = make_query(IXFR, serial=old.serial, keys=keyring())
    wires = list(ixfr_messages(new, None, server_q, tcp=True, now=NOW))
    messages = receive(wires, q, to_dns_zone(old))
    assert soa_serials(messages) == [new.serial, new.serial]
    target = to_dns_zone(old)
    receive(wires, q, target)
    assert dns_content(target) == content(new)


def test_ixfr_one_difference():
    old, new = versions(
        hosts(30) + "www A 192.0.2.80\n",
        hosts(20, start=10) + "www 60 A 192.0.2.80\nwww AAAA 2001:db8::80\n",
    )
    q, server_q = make_query(IXFR, serial=old.serial, keys=keyring())
    wires = list(ixfr_messages(new, chain([old, new]), server_q, tcp=True, now=NOW))
    assert len(wires) == 1
    target = to_dns_zone(old)
    messages = receive(wires, q, target)
    assert soa_serials(messages) == [new.serial, old.serial, new.serial, new.serial]
    assert dns_content(target) == content(new)
    assert messages[0].had_tsig


@pytest.mark.parametrize("versioned", [False, True])
def test_ixfr_several_differences(versioned: bool):
    # Each step touches other records: condensing saves only the SOAs of the middle steps.
    zones = versions(
        hosts(10),
        hosts(10) + "a A 192.0.2.1\n",
        hosts(10) + "a A 192.0.2.1\nb A 192.0.2.2\n",
        hosts(8) + "a A 192.0.2.1\nb A 192.0.2.2\n",
    )
    diffs = chain(zones)
    q, server_q = make_query(IXFR, serial=zones[0].serial)
    target = to_dns_zone(zones[0], versioned=versioned)
    wires = ixfr_messages(zones[-1], diffs, server_q, tcp=True, condensed=False)
    messages = receive(wires, q, target)
    assert soa_serials(messages) == [13, 10, 11, 11, 12, 12, 13, 13]
    assert dns_content(target) == content(zones[-1])
    # Condensed (the default), the same change is one difference with fewer records.
    target = to_dns_zone(zones[0], versioned=versioned)
    condensed = receive(ixfr_messages(zones[-1], diffs, server_q, tcp=True), q, target)
    assert soa_serials(condensed) == [13, 10, 13, 13]
    assert len(answer_types(condensed)) < len(answer_types(messages))
    assert dns_content(target) == content(zones[-1])


def test_ixfr_condensed_when_smaller():
    # A record that comes and goes: one condensed difference is much shorter than the chain.
    flap = "flap A 192.0.2.99\n"
    zones = versions(hosts(20), hosts(20) + flap, hosts(20), hosts(20) + flap, hosts(21))
    diffs = chain(zones)
    q, server_q = make_query(IXFR, serial=zones[0].serial)
    target = to_dns_zone(zones[0])
    messages = receive(ixfr_messages(zones[-1], diffs, server_q, tcp=True), q, target)
    assert soa_serials(messages) == [14, 10, 14, 14]
    assert answer_types(messages).count(dns.rdatatype.A) == 1  # host20 added; flap cancelled
    assert dns_content(target) == content(zones[-1])


def test_ixfr_records_grouped_into_rrsets():
    # Condensed, additions come in the order they were made: multi .1, solo, multi .2, ...
    base = versions("")[0]
    zones = [base]
    for i in range(1, 5):
        zones.append(
            make_zone(
                10 + i,
                "".join(f"multi A 192.0.2.{j}\n" for j in range(1, i + 1))
                + "".join(f"solo{j} A 192.0.2.{j}\n" for j in range(1, i + 1)),
            )
        )
    q, server_q = make_query(IXFR, serial=10)
    (wire,) = ixfr_messages(zones[-1], chain(zones), server_q, tcp=True)
    m = dns.message.from_wire(wire, one_rr_per_rrset=True)
    owners = [r.name.to_text() for r in m.answer if r.rdtype != SOA]
    assert owners.count("multi.example.") == 4
    first = owners.index("multi.example.")
    assert owners[first : first + 4] == ["multi.example."] * 4, owners
    target = to_dns_zone(base)
    receive([wire], q, target)
    assert dns_content(target) == content(zones[-1])


def test_ixfr_big_difference_multi_message_signed():
    old, new = versions(hosts(4000), hosts(4000, start=2000))
    keys = keyring("hmac-sha512")
    q, server_q = make_query(IXFR, serial=old.serial, keys=keys, edns=True)
    wires = list(ixfr_messages(new, chain([old, new]), server_q, tcp=True, max_size=16384, now=NOW))
    assert len(wires) > 3 and all(len(w) <= 16384 for w in wires)
    target = to_dns_zone(old)
    messages = receive(wires, q, target)
    assert all(m.had_tsig for m in messages)
    assert dns_content(target) == content(new)


def test_ixfr_over_udp_that_fits():
    old, new = versions(hosts(5), hosts(5) + "www A 192.0.2.80\n")
    q, server_q = make_query(IXFR, serial=old.serial, keys=keyring())
    wires = list(ixfr_messages(new, chain([old, new]), server_q, tcp=False, now=NOW))
    assert len(wires) == 1 and len(wires[0]) <= 512
    target = to_dns_zone(old)
    messages = receive(wires, q, target, udp=True)
    assert soa_serials(messages) == [11, 10, 11, 11]
    assert dns_content(target) == content(new)


def test_ixfr_over_udp_that_does_not_fit_is_the_current_soa():
    old, new = versions(hosts(5), hosts(60))
    q, server_q = make_query(IXFR, serial=old.serial, keys=keyring())
    for diffs in (chain([old, new]), None):
        wires = list(ixfr_messages(new, diffs, server_q, tcp=False, udp_size=512, now=NOW))
        assert len(wires) == 1 and len(wires[0]) <= 512
        with pytest.raises(dns.xfr.UseTCP):
            receive(wires, q, to_dns_zone(old), udp=True)
        m = dns.message.from_wire(wires[0], keyring=q.keyring, request_mac=q.mac)
        assert m.had_tsig and not m.flags & dns.flags.TC
        assert [(r.rdtype, r[0].serial) for r in m.answer] == [(SOA, new.serial)]
    # A larger UDP size lets the same difference through.
    wires = list(ixfr_messages(new, chain([old, new]), server_q, tcp=False, udp_size=4096, now=NOW))
    target = to_dns_zone(old)
    receive(wires, q, target, udp=True)
    assert dns_content(target) == content(new)


def test_ixfr_across_serial_wrap_around():
    zones = versions(hosts(3), hosts(4), hosts(5), first_serial=2**32 - 2)
    assert [z.serial for z in zones] == [4294967294, 4294967295, 0]
    zones.append(make_zone(1, hosts(6)))
    q, server_q = make_query(IXFR, serial=4294967295)
    target = to_dns_zone(zones[1])
    messages = receive(ixfr_messages(zones[-1], chain(zones[1:]), server_q, tcp=True), q, target)
    assert soa_serials(messages)[0] == 1
    assert dns_content(target) == content(zones[-1])
    # 4294967295 is older than 1, not newer: not "up to date".
    wires = list(ixfr_messages(zones[-1], None, server_q, tcp=True))
    assert len(dns.message.from_wire(wires[0]).answer) > 1


def test_ixfr_rejects_a_broken_chain():
    zones = versions(hosts(3), hosts(4), hosts(5), hosts(6))
    _, server_q = make_query(IXFR, serial=10)
    diffs = chain(zones)
    for bad in ([], diffs[1:], diffs[:-1], [diffs[0], diffs[2]]):
        with pytest.raises(ValueError):
            ixfr_messages(zones[-1], bad, server_q, tcp=True)


def test_ixfr_result_matches_gitdns_apply_diff():
    """The receiver and gitdns.diff agree on what a difference does (TTL changes included)."""
    old, new = versions("a 60 A 192.0.2.1\na 60 A 192.0.2.2\n", "a 120 A 192.0.2.1\n")
    diffs = chain([old, new])
    assert content(apply_diff(old, diffs[0])) == content(new)
    q, server_q = make_query(IXFR, serial=old.serial)
    target = to_dns_zone(old)
    receive(ixfr_messages(new, diffs, server_q, tcp=True), q, target)
    assert dns_content(target) == content(new)


def test_messages_have_the_query_id_and_no_question_after_the_first():
    zone = make_zone(1, hosts(2000))
    _, server_q = make_query(AXFR)
    wires = list(axfr_messages(zone, server_q, max_size=4096))
    assert len(wires) > 3
    for i, wire in enumerate(wires):
        qid, flags, qdcount = struct.unpack_from("!HHH", wire)
        assert qid == server_q.id and flags & dns.flags.QR and flags & dns.flags.AA
        assert qdcount == (1 if i == 0 else 0)


def test_transfers_keep_the_case_of_names_in_the_data():
    # RFC 4343 4.1: compression must not swap one spelling for another (`www` for `WWW`).
    zone, _ = parse_zone(
        "$ORIGIN c.test.\n$TTL 60\n@ SOA ns h 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n"
        "alias3 CNAME WWW\nftp CNAME www\nWWW A 192.0.2.2\n", "c.test", "c.test")
    query = dns.message.make_query("c.test", "AXFR")
    targets = {}
    for wire in axfr_messages(zone, query):
        for rrset in dns.message.from_wire(wire).answer:
            if rrset.rdtype == dns.rdatatype.CNAME:
                targets[rrset.name.labels[0]] = rrset[0].target.labels[0]
    assert targets == {b"alias3": b"WWW", b"ftp": b"www"}
