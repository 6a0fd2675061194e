"""Inbound transfers (xfrin.py) against the primary's own core in memory: two sans-IO endpoints.

The primary side is `gitdns.core.handle` and `gitdns.transfer` exactly as `gitdns serve` runs
them; the secondary side is `InboundTransfer`. RFC 5936, RFC 1995, RFC 8945 5.3.1.
"""

from __future__ import annotations

import base64
import struct
import time

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from gitdns import core, transfer
from gitdns.diff import ZoneDiff, records, zone_diff
from gitdns.keys import KeyStore, parse_key_string
from gitdns.store import ZoneSet
from gitdns.xfrin import (
    BadTransferSignature,
    InboundTransfer,
    IxfrMismatch,
    TransferFailed,
    TransferRefused,
    primary_soa,
    soa_query,
)
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.test.")
KEY = parse_key_string("xfr._transfer.example.test:hmac-sha256:"
                       + base64.b64encode(b"k" * 32).decode())
WRONG = parse_key_string("xfr._transfer.example.test:hmac-sha256:"
                         + base64.b64encode(b"w" * 32).decode())
OTHER = parse_key_string("other._transfer.example.test:hmac-sha256:"
                         + base64.b64encode(b"o" * 32).decode())


def make_zone(serial: int, body: str = "") -> Zone:
    zone, _ = parse_zone(f"""$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster {serial} 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.80
{body}""", ORIGIN)
    return zone


def hosts(n: int, start: int = 0) -> str:
    return "".join(f"h{i} A 10.0.{i >> 8 & 255}.{i & 255}\n" for i in range(start, start + n))


def content(zone: Zone) -> set:
    return {(r.name, r.rdtype, r.ttl, frozenset(r)) for r in zone.rrsets()}


def primary(zone: Zone, wire: bytes, diffs: list[ZoneDiff] | None = None,
            max_size: int = 65535, keys=(KEY,)) -> list[bytes]:
    """What `gitdns serve` answers to `wire` over TCP: the messages of the reply."""
    state = core.ServerState(ZoneSet({zone.origin: zone}), KeyStore({k.name: k for k in keys}))
    out = core.handle(state, wire, core.Request(tcp=True), int(time.time()))
    if isinstance(out, bytes):
        return [out]
    assert isinstance(out, core.Deferred) and out.kind == "transfer", out
    if out.query.question[0].rdtype == dns.rdatatype.AXFR:
        return list(transfer.axfr_messages(zone, out.query, now=time.time(), max_size=max_size))
    return list(transfer.ixfr_messages(zone, diffs, out.query, tcp=True, now=time.time(),
                                       max_size=max_size))


def run(xfr: InboundTransfer, messages: list[bytes]):
    done = False
    for m in messages:
        assert not done
        done = xfr.receive(m)
    assert done
    return xfr.result()


def strip_tsig(wire: bytes) -> bytes:
    """The message without its TSIG record (the last one; its owner is written in full)."""
    pos = wire.rfind(KEY.name.to_wire())
    (arcount,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", arcount - 1) + wire[12:pos]


def test_axfr_multi_message_every_message_verified():
    zone = make_zone(1, hosts(3000))
    xfr = InboundTransfer(ORIGIN, KEY)
    assert xfr.kind == "AXFR" and xfr.query.had_tsig
    messages = primary(zone, xfr.query_wire, max_size=2048)
    assert len(messages) > 10
    result = run(xfr, messages)
    assert result.style == "AXFR" and result.messages == len(messages)
    assert result.zone is not None and content(result.zone) == content(zone)
    assert result.zone.serial == 1 and result.diff is None


def test_ixfr_applies_and_leaves_the_old_version_untouched():
    old = make_zone(1, hosts(500))
    new = make_zone(2, hosts(480, 20) + "new TXT \"hello\"\n")
    before = content(old)
    xfr = InboundTransfer(ORIGIN, KEY, old)
    assert xfr.kind == "IXFR"
    result = run(xfr, primary(new, xfr.query_wire, [zone_diff(old, new)], max_size=1024))
    assert result.style == "IXFR"
    assert content(result.zone) == content(new)
    assert content(old) == before  # copy-on-write: the served version never changes
    assert set(result.diff.deleted) == set(records(old)) - set(records(new))
    assert set(result.diff.added) == set(records(new)) - set(records(old))
    assert (result.diff.old_serial, result.diff.new_serial) == (1, 2)


def test_ixfr_chain_of_several_differences():
    v1, v2, v3 = make_zone(1), make_zone(2, "a A 192.0.2.10\n"), make_zone(3, "b A 192.0.2.11\n")
    xfr = InboundTransfer(ORIGIN, KEY, v1)
    messages = primary(v3, xfr.query_wire, [zone_diff(v1, v2), zone_diff(v2, v3)])
    result = run(xfr, messages)
    assert result.style == "IXFR" and content(result.zone) == content(v3)


def test_ixfr_answered_in_axfr_form_replaces_the_zone():
    old = make_zone(1, "gone A 192.0.2.9\n")
    new = make_zone(2, hosts(50))
    xfr = InboundTransfer(ORIGIN, KEY, old)
    result = run(xfr, primary(new, xfr.query_wire, None))  # no history: a full transfer
    assert result.style == "IXFR in AXFR form"
    assert content(result.zone) == content(new)


def test_ixfr_up_to_date():
    zone = make_zone(7)
    xfr = InboundTransfer(ORIGIN, KEY, zone)
    result = run(xfr, primary(zone, xfr.query_wire, []))
    assert result.zone is None and result.style == "up to date"


def test_ixfr_from_serial_zero():
    old, new = make_zone(0), make_zone(1, "x A 192.0.2.3\n")
    xfr = InboundTransfer(ORIGIN, KEY, old)
    assert transfer.client_serial(xfr.query) == 0
    result = run(xfr, primary(new, xfr.query_wire, [zone_diff(old, new)]))
    assert result.style == "IXFR" and content(result.zone) == content(new)


def test_ixfr_that_does_not_apply_asks_for_axfr():
    """Our copy at serial 1 differs from the primary's serial 1 (a primary that reset or
    rewrote history): deleting a record we do not have is IxfrMismatch, never a wrong zone."""
    ours = make_zone(1, "mine A 192.0.2.50\n")
    theirs_old = make_zone(1, "theirs A 192.0.2.60\n")
    new = make_zone(2, "other A 192.0.2.70\n")
    xfr = InboundTransfer(ORIGIN, KEY, ours)
    with pytest.raises(IxfrMismatch):
        run(xfr, primary(new, xfr.query_wire, [zone_diff(theirs_old, new)]))
    # The fallback: an AXFR gives the primary's zone.
    axfr = InboundTransfer(ORIGIN, KEY, ours, incremental=False)
    assert axfr.kind == "AXFR"
    assert content(run(axfr, primary(new, axfr.query_wire)).zone) == content(new)


def test_ixfr_removing_the_apex_ns_is_a_mismatch():
    old = make_zone(1)
    broken = ZoneDiff((ORIGIN, 300, old.soa[0]), (ORIGIN, 300, old.soa[0].replace(serial=2)),
                      tuple((n, t, rd) for n, t, rd in records(old)
                            if rd.rdtype == dns.rdatatype.NS), ())
    xfr = InboundTransfer(ORIGIN, KEY, old)
    messages = primary(make_zone(2), xfr.query_wire, [broken])
    with pytest.raises(IxfrMismatch, match="NS"):
        run(xfr, messages)


def test_tampered_message_is_rejected_and_nothing_is_produced():
    zone = make_zone(1, hosts(400))
    xfr = InboundTransfer(ORIGIN, KEY)
    messages = primary(zone, xfr.query_wire, max_size=1024)
    address = bytes([10, 0, 0, 7])
    j = next(k for k, m in enumerate(messages) if address in m)
    messages[j] = messages[j].replace(address, bytes([10, 6, 6, 6]), 1)
    with pytest.raises(BadTransferSignature):
        for m in messages:
            xfr.receive(m)
    with pytest.raises(TransferFailed):
        xfr.result()


def test_wrong_secret_the_primary_refuses_our_signature():
    xfr = InboundTransfer(ORIGIN, WRONG)
    (reply,) = primary(make_zone(1), xfr.query_wire)
    assert reply[3] & 0xF == dns.rcode.NOTAUTH
    with pytest.raises(BadTransferSignature, match="rejected our signature"):
        xfr.receive(reply)


def test_reply_signed_with_another_key_is_rejected():
    xfr = InboundTransfer(ORIGIN, KEY)
    forged = dns.message.from_wire(xfr.query_wire, keyring=KEY.tsig)
    forged.use_tsig(OTHER.tsig)
    wire = forged.to_wire()
    messages = primary(make_zone(1), wire, keys=(OTHER,))
    with pytest.raises(BadTransferSignature):
        xfr.receive(messages[0])


def test_unsigned_reply_or_unsigned_last_message_is_rejected():
    zone = make_zone(1, hosts(300))
    xfr = InboundTransfer(ORIGIN, KEY)
    messages = primary(zone, xfr.query_wire, max_size=1024)
    with pytest.raises(BadTransferSignature, match="not signed"):
        xfr.receive(strip_tsig(messages[0]))
    xfr = InboundTransfer(ORIGIN, KEY)
    messages = primary(zone, xfr.query_wire, max_size=1024)
    messages[-1] = strip_tsig(messages[-1])
    with pytest.raises(BadTransferSignature, match="last message"):
        run(xfr, messages)


def test_refused_transfer_and_unknown_zone():
    xfr = InboundTransfer(dns.name.from_text("other.test."), KEY)
    (reply,) = primary(make_zone(1), xfr.query_wire, keys=(KEY,))
    with pytest.raises(TransferRefused) as e:
        xfr.receive(reply)
    assert e.value.rcode == dns.rcode.NOTAUTH


def test_reply_to_another_query_is_rejected():
    xfr = InboundTransfer(ORIGIN, KEY)
    other = InboundTransfer(ORIGIN, KEY)
    messages = primary(make_zone(1), other.query_wire)
    if other.query.id == xfr.query.id:
        pytest.skip("the two random ids collided")
    with pytest.raises(TransferFailed):
        xfr.receive(messages[0])


def test_primary_soa_checks():
    zone = make_zone(42)
    state = core.ServerState(ZoneSet({ORIGIN: zone}), KeyStore({KEY.name: KEY}))
    query = soa_query(ORIGIN, KEY)
    assert not query.flags & dns.flags.RD
    reply = core.handle(state, query.to_wire(), core.Request(), int(time.time()))
    assert primary_soa(query, reply)[0].serial == 42
    # Unknown zone: REFUSED.
    query = soa_query(dns.name.from_text("nope.test."), KEY)
    reply = core.handle(state, query.to_wire(), core.Request(), int(time.time()))
    with pytest.raises(TransferRefused):
        primary_soa(query, reply)
    # The wrong secret: the primary answers BADSIG, unsigned.
    query = soa_query(ORIGIN, WRONG)
    reply = core.handle(state, query.to_wire(), core.Request(), int(time.time()))
    with pytest.raises(BadTransferSignature):
        primary_soa(query, reply)
    # An unsigned answer to a signed query.
    query = soa_query(ORIGIN, KEY)
    plain = core.handle(state, soa_query(ORIGIN, None).to_wire(), core.Request())
    with pytest.raises(BadTransferSignature):
        primary_soa(query, query.id.to_bytes(2, "big") + plain[2:])
    # Not authoritative (a referral or a cache): not a source of the zone.
    unsigned = soa_query(ORIGIN, None)
    response = dns.message.from_wire(core.handle(state, unsigned.to_wire(), core.Request()))
    response.flags &= ~dns.flags.AA
    with pytest.raises(TransferFailed, match="authoritatively"):
        primary_soa(unsigned, response.to_wire())
