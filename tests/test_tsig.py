"""TSIG through the core: verification, RFC 8945 errors, signed answers, rights by key name."""

from __future__ import annotations

import time

import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig
import dns.update
import pytest

from gitdns.core import Deferred, Request, ServerState, handle
from gitdns.keys import KeyStore, make_key
from gitdns.store import ZoneSet
from gitdns.zonefile import parse_zone

ZONE = """$ORIGIN example.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 60
@ NS ns
ns A 192.0.2.1
"""
SECRET = b"k" * 32


def mkkey(name: str, algorithm=dns.tsig.HMAC_SHA256):
    return make_key(dns.name.from_text(name), algorithm, SECRET)


@pytest.fixture
def state():
    zone, _ = parse_zone(ZONE, "example.test")
    keys = [mkkey("xfr._transfer.example.test"), mkkey("up._update.example.test"),
            mkkey("n._notify.example.test"), mkkey("other._update.other.test"),
            mkkey("big._transfer.example.test", dns.tsig.HMAC_SHA512)]
    return ServerState(ZoneSet({zone.origin: zone}), KeyStore({k.name: k for k in keys}))


def signed(message, keyname: str, secret=SECRET, algorithm=dns.tsig.HMAC_SHA256):
    message.use_tsig(dns.tsig.Key(keyname, secret, algorithm))
    return message


def tsig_of(reply: bytes):
    return dns.message.from_wire(reply, keyring=lambda _m, _n: False).tsig[0]


def test_signed_query_gets_a_signed_answer(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "xfr._transfer.example.test")
    reply = handle(state, q.to_wire(), Request(), int(time.time()))
    r = dns.message.from_wire(reply, keyring={q.keyname: q.keyring}, request_mac=q.mac)
    assert r.had_tsig and r.answer[0][0].address == "192.0.2.1"


def test_unknown_key_is_badkey_unsigned(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "nobody._update.example.test")
    reply = handle(state, q.to_wire(), Request(), int(time.time()))
    assert reply[3] & 0xF == dns.rcode.NOTAUTH
    t = tsig_of(reply)
    assert t.error == dns.rcode.BADKEY and t.mac == b""


def test_wrong_secret_is_badsig_unsigned(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "xfr._transfer.example.test",
               secret=b"x" * 32)
    reply = handle(state, q.to_wire(), Request(), int(time.time()))
    t = tsig_of(reply)
    assert reply[3] & 0xF == dns.rcode.NOTAUTH and t.error == dns.rcode.BADSIG and t.mac == b""


def test_wrong_algorithm_for_the_key_is_badkey(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "xfr._transfer.example.test",
               algorithm=dns.tsig.HMAC_SHA1)
    t = tsig_of(handle(state, q.to_wire(), Request(), int(time.time())))
    assert t.error == dns.rcode.BADKEY


def test_truncated_mac_is_badtrunc_and_signed(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "big._transfer.example.test",
               algorithm=dns.tsig.HMAC_SHA512)
    wire = bytearray(q.to_wire())
    # Rewrite the TSIG rdata with a MAC cut to 16 of its 64 bytes.
    full = dns.message.from_wire(bytes(wire), keyring=lambda _m, _n: False)
    rd = full.tsig[0]
    cut = dns.rdtypes.ANY.TSIG.TSIG(rd.rdclass, rd.rdtype, rd.algorithm, rd.time_signed,
                                    rd.fudge, rd.mac[:16], rd.original_id, 0, b"")
    full.tsig = dns.rrset.from_rdata(full.tsig.name, 0, cut)
    full.want_tsig_sign = False
    reply = handle(state, full.to_wire(), Request(), int(time.time()))
    t = tsig_of(reply)
    assert reply[3] & 0xF == dns.rcode.NOTAUTH and t.error == dns.rcode.BADTRUNC
    assert len(t.mac) == 64  # signed with the key


def test_stale_signature_is_badtime_with_our_time(state):
    q = signed(dns.message.make_query("ns.example.test", "A"), "xfr._transfer.example.test")
    wire = q.to_wire()
    now = int(time.time()) + 3600  # our clock an hour ahead of the signer's
    real = time.time
    try:
        time.time = lambda: real() + 3600  # dnspython checks the time with time.time()
        reply = handle(state, wire, Request(), now)
    finally:
        time.time = real
    t = tsig_of(reply)
    assert reply[3] & 0xF == dns.rcode.NOTAUTH and t.error == dns.rcode.BADTIME
    assert int.from_bytes(t.other, "big") == now and len(t.mac) == 32


def test_transfer_rights(state):
    def xfr(keyname, tcp=True):
        q = dns.message.make_query("example.test", "AXFR")
        if keyname:
            signed(q, keyname)
        return handle(state, q.to_wire(), Request(tcp=tcp), int(time.time()))

    for keyname in ("xfr._transfer.example.test", "up._update.example.test"):
        out = xfr(keyname)
        assert isinstance(out, Deferred) and out.kind == "transfer", keyname
    for keyname in ("n._notify.example.test", "other._update.other.test", None):
        out = xfr(keyname)
        assert isinstance(out, bytes) and out[3] & 0xF == dns.rcode.REFUSED, keyname
    assert xfr("xfr._transfer.example.test", tcp=False)[3] & 0xF == dns.rcode.REFUSED


def test_notify_rights(state):
    def notify(keyname):
        q = dns.message.make_query("example.test", "SOA")
        q.set_opcode(dns.opcode.NOTIFY)
        if keyname:
            signed(q, keyname)
        return handle(state, q.to_wire(), Request(), int(time.time()))

    for keyname in ("n._notify.example.test", "xfr._transfer.example.test",
                    "up._update.example.test"):
        out = notify(keyname)
        assert isinstance(out, Deferred) and out.kind == "notify"
    assert notify(None)[3] & 0xF == dns.rcode.REFUSED
    assert notify("other._update.other.test")[3] & 0xF == dns.rcode.NOTAUTH


def test_update_rights(state):
    def update(keyname, zone="example.test"):
        u = dns.update.UpdateMessage(zone)
        u.add("new", 300, "A", "192.0.2.9")
        if keyname:
            signed(u, keyname)
        return handle(state, u.to_wire(), Request(), int(time.time()))

    out = update("up._update.example.test")
    assert isinstance(out, Deferred) and out.kind == "update"
    assert update(None)[3] & 0xF == dns.rcode.REFUSED
    assert update("xfr._transfer.example.test")[3] & 0xF == dns.rcode.NOTAUTH
    assert update("up._update.example.test", "other.test")[3] & 0xF == dns.rcode.NOTAUTH


def test_signed_soa_over_tcp_with_transfer_right_registers_a_watch(state):
    q = signed(dns.message.make_query("example.test", "SOA"), "xfr._transfer.example.test")
    out = handle(state, q.to_wire(), Request(tcp=True), int(time.time()))
    assert isinstance(out, Deferred) and out.kind == "watch" and out.reply
    udp = handle(state, q.to_wire(), Request(tcp=False), int(time.time()))
    assert isinstance(udp, bytes)  # over UDP there is no connection to keep
