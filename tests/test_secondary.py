"""The secondary without sockets: key names to zones and primaries, timers on a fake clock,
NOTIFY acceptance, the copy on disk, and whole refreshes against the primary's core in memory
(the network edges of gitdns.secondary replaced by calls into `core.handle` + `transfer`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.update
import pytest

from gitdns import core, secondary, transfer
from gitdns.diff import zone_diff
from gitdns.keys import KeyStore, parse_key_string
from gitdns.net.server import ListenAddress
from gitdns.notify import notify_message
from gitdns.secondary import (
    ConfigError,
    Secondary,
    SecondaryConfig,
    Source,
    TimerBounds,
    ZoneStatus,
    judge_notify,
    load_saved,
    plan_sources,
    save_zone,
    soa_timers,
    zone_file_stem,
)
from gitdns.store import ZoneSet
from gitdns.xfrin import InboundTransfer
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.test.")
PRIMARY = "192.0.2.53"


def key(name: str, fill: bytes = b"k"):
    return parse_key_string(f"{name}:hmac-sha256:{base64.b64encode(fill * 32).decode()}")


XFR = key(f"{PRIMARY}.192.0.2.54._transfer.example.test")
PLAIN = key("plain._transfer.example.test", b"p")
ROOT = key("hidden._transfer.", b"r")
OTHER_ZONE = key("xfr._transfer.other.test", b"o")
UPD = key("personal._update.example.test", b"u")
OTHER_NOTIFY = key("ops._notify.other.test", b"n")


def make_zone(serial: int, body: str = "", refresh=3600, retry=600, expire=86400) -> Zone:
    zone, _ = parse_zone(f"""$ORIGIN example.test.
$TTL 300
@ SOA ns1 hostmaster {serial} {refresh} {retry} {expire} 60
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.80
{body}""", ORIGIN)
    return zone


def content(zone: Zone) -> set:
    return {(r.name, r.rdtype, r.ttl, frozenset(r)) for r in zone.rrsets()}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- key names to zones and primaries -----------------------------------------------------------


def test_plan_from_key_names():
    plan = plan_sources([XFR])
    assert plan.sources[ORIGIN].primary == (PRIMARY, 53) and plan.sources[ORIGIN].key == XFR
    assert plan.roots == []
    # --primary names the port (and overrides the address) for every zone.
    plan = plan_sources([XFR], primary=("127.0.0.1", 5300))
    assert plan.sources[ORIGIN].primary == ("127.0.0.1", 5300)
    # A key naming no primary needs --primary.
    with pytest.raises(ConfigError, match="no primary for zone example.test"):
        plan_sources([PLAIN])
    assert plan_sources([PLAIN], primary=("10.0.0.1", 53)).sources[ORIGIN].key == PLAIN
    # The key naming a primary is the one used with it, whatever the order.
    assert plan_sources([PLAIN, XFR]).sources[ORIGIN].key == XFR
    # Notify keys name no zone to follow; nothing to do is an error.
    with pytest.raises(ConfigError, match="no zone to follow"):
        plan_sources([key("ops._notify.example.test")])


def test_plan_root_keys_and_zones():
    plan = plan_sources([ROOT], primary=("127.0.0.1", 5300))
    assert plan.sources == {} and plan.roots[0].key == ROOT
    assert plan.roots[0].primary == ("127.0.0.1", 5300)
    with pytest.raises(ConfigError, match="root key"):
        plan_sources([ROOT])
    # --zone with a root key: followed from the start, with the root key.
    plan = plan_sources([ROOT], [ORIGIN], ("127.0.0.1", 5300))
    assert plan.sources[ORIGIN].key == ROOT
    # The most specific covering key wins over the root key.
    plan = plan_sources([ROOT, PLAIN], [ORIGIN], ("127.0.0.1", 5300))
    assert plan.sources[ORIGIN].key == PLAIN
    # --zone and --primary, a key covering something else only: unsigned.
    plan = plan_sources([OTHER_ZONE], [ORIGIN], ("127.0.0.1", 5300))
    assert plan.sources[ORIGIN].key is None
    assert set(plan.sources) == {ORIGIN, dns.name.from_text("other.test.")}
    # BIND or Knot key names grant nothing here, but sign what we ask the primary.
    bind = key("secondary-key")
    plan = plan_sources([bind], [ORIGIN], ("127.0.0.1", 5300))
    assert plan.sources[ORIGIN].key == bind
    s = {ORIGIN: ZoneStatus(plan.sources[ORIGIN])}
    assert judge_notify(s, [], ORIGIN, bind, "198.51.100.7")[:2] == (dns.rcode.NOERROR, "refresh")


# -- timers ------------------------------------------------------------------------------------


def test_soa_timers_are_bounded():
    b = TimerBounds()
    assert soa_timers(make_zone(1, refresh=3600, retry=600, expire=86400).soa, b) == \
        (3600, 600, 86400)
    assert soa_timers(make_zone(1, refresh=0, retry=0, expire=0).soa, b) == (2, 2, 4)
    huge = make_zone(1, refresh=2**31 - 1, retry=2**31 - 1, expire=2**31 - 1).soa
    assert soa_timers(huge, b) == (b.max_refresh, b.max_retry, b.max_expire)
    # expire is never shorter than refresh + retry (the zone would expire between two tries)
    assert soa_timers(make_zone(1, refresh=100, retry=50, expire=10).soa, b)[2] == 150


def test_refresh_retry_expire_on_a_fake_clock():
    clock = Clock()
    b = TimerBounds()
    st = ZoneStatus(Source(ORIGIN, (PRIMARY, 53), XFR))
    assert st.due(clock())  # no copy: ask at once
    st.failed(clock(), b, "no answer")
    assert st.next_check == clock() + 2  # no SOA yet: back off from 2 s ...
    for _ in range(20):
        st.failed(clock(), b, "no answer")
    assert st.next_check == clock() + b.max_no_copy_retry  # ... up to 5 minutes
    st.zone = make_zone(1, refresh=100, retry=30, expire=1000)
    st.succeeded(clock(), b)
    assert st.failures == 0 and st.next_check == clock() + 100
    assert st.expires_at(b) == clock() + 1000
    clock.now += 100
    assert st.due(clock())
    st.failed(clock(), b, "timeout")
    assert st.next_check == clock() + 30 and st.last_error == "timeout"
    clock.now += 899
    assert not st.is_expired(clock(), b)
    clock.now += 1
    assert st.is_expired(clock(), b)
    st.succeeded(clock(), b)  # the primary is back: the expire timer starts again
    assert not st.is_expired(clock(), b)
    st.notified(clock() - 5)
    assert st.due(clock())


# -- NOTIFY acceptance ---------------------------------------------------------------------------


def statuses(zone: Zone | None = None) -> dict:
    st = ZoneStatus(Source(ORIGIN, (PRIMARY, 53), XFR), zone=zone)
    return {ORIGIN: st}


def test_notify_rules():
    s = statuses(make_zone(5))
    ok = dns.rcode.NOERROR
    # Unsigned from the primary's address (BIND, Knot): refresh.
    assert judge_notify(s, [], ORIGIN, None, PRIMARY)[:2] == (ok, "refresh")
    assert judge_notify(s, [], ORIGIN, None, f"::ffff:{PRIMARY}")[:2] == (ok, "refresh")
    # Unsigned from anyone else: not acted on.
    assert judge_notify(s, [], ORIGIN, None, "198.51.100.7")[:2] == (dns.rcode.REFUSED, None)
    # Signed with a key that covers the zone: from the primary, wherever it comes from.
    assert judge_notify(s, [], ORIGIN, XFR, "198.51.100.7")[:2] == (ok, "refresh")
    assert judge_notify(s, [], ORIGIN, ROOT, "198.51.100.7")[:2] == (ok, "refresh")
    # Signed with one of our keys that does not cover it.
    assert judge_notify(s, [], ORIGIN, OTHER_ZONE, PRIMARY)[:2] == (dns.rcode.NOTAUTH, None)
    # A serial we have already: acknowledged, nothing to do; a newer one: refresh.
    assert judge_notify(s, [], ORIGIN, XFR, PRIMARY, 5)[:2] == (ok, None)
    assert judge_notify(s, [], ORIGIN, XFR, PRIMARY, 6)[:2] == (ok, "refresh")
    # Unknown zones: added only under a root key.
    other = dns.name.from_text("new.test.")
    root = Source(dns.name.root, (PRIMARY, 53), ROOT)
    assert judge_notify(s, [root], other, ROOT, PRIMARY)[:2] == (ok, "add")
    assert judge_notify(s, [root], other, None, PRIMARY)[:2] == (dns.rcode.NOTAUTH, None)
    assert judge_notify(s, [], other, ROOT, PRIMARY)[:2] == (dns.rcode.NOTAUTH, None)


# -- the copy on disk ------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path: Path):
    zone = make_zone(9, 'txt TXT "a b" "c"\nmx MX 10 mail.elsewhere.\n*.w A 192.0.2.9\n'
                        "long TXT " + '"' + "x" * 200 + '"\n')
    source = Source(ORIGIN, ("127.0.0.1", 5300), XFR)
    save_zone(tmp_path, zone, 1_800_000_123.5, source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example.test.json",
                                                           "example.test.zone"]
    text = (tmp_path / "example.test.zone").read_text()
    assert text.startswith("; example.test. serial 9") and "$ORIGIN example.test." in text
    meta = json.loads((tmp_path / "example.test.json").read_text())
    assert meta["serial"] == 9 and meta["refreshed"] == 1_800_000_123.5
    assert meta["key"] == XFR.name.to_text() and meta["primary"] == "127.0.0.1:5300"
    (saved,), problems = load_saved(tmp_path)
    assert problems == []
    assert content(saved.zone) == content(zone) and saved.refreshed == 1_800_000_123.5
    # A zone file that does not match its record is skipped, with the reason.
    (tmp_path / "example.test.zone").write_text(text.replace(" 9 ", " 8 ", 1))
    found, problems = load_saved(tmp_path)
    assert found == [] and "serial" in problems[0]


def test_zone_file_names():
    assert zone_file_stem(ORIGIN) == "example.test"
    assert zone_file_stem(dns.name.from_text("Ex-Ample.Test.")) == "ex-ample.test"
    assert zone_file_stem(dns.name.root) == "x-00"
    odd = zone_file_stem(dns.name.from_text(r"a\/b.test."))
    assert odd.startswith("x-") and "/" not in odd


# -- the daemon, its network edges in memory ---------------------------------------------------


class MemoryPrimary:
    """The primary's core and transfer code behind the secondary's network functions."""

    def __init__(self, zone: Zone, keys=(XFR, ROOT)):
        self.zone = zone
        self.diffs: list = []
        self.keys = KeyStore({k.name: k for k in keys})
        self.up = True
        self.tamper = False
        self.keep_history = True
        self.asked: list[str] = []

    def change(self, zone: Zone) -> None:
        self.diffs.append(zone_diff(self.zone, zone))
        self.zone = zone

    def _state(self):
        return core.ServerState(ZoneSet({self.zone.origin: self.zone}), self.keys)

    async def soa_exchange(self, host, port, wire, timeouts=()):
        if not self.up:
            raise TimeoutError()
        self.asked.append("SOA")
        return core.handle(self._state(), wire, core.Request(), int(time.time()))

    async def transfer_exchange(self, host, port, xfr: InboundTransfer, **kw):
        if not self.up:
            raise ConnectionRefusedError()
        self.asked.append(xfr.kind)
        out = core.handle(self._state(), xfr.query_wire, core.Request(tcp=True),
                          int(time.time()))
        if isinstance(out, bytes):
            xfr.receive(out)
            return
        if xfr.kind == "AXFR":
            messages = list(transfer.axfr_messages(self.zone, out.query, now=time.time()))
        else:
            serial = transfer.client_serial(out.query)
            chain = [d for d in self.diffs if d.old_serial == serial]
            diffs = self.diffs[self.diffs.index(chain[0]):] if chain and self.keep_history \
                else None
            messages = list(transfer.ixfr_messages(self.zone, diffs, out.query, tcp=True,
                                                   now=time.time()))
        if self.tamper:
            messages = [m.replace(b"\xc0\x00\x02\x63", b"\xc0\x00\x02\x64") for m in messages]
        for m in messages:
            if xfr.receive(m):
                return


@pytest.fixture
def net(monkeypatch):
    def install(primary: MemoryPrimary) -> MemoryPrimary:
        monkeypatch.setattr(secondary, "soa_exchange", primary.soa_exchange)
        monkeypatch.setattr(secondary, "transfer_exchange", primary.transfer_exchange)
        return primary
    return install


def make_secondary(tmp_path: Path, clock: Clock, keys=(XFR,), zones=(), **kw) -> Secondary:
    config = SecondaryConfig(keys=list(keys), data_dir=tmp_path / "data", zones=list(zones),
                             listen=[ListenAddress("127.0.0.1", 5399)], **kw)
    return Secondary(config, clock=clock)


def ask(sec: Secondary, name: str, rdtype: str = "A",
        peer: str = "127.0.0.1") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    out = sec.handle(query.to_wire(), core.Request(peer=(peer, 5000)))
    assert isinstance(out, bytes)
    return dns.message.from_wire(out)


def refresh(sec: Secondary, origin=ORIGIN) -> None:
    asyncio.run(sec.refresh(sec.status[origin]))


def test_axfr_first_ixfr_after_then_fallbacks(tmp_path, net, caplog):
    caplog.set_level(logging.INFO, "gitdns.secondary")
    clock = Clock()
    primary = net(MemoryPrimary(make_zone(1)))
    sec = make_secondary(tmp_path, clock)
    assert ask(sec, "www.example.test").rcode() == dns.rcode.SERVFAIL  # not transferred yet
    refresh(sec)
    assert primary.asked == ["SOA", "AXFR"]
    reply = ask(sec, "www.example.test")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    assert (tmp_path / "data" / "example.test.zone").exists()
    # Same serial: only the SOA query; the refresh time moves on.
    clock.now += 3600
    refresh(sec)
    assert primary.asked[2:] == ["SOA"]
    assert json.loads((tmp_path / "data" / "example.test.json").read_text())["refreshed"] == \
        clock.now
    # A change: IXFR.
    primary.change(make_zone(2, "new A 192.0.2.99\n"))
    refresh(sec)
    assert primary.asked[3:] == ["SOA", "IXFR"]
    assert ask(sec, "new.example.test").answer[0][0].address == "192.0.2.99"
    assert "IXFR serial 1 -> 2" in caplog.text
    # The primary lost its history: IXFR answered in AXFR form.
    primary.keep_history = False
    primary.change(make_zone(3, "other A 192.0.2.98\n"))
    refresh(sec)
    assert "IXFR in AXFR form serial 2 -> 3" in caplog.text
    assert ask(sec, "new.example.test").rcode() == dns.rcode.NXDOMAIN
    # Our copy and the primary's history disagree: IXFR does not apply, AXFR instead.
    primary.keep_history = True
    primary.diffs = [zone_diff(make_zone(3, "unknown A 192.0.2.1\n"), make_zone(4))]
    primary.zone = make_zone(4)
    refresh(sec)
    assert "falling back to AXFR" in caplog.text and primary.asked[-2:] == ["IXFR", "AXFR"]
    assert sec.store.zones[ORIGIN].serial == 4


def test_tampered_transfer_keeps_the_old_copy(tmp_path, net, caplog):
    clock = Clock()
    primary = net(MemoryPrimary(make_zone(1)))
    sec = make_secondary(tmp_path, clock)
    refresh(sec)
    saved = (tmp_path / "data" / "example.test.zone").read_text()
    primary.change(make_zone(2, "new A 192.0.2.99\n"))
    primary.tamper = True  # new A 192.0.2.99 -> .100 on the way
    refresh(sec)
    assert "signature does not verify" in caplog.text
    st = sec.status[ORIGIN]
    assert st.zone.serial == 1 and sec.store.zones[ORIGIN].serial == 1
    assert st.failures == 1 and st.next_check == clock.now + 600  # the SOA's retry
    assert (tmp_path / "data" / "example.test.zone").read_text() == saved
    assert ask(sec, "www.example.test").answer[0][0].address == "192.0.2.80"


def test_wrong_key_never_serves(tmp_path, net, caplog):
    net(MemoryPrimary(make_zone(1)))
    wrong = key(XFR.name.to_text(), b"w")
    sec = make_secondary(tmp_path, Clock(), keys=(wrong,))
    refresh(sec)
    assert "rejected our signature" in caplog.text
    assert ask(sec, "www.example.test").rcode() == dns.rcode.SERVFAIL
    assert not (tmp_path / "data" / "example.test.zone").exists()


def test_expire_then_servfail_then_back(tmp_path, net, caplog):
    clock = Clock()
    primary = net(MemoryPrimary(make_zone(1, refresh=10, retry=5, expire=60)))
    sec = make_secondary(tmp_path, clock)
    refresh(sec)
    primary.up = False
    for _ in range(11):
        clock.now += 5
        refresh(sec)
        sec.check_expiry(clock())
        assert ask(sec, "www.example.test").rcode() == dns.rcode.NOERROR
    clock.now += 5
    sec.check_expiry(clock())
    reply = ask(sec, "www.example.test")
    assert reply.rcode() == dns.rcode.SERVFAIL and not reply.flags & dns.flags.AA
    assert ask(sec, "example.test", "SOA").rcode() == dns.rcode.SERVFAIL
    assert ask(sec, "elsewhere.test").rcode() == dns.rcode.REFUSED
    assert "expired: no successful refresh from" in caplog.text
    assert "SOA expire 60 s" in caplog.text and "answering SERVFAIL" in caplog.text
    # A transfer out of an expired zone is not possible either.
    axfr = dns.message.make_query(ORIGIN, "AXFR")
    axfr.use_tsig(XFR.tsig)
    out = sec.handle(axfr.to_wire(), core.Request(tcp=True, peer=("127.0.0.1", 1)))
    assert dns.message.from_wire(out, keyring=XFR.tsig, request_mac=axfr.mac).rcode() == \
        dns.rcode.SERVFAIL
    primary.up = True
    refresh(sec)
    assert ask(sec, "www.example.test").rcode() == dns.rcode.NOERROR


def test_restart_serves_from_disk_until_expired(tmp_path, net, caplog):
    caplog.set_level(logging.INFO, "gitdns.secondary")
    clock = Clock()
    net(MemoryPrimary(make_zone(1, "x A 192.0.2.7\n", refresh=10, retry=5, expire=600)))
    first = make_secondary(tmp_path, clock)
    refresh(first)
    # A new process, the primary unreachable: the copy is served before any refresh.
    clock.now += 300
    again = make_secondary(tmp_path, clock)
    again.load_from_disk(clock())
    assert ask(again, "x.example.test").answer[0][0].address == "192.0.2.7"
    assert again.status[ORIGIN].due(clock())  # and the primary is asked at once
    assert "serving example.test. serial 1 from disk" in caplog.text
    # Too old: not served.
    clock.now += 301
    late = make_secondary(tmp_path, clock)
    late.load_from_disk(clock())
    assert ask(late, "x.example.test").rcode() == dns.rcode.SERVFAIL
    assert "expired: the copy on disk was last refreshed 601 s ago" in caplog.text


def notify_wire(origin=ORIGIN, k=None, serial=None) -> tuple[dns.message.Message, bytes]:
    soa = None
    if serial is not None:
        soa = dns.rrset.from_text(origin, 0, "IN", "SOA", f". . {serial} 0 0 0 0")
    message = notify_message(origin, soa, k)
    return message, message.to_wire()


def test_notify_through_handle(tmp_path, net):
    clock = Clock()
    net(MemoryPrimary(make_zone(1)))
    sec = make_secondary(tmp_path, clock, keys=(XFR, OTHER_NOTIFY))
    refresh(sec)
    st = sec.status[ORIGIN]
    assert st.next_check == clock.now + 3600

    def send(k=None, peer=PRIMARY, serial=None, origin=ORIGIN) -> int:
        message, wire = notify_wire(origin, k, serial)
        out = sec.handle(wire, core.Request(peer=(peer, 53)))
        reply = dns.message.from_wire(out, keyring=k.tsig if k else None,
                                      request_mac=message.mac)
        assert reply.opcode() == dns.opcode.NOTIFY and reply.id == message.id
        return reply.rcode()

    assert send(peer="198.51.100.1") == dns.rcode.REFUSED
    assert st.next_check == clock.now + 3600  # not acted on
    assert send(OTHER_NOTIFY) == dns.rcode.NOTAUTH
    assert send(XFR, serial=1) == dns.rcode.NOERROR
    assert st.next_check == clock.now + 3600  # serial 1 is what we have
    assert send(XFR, peer="198.51.100.1") == dns.rcode.NOERROR
    assert st.next_check == clock.now
    st.next_check = clock.now + 3600
    assert send(None, peer=PRIMARY, serial=2) == dns.rcode.NOERROR
    assert st.next_check == clock.now
    # A bad signature: NOTAUTH with the TSIG error, nothing done.
    st.next_check = clock.now + 3600
    _m, wire = notify_wire(ORIGIN, key(XFR.name.to_text(), b"x"))
    out = sec.handle(wire, core.Request(peer=(PRIMARY, 53)))
    assert out[3] & 0xF == dns.rcode.NOTAUTH and st.next_check == clock.now + 3600
    # A zone we do not follow.
    assert send(XFR, origin=dns.name.from_text("other.example.")) == dns.rcode.NOTAUTH


def test_root_key_notify_adds_the_zone(tmp_path, net):
    clock = Clock()
    net(MemoryPrimary(make_zone(3), keys=(ROOT,)))
    sec = make_secondary(tmp_path, clock, keys=(ROOT,), primary=("127.0.0.1", 5300))
    assert sec.status == {}
    message, wire = notify_wire(ORIGIN, ROOT, 3)
    out = sec.handle(wire, core.Request(tcp=True, peer=("127.0.0.1", 5300)))
    assert dns.message.from_wire(out, keyring=ROOT.tsig, request_mac=message.mac).rcode() == \
        dns.rcode.NOERROR
    st = sec.status[ORIGIN]
    assert st.source.discovered and st.source.key == ROOT and st.due(clock())
    refresh(sec)
    assert ask(sec, "www.example.test").rcode() == dns.rcode.NOERROR
    meta = json.loads((tmp_path / "data" / "example.test.json").read_text())
    assert meta["key"] == ROOT.name.to_text()
    # After a restart the discovered zone is served from disk too.
    again = make_secondary(tmp_path, clock, keys=(ROOT,), primary=("127.0.0.1", 5300))
    again.load_from_disk(clock())
    assert ask(again, "www.example.test").rcode() == dns.rcode.NOERROR


def test_transfer_out_to_a_downstream_secondary(tmp_path, net):
    """Chaining: a third endpoint transfers from the secondary, AXFR then IXFR."""
    primary = net(MemoryPrimary(make_zone(1)))
    sec = make_secondary(tmp_path, Clock())
    refresh(sec)

    def downstream(current):
        xfr = InboundTransfer(ORIGIN, XFR, current)
        out = sec.handle(xfr.query_wire, core.Request(tcp=True, peer=("127.0.0.1", 1)))
        messages = asyncio.run(out)
        for m in messages:
            if xfr.receive(m):
                break
        return xfr.result()

    first = downstream(None)
    assert first.style == "AXFR" and content(first.zone) == content(make_zone(1))
    primary.change(make_zone(2, "z A 192.0.2.2\n"))
    refresh(sec)
    second = downstream(first.zone)
    assert second.style == "IXFR"
    assert content(second.zone) == content(make_zone(2, "z A 192.0.2.2\n"))


def test_downstream_notify_targets(tmp_path):
    down = key(f"127.0.0.1.{'198.51.100.9'}._transfer.example.test", b"d")
    sec = make_secondary(tmp_path, Clock(), keys=(XFR, down), also_notify=[("127.0.0.1", 5301)])
    targets = {(t.host, t.port, t.key.name if t.key else None) for t in sec.downstream(ORIGIN)}
    # XFR names our primary and us as its secondary: not a target.
    assert targets == {("198.51.100.9", 53, down.name), ("127.0.0.1", 5301, None)}


def test_update_forwarding(tmp_path, monkeypatch):
    sec = make_secondary(tmp_path, Clock(), keys=(XFR,), primary=("127.0.0.1", 5300))
    seen = []

    async def fake_tcp_query(host, port, wire, timeout=10):
        seen.append((host, port, wire))
        request = dns.message.from_wire(wire, keyring=UPD.tsig)  # the signature still holds
        response = dns.message.make_response(request)
        return response.to_wire()

    monkeypatch.setattr(secondary, "tcp_query", fake_tcp_query)
    update = dns.update.UpdateMessage(ORIGIN, keyring=UPD.tsig)
    update.add("new", 300, "A", "192.0.2.1")
    wire = update.to_wire()
    out = asyncio.run(sec.handle(wire, core.Request(peer=("198.51.100.2", 1))))
    ((host, port, forwarded),) = seen
    assert (host, port) == ("127.0.0.1", 5300) and forwarded[2:] == wire[2:]
    reply = dns.message.from_wire(out, keyring=UPD.tsig, request_mac=update.mac)
    assert reply.id == update.id and reply.rcode() == dns.rcode.NOERROR
    # Unsigned: REFUSED here; a zone we do not follow: NOTAUTH.
    plain = dns.update.UpdateMessage(ORIGIN)
    plain.add("x", 300, "A", "192.0.2.1")
    assert sec.handle(plain.to_wire(), core.Request())[3] & 0xF == dns.rcode.REFUSED
    elsewhere = dns.update.UpdateMessage("other.example.", keyring=UPD.tsig)
    assert sec.handle(elsewhere.to_wire(), core.Request())[3] & 0xF == dns.rcode.NOTAUTH
    assert len(seen) == 1


def test_a_disk_that_cannot_be_written_does_not_stop_serving(tmp_path, net, caplog):
    net(MemoryPrimary(make_zone(1)))
    (tmp_path / "data").write_text("a file where the data directory should be")
    sec = make_secondary(tmp_path, Clock())
    refresh(sec)
    assert ask(sec, "www.example.test").rcode() == dns.rcode.NOERROR
    assert "cannot write the copy" in caplog.text
