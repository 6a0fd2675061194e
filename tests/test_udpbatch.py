"""The batched UDP edge (net/udpbatch.py) on loopback sockets: recvmmsg/sendmmsg and recvfrom."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from gitdns import core
from gitdns.fastpath import FastPath
from gitdns.net import udpbatch
from gitdns.net.server import ListenAddress, bind_sockets
from gitdns.store import ZoneSet
from gitdns.zonefile import parse_zone
from tests.interop.peers import free_port

MODES = ["mmsg", "recvfrom"] if udpbatch._MMSG else ["recvfrom"]
FAMILIES = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]

ZONE = "\n".join([
    "$ORIGIN example.test.",
    "$TTL 300",
    "@ IN SOA ns1 hostmaster 1 3600 600 86400 300",
    "@ IN NS ns1",
    "ns1 IN A 192.0.2.1",
    "www IN A 192.0.2.10",
    *(f"big IN A 198.51.100.{i}" for i in range(1, 61)),  # about 1 KB of answer
]) + "\n"


def _zones() -> ZoneSet:
    origin = dns.name.from_text("example.test.")
    zone, _ = parse_zone(ZONE, origin, "example.test")
    return ZoneSet({origin: zone})


class _Primaryish:
    """What the edge sees of a Primary: `.fast` (swapped at each version) and a handler."""

    def __init__(self, zones: ZoneSet):
        self.zones = zones
        self.fast = FastPath(zones)
        self.calls = 0

    def handle(self, wire: bytes, request: core.Request):
        self.calls += 1
        assert request.peer is not None and not request.tcp
        return core.handle(self.zones, wire, request)


@contextlib.contextmanager
def serving(handler, fast, mode: str, host: str):
    """An edge on a loop in a thread, on `host` and a free port; yields (host, port, edge)."""
    for _ in range(20):
        try:
            bound = bind_sockets([ListenAddress(host, free_port())])
            break
        except OSError:
            continue
    else:
        raise RuntimeError("no free port")
    (addr, udp, tcp), = bound
    tcp.close()
    loop = asyncio.new_event_loop()
    edge = udpbatch.UdpEdge(udp, handler, fast, mode, batch=8, max_batches=2)
    started = threading.Event()

    def run():
        edge.start(loop)
        loop.call_soon(started.set)
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(5)
        yield addr.host, addr.port, edge
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        assert not thread.is_alive()
        edge.close()
        loop.close()


def _client(family: int) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(5)
    return s


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host,family", FAMILIES)
def test_many_datagrams_from_many_ports(mode, host, family):
    """Every datagram gets its own reply at its own source port, in batches far bigger than one
    recvmmsg call; fast-path answers and handler answers alike."""
    p = _Primaryish(_zones())
    with serving(p.handle, p, mode, host) as (h, port, edge):
        clients = [_client(family) for _ in range(10)]
        try:
            sent = {}
            for c_i, c in enumerate(clients):
                for q_i in range(40):
                    name = "www.example.test." if q_i % 2 else f"nx{q_i}.example.test."
                    q = dns.message.make_query(name, "A", use_edns=False)
                    q.id = c_i * 100 + q_i
                    sent[q.id] = q
                    c.sendto(q.to_wire(), (h, port))
            for c_i, c in enumerate(clients):
                got = set()
                for _ in range(40):
                    data = c.recv(65535)
                    r = dns.message.from_wire(data)
                    assert r.id // 100 == c_i
                    assert r.question == sent[r.id].question
                    expected = dns.rcode.NOERROR if r.id % 2 else dns.rcode.NXDOMAIN
                    assert r.rcode() == expected
                    got.add(r.id)
                assert len(got) == 40
        finally:
            for c in clients:
                c.close()
        assert edge.dropped == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host,family", FAMILIES)
def test_big_replies_edns_and_truncation(mode, host, family):
    p = _Primaryish(_zones())
    with serving(p.handle, p, mode, host) as (h, port, _edge):
        q = dns.message.make_query("big.example.test.", "A", use_edns=0, payload=1232)
        r = dns.query.udp(q, h, port=port, timeout=5)
        assert len(r.to_wire()) > 512 and not r.flags & dns.flags.TC
        assert len(r.answer[0]) == 60
        q = dns.message.make_query("big.example.test.", "A", use_edns=False)
        r = dns.query.udp(q, h, port=port, timeout=5, ignore_trailing=True)
        assert r.flags & dns.flags.TC and not r.answer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host,family", FAMILIES)
def test_malformed_and_failing_requests_do_not_stop_it(mode, host, family):
    """Garbage, a response, a handler that raises, a fast path that raises: the edge goes on."""
    zones = _zones()

    class Exploding:
        fast = None

    boom = Exploding()

    class Fast:
        def answer(self, wire, tcp):
            if b"boomfast" in wire:
                raise RuntimeError("fast path broke")
            return None

    boom.fast = Fast()

    def handler(wire, request):
        if b"boomslow" in wire:
            raise RuntimeError("handler broke")
        return core.handle(zones, wire, request)

    with serving(handler, boom, mode, host) as (h, port, _edge):
        c = _client(family)
        try:
            c.sendto(b"\x12", (h, port))  # shorter than a header: silence
            response = dns.message.make_response(dns.message.make_query("www.example.test.", "A"))
            c.sendto(response.to_wire(), (h, port))  # a response: silence
            c.sendto(dns.message.make_query("boomfast.example.test.", "A").to_wire(), (h, port))
            c.sendto(dns.message.make_query("boomslow.example.test.", "A").to_wire(), (h, port))
            c.sendto(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07broken", (h, port))
            q = dns.message.make_query("www.example.test.", "A", use_edns=False)
            c.sendto(q.to_wire(), (h, port))
            replies = [dns.message.from_wire(c.recv(65535), ignore_trailing=True)
                       for _ in range(3)]
        finally:
            c.close()
    by_id = {r.id: r for r in replies}
    assert by_id[0xABCD].rcode() == dns.rcode.FORMERR
    assert by_id[q.id].rcode() == dns.rcode.NOERROR and by_id[q.id].answer
    # the request whose fast path raised went on to the handler
    assert len(by_id) == 3


@pytest.mark.parametrize("mode", MODES)
def test_awaitable_and_list_replies(mode):
    """A reply that completes later is sent then; of a list only the first message goes."""
    zones = _zones()

    async def later(wire, request):
        await asyncio.sleep(0)
        return [core.handle(zones, wire, request), b"second message never sent"]

    def handler(wire, request):
        if b"\x05later" in wire:
            return later(wire, request)
        return [core.handle(zones, wire, request), b"never sent either"]

    with serving(handler, None, mode, "127.0.0.1") as (h, port, _edge):
        c = _client(socket.AF_INET)
        try:
            q1 = dns.message.make_query("later.example.test.", "A")
            q2 = dns.message.make_query("www.example.test.", "A")
            c.sendto(q1.to_wire(), (h, port))
            c.sendto(q2.to_wire(), (h, port))
            replies = {}
            for _ in range(2):
                r = dns.message.from_wire(c.recv(65535))
                replies[r.id] = r
            c.settimeout(0.3)
            with pytest.raises(TimeoutError):
                c.recv(65535)
        finally:
            c.close()
    assert replies[q1.id].rcode() == dns.rcode.NXDOMAIN
    assert replies[q2.id].answer


def test_decode_address_both_families():
    a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        a.bind(("::1", 0))
        port = a.getsockname()[1]
    finally:
        a.close()
    name6 = (socket.AF_INET6.to_bytes(2, "little") + port.to_bytes(2, "big") + bytes(4)
             + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    assert udpbatch.decode_address(name6) == ("::1", port, 0, 0)
    name4 = (socket.AF_INET.to_bytes(2, "little") + (5353).to_bytes(2, "big")
             + socket.inet_pton(socket.AF_INET, "127.0.0.2") + bytes(8))
    assert udpbatch.decode_address(name4) == ("127.0.0.2", 5353)


def test_mode_from_environment(monkeypatch):
    monkeypatch.setenv("GITDNS_UDP", "protocol")
    assert udpbatch.default_mode() == "protocol"
    monkeypatch.setenv("GITDNS_UDP", "recvfrom")
    assert udpbatch.default_mode() == "recvfrom"
    monkeypatch.delenv("GITDNS_UDP")
    assert udpbatch.default_mode() == ("mmsg" if udpbatch._MMSG else "recvfrom")
