"""UDP and TCP listeners (RFC 1035 4.2, RFC 7766) around a bytes-in, bytes-out handler.

Rules this module keeps:
- The handler is called once per DNS message; it returns the reply, None for silence, or an
  awaitable of either (for requests that wait on git). An exception in it is logged and the
  server goes on; a client can never stop it.
- TCP: several pipelined queries per connection, answered as they complete, an idle timeout,
  and frames larger than a DNS message are refused by closing the connection.
- UDP is read and answered in batches (udpbatch.py: recvmmsg/sendmmsg, or a recvfrom loop);
  asyncio's DatagramProtocol (`_UdpProtocol`) stays for comparison: `udp_mode="protocol"` or
  the environment's GITDNS_UDP=protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gitdns.core import Request
from gitdns.net.udpbatch import UdpEdge, default_mode

log = logging.getLogger("gitdns.net")

Reply = bytes | list[bytes] | None  # a list: several messages (a zone transfer over TCP)
Handler = Callable[[bytes, Request], "Reply | Awaitable[Reply]"]
TCP_IDLE_TIMEOUT = 10.0  # RFC 7766 6.2.3 suggests seconds, not minutes
TCP_MAX_PENDING = 64  # outstanding queries per connection before we stop reading


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """`127.0.0.1`, `127.0.0.1:5300`, `[::1]:5300`, `::1`, `:5300` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    else:
        host, port = text, default_port
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int = 53) -> ListenAddress:
        """`127.0.0.1:5353`, `[::1]:5353`, `::`, `0.0.0.0`, `:5353` (all addresses)."""
        host, port = split_host_port(text, default_port)
        host = host or "0.0.0.0"
        socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)  # raises on a bad address
        return cls(host, port)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _bound_socket(addr: ListenAddress, kind: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(addr.family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            # [::] and 0.0.0.0 are separate listeners, as BIND and Knot do it.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((addr.host, addr.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_sockets(
    addrs: list[ListenAddress], reuse_port: bool = False
) -> list[tuple[ListenAddress, socket.socket, socket.socket]]:
    """UDP and TCP sockets for every address, bound now (so errors show before serving)."""
    bound = []
    try:
        for addr in addrs:
            udp = _bound_socket(addr, socket.SOCK_DGRAM, reuse_port)
            try:
                tcp = _bound_socket(addr, socket.SOCK_STREAM, reuse_port)
            except OSError:
                udp.close()
                raise
            tcp.listen(1024)
            bound.append((addr, udp, tcp))
    except OSError:
        for _a, u, t in bound:
            u.close()
            t.close()
        raise
    return bound


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler, fast):
        self.handler = handler
        self.fast = fast  # an object whose `.fast.answer(wire, tcp)` may answer first, or None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if self.fast is not None:  # the hot path: no Request built, no handler call
            try:
                reply = self.fast.fast.answer(data, False)
            except Exception:
                log.exception("error in the fast path for a UDP message from %s", addr[0])
                reply = None
            if reply is not None:
                self.transport.sendto(reply, addr)
                return
        try:
            reply = self.handler(data, Request(tcp=False, peer=addr[:2]))
        except Exception:
            log.exception("error answering a UDP message from %s", addr[0])
            return
        if reply is None:
            return
        if isinstance(reply, bytes):
            self.transport.sendto(reply, addr)
        elif isinstance(reply, list):
            for message in reply[:1]:  # one datagram per request over UDP
                self.transport.sendto(message, addr)
        elif inspect.isawaitable(reply):
            asyncio.ensure_future(self._send_later(reply, addr))

    async def _send_later(self, reply: Awaitable[Reply], addr) -> None:
        try:
            data = await reply
        except Exception:
            log.exception("error answering a UDP message from %s", addr[0])
            return
        if isinstance(data, list):
            data = data[0] if data else None
        if data is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, idle_timeout: float, connections: set):
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.connections = connections
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.pending = 0
        self.paused = False
        self.persistent = False  # a hidden secondary's connection: never closed for idleness

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[:2] if peer else None
        self.connections.add(self)
        self._arm_timer()

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        if self.timer:
            self.timer.cancel()
        self.transport = None

    def _arm_timer(self) -> None:
        if self.timer:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.idle_timeout, self._idle)

    def _idle(self) -> None:
        if self.transport is not None and self.pending == 0 and not self.persistent:
            self.transport.close()
        elif self.transport is not None:
            self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._arm_timer()
        buf = self.buffer
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if size < 12:  # not even a header: RFC 7766 lets us close
                self.close()
                return
            if len(buf) < 2 + size:
                break
            message = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            self._dispatch(message)
            if self.transport is None:
                return

    def _dispatch(self, message: bytes) -> None:
        request = Request(tcp=True, peer=self.peer, connection=self)
        try:
            reply = self.handler(message, request)
        except Exception:
            log.exception("error answering a TCP message from %s", self.peer)
            return
        if reply is None:
            return
        if isinstance(reply, (bytes, list)):
            self.send(reply)
        elif inspect.isawaitable(reply):
            self.pending += 1
            if self.pending >= TCP_MAX_PENDING and not self.paused and self.transport:
                self.transport.pause_reading()
                self.paused = True
            asyncio.ensure_future(self._send_later(reply))

    async def _send_later(self, reply: Awaitable[Reply]) -> None:
        try:
            data = await reply
        except Exception:
            log.exception("error answering a TCP message from %s", self.peer)
            data = None
        finally:
            self.pending -= 1
            if self.paused and self.pending < TCP_MAX_PENDING and self.transport:
                self.transport.resume_reading()
                self.paused = False
        if data is not None:
            self.send(data)

    def send(self, data: bytes | list[bytes]) -> None:
        """Send DNS messages, length-prefixed; also used to push NOTIFY to hidden secondaries."""
        if self.transport is None or self.transport.is_closing():
            return
        for message in [data] if isinstance(data, bytes) else data:
            self.transport.write(len(message).to_bytes(2, "big") + message)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class DnsServer:
    """Serves `handler` on UDP and TCP at every address given."""

    def __init__(
        self,
        handler: Handler,
        addrs: list[ListenAddress],
        idle_timeout: float = TCP_IDLE_TIMEOUT,
        reuse_port: bool = False,
        fast=None,
        udp_mode: str | None = None,
    ):
        self.handler = handler
        self.fast = fast
        self.udp_mode = udp_mode or default_mode()  # "mmsg", "recvfrom" or "protocol"
        self.addrs = addrs
        self.idle_timeout = idle_timeout
        self.reuse_port = reuse_port
        self.connections: set[_TcpProtocol] = set()
        self._transports: list = []
        self._edges: list[UdpEdge] = []
        self._servers: list[asyncio.base_events.Server] = []

    async def start(self, sockets=None) -> None:
        loop = asyncio.get_running_loop()
        bound = sockets if sockets is not None else bind_sockets(self.addrs, self.reuse_port)
        for addr, udp, tcp in bound:
            if self.udp_mode == "protocol":
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self.handler, self.fast), sock=udp
                )
                self._transports.append(transport)
            else:
                edge = UdpEdge(udp, self.handler, self.fast, self.udp_mode)
                edge.start(loop)
                self._edges.append(edge)
            server = await loop.create_server(
                lambda: _TcpProtocol(self.handler, self.idle_timeout, self.connections), sock=tcp
            )
            self._servers.append(server)
            log.info("listening on %s (UDP and TCP; UDP edge: %s)", addr, self.udp_mode)

    async def stop(self) -> None:
        for transport in self._transports:
            transport.close()
        for edge in self._edges:
            edge.close()
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except TimeoutError:
                pass
        self._transports.clear()
        self._edges.clear()
        self._servers.clear()
