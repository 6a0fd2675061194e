"""The hand-written UPDATE/NOTIFY acknowledgements are the bytes dnspython renders."""

from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.tsig
import dns.update
import pytest

from gitdns import core
from gitdns.ack import ack_wire
from gitdns.keys import KeyStore, make_key
from gitdns.tsig import parse_request

SECRET = b"0123456789abcdef0123456789abcdef"
KEYS = [
    ("upd._update.example.test", dns.tsig.HMAC_SHA256),  # shares the zone's labels
    ("UPD._Update.Example.Test", dns.tsig.HMAC_SHA512),  # and in another case
    ("other-key", dns.tsig.HMAC_SHA1),  # shares only the root
    ("sub.example.test", dns.tsig.HMAC_MD5),
]


def _dnspython_reply(query: dns.message.Message, rcode: int, aa: bool) -> bytes:
    response = core._response(query)
    response.set_rcode(rcode)
    if aa and rcode == dns.rcode.NOERROR:
        response.flags |= dns.flags.AA
    return core.render(response, query, core.Request(tcp=True))


def _signed_update(keyname: str, algorithm: dns.name.Name, zone: str = "example.test",
                   flags: int = 0) -> dns.message.Message:
    name = dns.name.from_text(keyname)
    key = make_key(name, algorithm, SECRET)
    message = dns.update.UpdateMessage(zone, keyring=key.tsig)
    message.add("host", 300, "A", "192.0.2.1")
    message.flags |= flags
    verified = parse_request(message.to_wire(), KeyStore({name: key}), one_rr_per_rrset=True)
    return verified.message


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.25)


@pytest.mark.parametrize("keyname,algorithm", KEYS)
@pytest.mark.parametrize("rcode", [dns.rcode.NOERROR, dns.rcode.REFUSED, dns.rcode.NOTAUTH,
                                   dns.rcode.SERVFAIL])
@pytest.mark.parametrize("zone", ["example.test", "EXAMPLE.test", "."])
def test_a_signed_ack_is_the_bytes_dnspython_renders(frozen_clock, keyname, algorithm, rcode,
                                                     zone):
    query = _signed_update(keyname, algorithm, zone, flags=dns.flags.CD)
    for aa in (True, False):
        mine = ack_wire(query, rcode, aa)
        assert mine is not None
        assert mine == _dnspython_reply(query, rcode, aa)
        # and a client verifies it
        reply = dns.message.from_wire(mine, keyring=query.keyring, request_mac=query.mac)
        assert reply.rcode() == rcode and reply.had_tsig


def test_an_unsigned_notify_ack_is_the_bytes_dnspython_renders():
    query = dns.message.make_query("example.test", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    query.flags = dns.flags.AA | (dns.opcode.NOTIFY << 11)
    query = dns.message.from_wire(query.to_wire())
    assert ack_wire(query, dns.rcode.NOERROR, True) == _dnspython_reply(
        query, dns.rcode.NOERROR, True)


def test_what_it_does_not_write_goes_to_dnspython():
    with_edns = dns.message.make_query("example.test", "SOA", use_edns=0)
    assert ack_wire(dns.message.from_wire(with_edns.to_wire()), 0, True) is None
    query = dns.message.from_wire(dns.message.make_query("example.test", "SOA").to_wire())
    assert ack_wire(query, dns.rcode.BADVERS, True) is None  # an extended rcode needs EDNS
    assert core.reply(query, dns.rcode.NOERROR) == _dnspython_reply(query, 0, True)
