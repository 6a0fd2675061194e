"""NOTIFY out: the targets of a zone change and the message that tells them (RFC 1996)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rdatatype

from gitdns.keys import KeyStore, make_key
from gitdns.notify import notify_message, notify_targets
from gitdns.zonefile import parse_zone

ZONE = """$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster 7 3600 600 86400 60
@ NS ns1
@ NS ns2
@ NS ns.elsewhere.test.
@ NS ns.nowhere.test.
ns1 A 192.0.2.1
ns2 A 192.0.2.2
ns2 AAAA 2001:db8::2
ns.elsewhere.test. A 198.51.100.7
"""


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def test_notify_message_is_a_notify_with_the_soa_and_signed():
    zone, _ = parse_zone(ZONE, "example.test")
    key = make_key(name("10.0.0.1.127.0.0.9._transfer.example.test"), dns.name.from_text(
        "hmac-sha256"), b"k" * 32)
    wire = notify_message(zone.origin, zone.soa, key).to_wire()
    parsed = dns.message.from_wire(wire, keyring={key.name: key.tsig})
    assert parsed.opcode() == dns.opcode.NOTIFY
    assert parsed.flags & dns.flags.AA and not parsed.flags & dns.flags.QR
    assert parsed.question[0].rdtype == dns.rdatatype.SOA
    assert parsed.answer[0][0].serial == 7
    assert parsed.had_tsig


def test_targets_are_ns_hosts_but_mname_key_secondaries_and_also_notify():
    zone, warnings = parse_zone(ZONE, "example.test")
    assert warnings == []
    assert zone.get(name("ns.elsewhere.test"), dns.rdatatype.A) is None  # never served
    key = make_key(name("10.0.0.1.127.0.0.9._transfer.example.test"),
                   dns.name.from_text("hmac-sha256"), b"k" * 32)
    other = make_key(name("10.0.0.1.127.0.0.8._transfer.other.test"),
                     dns.name.from_text("hmac-sha256"), b"k" * 32)
    keys = KeyStore({key.name: key, other.name: other})
    targets = notify_targets(zone, keys, [("127.0.0.5", 5300)], "yes")
    got = {(t.host, t.port, t.key.name if t.key else None) for t in targets}
    assert got == {
        ("192.0.2.2", 53, None),  # ns2: glue; ns1 is the SOA MNAME: not notified
        ("2001:db8::2", 53, None),
        ("198.51.100.7", 53, None),  # an out-of-zone host whose address the file gives
        ("127.0.0.9", 53, key.name),  # the secondary of a _transfer key, signed with it
        ("127.0.0.5", 5300, None),  # --also-notify
    }
    assert {(t.host, t.port) for t in notify_targets(zone, keys, [("127.0.0.5", 5300)],
                                                     "explicit")} == {("127.0.0.5", 5300)}
    assert notify_targets(zone, keys, [("127.0.0.5", 5300)], "no") == []


def _secondary_that_ignores(first: int, answer: bool = True):
    """A UDP socket on loopback that drops the first `first` NOTIFYs, then acknowledges."""
    import socket
    import threading

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1)
    seen = []

    def run():
        while True:
            try:
                data, addr = sock.recvfrom(4096)
            except OSError:  # closed, or nothing for a second
                return
            seen.append(data)
            if len(seen) > first and answer:
                query = dns.message.from_wire(data)
                sock.sendto(dns.message.make_response(query).to_wire(), addr)
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return sock, seen, thread


def test_notify_is_retransmitted_until_acknowledged():
    import asyncio

    from gitdns.net.client import send_notify
    from gitdns.notify import NotifyTarget

    zone, _ = parse_zone(ZONE, "example.test")
    sock, seen, thread = _secondary_that_ignores(2)
    try:
        target = NotifyTarget("127.0.0.1", sock.getsockname()[1], None, "test")
        ok = asyncio.run(send_notify(target, zone.origin, zone.soa, attempts=5,
                                     first_timeout=0.05))
        thread.join(5)
    finally:
        sock.close()
    assert ok and len(seen) == 3  # two tries lost, the third acknowledged
    assert all(dns.message.from_wire(d).opcode() == dns.opcode.NOTIFY for d in seen)


def test_notify_gives_up_after_a_bounded_number_of_tries():
    import asyncio

    from gitdns.net.client import send_notify
    from gitdns.notify import NotifyTarget

    zone, _ = parse_zone(ZONE, "example.test")
    sock, seen, thread = _secondary_that_ignores(0, answer=False)
    try:
        target = NotifyTarget("127.0.0.1", sock.getsockname()[1], None, "test")
        ok = asyncio.run(send_notify(target, zone.origin, zone.soa, attempts=3,
                                     first_timeout=0.02))
    finally:
        sock.close()
        thread.join(5)
    assert not ok and len(seen) == 3
