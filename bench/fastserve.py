"""The fast path behind a minimal socket loop: `FastPath.answer` first, `core.handle` after.

    python -m bench.fastserve ZONEFILE ORIGIN --listen 127.0.0.1:PORT

Serves one master file (parsed by gitdns's own loader, no git) over UDP and TCP (pipelined,
RFC 7766 framing; the replies to the queries of one read go out in one write) on uvloop when it
is installed. The benchmark can run it beside `gitdns serve` (`--servers ...,gitdns-fast`) to
tell the cost of gitdns's listeners (net/server.py) from the cost of answering. Not a server to
deploy: no reload, no NOTIFY, no transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from pathlib import Path

from gitdns import core
from gitdns.fastpath import FastPath
from gitdns.store import ZoneSet
from gitdns.zonefile import parse_zone


class Answerer:
    def __init__(self, zones: ZoneSet, axfr: bool):
        self.fast = FastPath(zones)
        self.state = core.ServerState(zones, axfr_unauthenticated=axfr)

    def slow(self, wire: bytes, tcp: bool, peer) -> bytes | None:
        reply = core.handle(self.state, wire, core.Request(tcp=tcp, peer=peer))
        return reply if isinstance(reply, bytes) else None


class Udp(asyncio.DatagramProtocol):
    def __init__(self, answerer: Answerer):
        self.fast = answerer.fast.answer
        self.answerer = answerer
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        reply = self.fast(data, False)
        if reply is None:
            reply = self.answerer.slow(data, False, addr[:2])
            if reply is None:
                return
        self.transport.sendto(reply, addr)


class Tcp(asyncio.Protocol):
    def __init__(self, answerer: Answerer):
        self.fast = answerer.fast.answer
        self.answerer = answerer
        self.buffer = bytearray()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out = []
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            reply = self.fast(message, True)
            if reply is None:
                reply = self.answerer.slow(message, True, None)
                if reply is None:
                    continue
            out.append(len(reply).to_bytes(2, "big") + reply)
        if out:
            self.transport.write(b"".join(out))


async def serve(zone_file: Path, origin: str, host: str, port: int, axfr: bool) -> None:
    zone, _warnings = parse_zone(zone_file.read_text(), origin, str(zone_file))
    answerer = Answerer(ZoneSet({zone.origin: zone}), axfr)
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    udp.bind((host, port))
    udp.setblocking(False)
    transport, _ = await loop.create_datagram_endpoint(lambda: Udp(answerer), sock=udp)
    server = await loop.create_server(lambda: Tcp(answerer), host, port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    transport.close()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zone_file", type=Path)
    parser.add_argument("origin")
    parser.add_argument("--listen", default="127.0.0.1:5353")
    parser.add_argument("--axfr-unauthenticated", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    coro = serve(args.zone_file, args.origin, host, int(port), args.axfr_unauthenticated)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
