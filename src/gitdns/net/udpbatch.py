"""The UDP edge: datagrams read and answered in batches, on the asyncio loop (issue 3).

One wakeup of the loop (``loop.add_reader`` on a non-blocking socket) reads up to BATCH
datagrams with one ``recvmmsg`` call (Linux, through ctypes), answers each (the fast path first,
then the handler), and sends the replies with one ``sendmmsg`` call; it repeats while batches
come full, at most MAX_BATCHES times, so other work on the loop still gets its turn. Where
``recvmmsg`` is missing the same loop drains the socket with non-blocking ``recvfrom`` and
answers with ``sendto``.

Rules this module keeps (they are the rules of asyncio's DatagramProtocol path in server.py,
which stays selectable: ``GITDNS_UDP=protocol``):
- Every datagram is one request: `fast.fast.answer(wire, False)` first when `fast` is given,
  then `handler(wire, Request(tcp=False, peer=(host, port)))`. An exception in either is logged
  and the next datagram is read; a client can never stop the server.
- A reply is bytes, a list (only its first message is sent: one datagram per request), None
  (silence), or an awaitable of those, sent when it completes (while the edge is open).
- Replies go out in arrival order; a reply that cannot be sent (the socket's buffer is full, the
  address refused) is dropped and logged at debug level, as UDP may.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import inspect
import logging
import mmap
import os
import socket
import struct
import sys
from collections.abc import Awaitable

from gitdns.core import Request

log = logging.getLogger("gitdns.net")

BATCH = 64  # datagrams per recvmmsg call
MAX_BATCHES = 8  # recvmmsg calls per wakeup of the loop, at most
SLOT = 65536  # bytes per datagram buffer: any UDP payload fits
NAME = 128  # bytes per address buffer (sockaddr_storage)
MODES = ("mmsg", "recvfrom", "protocol")


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_HDR = ctypes.sizeof(_MMsgHdr)
_IOV = ctypes.sizeof(_IoVec)
_PTR = ctypes.sizeof(ctypes.c_void_p)
# Offsets in units of the fields' own sizes, for memoryview access in the hot loop.
_NAME_AT = _MsgHdr.msg_name.offset // _PTR
_LEN_AT = _MMsgHdr.msg_len.offset // 4
_IOVLEN_AT = _IoVec.iov_len.offset // _PTR
_PTR_FMT = "Q" if _PTR == 8 else "I"


def _libc_mmsg():
    """(recvmmsg, sendmmsg) from the C library, or None where there are none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return recv, send


_MMSG = _libc_mmsg()


def default_mode() -> str:
    """`GITDNS_UDP` (mmsg, recvfrom or protocol) or the best this system has."""
    mode = os.environ.get("GITDNS_UDP", "").strip().lower()
    if mode in MODES:
        return mode if mode != "mmsg" or _MMSG else "recvfrom"
    if mode:
        log.warning("GITDNS_UDP=%s is none of %s; using the default", mode, ", ".join(MODES))
    return "mmsg" if _MMSG else "recvfrom"


def decode_address(name: bytes | memoryview) -> tuple:
    """A sockaddr_in or sockaddr_in6 as Python gives addresses: (host, port[, flow, scope])."""
    family = struct.unpack_from("=H", name)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, bytes(name[4:8])), int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        flow = int.from_bytes(name[4:8], "big")
        scope = struct.unpack_from("=I", name, 24)[0]
        host = socket.inet_ntop(socket.AF_INET6, bytes(name[8:24]))
        return host, int.from_bytes(name[2:4], "big"), flow, scope
    raise ValueError(f"address family {family}")


class _Buffers:
    """recvmmsg/sendmmsg vectors for one socket: BATCH slots in, BATCH slots out.

    The datagram buffers are anonymous mappings, so only the pages datagrams touch take memory.
    """

    def __init__(self, family: int, batch: int):
        self.batch = batch
        self.namelen = 16 if family == socket.AF_INET else 28
        self.rdata = mmap.mmap(-1, batch * SLOT)
        self.sdata = mmap.mmap(-1, batch * SLOT)
        self._rdata_c = ctypes.c_char.from_buffer(self.rdata)
        self._sdata_c = ctypes.c_char.from_buffer(self.sdata)
        self.names = ctypes.create_string_buffer(batch * NAME)
        self.riov = (_IoVec * batch)()
        self.siov = (_IoVec * batch)()
        self.rhdr = (_MMsgHdr * batch)()
        self.shdr = (_MMsgHdr * batch)()
        rbase, sbase = ctypes.addressof(self._rdata_c), ctypes.addressof(self._sdata_c)
        nbase = ctypes.addressof(self.names)
        self.name_addr = [nbase + i * NAME for i in range(batch)]
        for i in range(batch):
            self.riov[i].iov_base, self.riov[i].iov_len = rbase + i * SLOT, SLOT
            self.siov[i].iov_base, self.siov[i].iov_len = sbase + i * SLOT, 0
            h = self.rhdr[i].msg_hdr
            h.msg_name, h.msg_namelen = self.name_addr[i], NAME
            h.msg_iov, h.msg_iovlen = ctypes.addressof(self.riov[i]), 1
            h = self.shdr[i].msg_hdr
            h.msg_name, h.msg_namelen = self.name_addr[i], self.namelen
            h.msg_iov, h.msg_iovlen = ctypes.addressof(self.siov[i]), 1
        self.rhdr_addr = ctypes.addressof(self.rhdr)
        self.shdr_addr = ctypes.addressof(self.shdr)
        self.rlen = memoryview(self.rhdr).cast("B").cast("I")  # msg_len at i * _HDR/4 + _LEN_AT
        self.sptr = memoryview(self.shdr).cast("B").cast(_PTR_FMT)  # msg_name
        self.slen = memoryview(self.siov).cast("B").cast(_PTR_FMT)  # iov_len
        self.names_view = memoryview(self.names).cast("B")

    def close(self) -> None:
        for view in (self.rlen, self.sptr, self.slen, self.names_view):
            view.release()
        del self._rdata_c, self._sdata_c
        self.rdata.close()
        self.sdata.close()


class UdpEdge:
    """Serves one bound UDP socket on the running loop; `close()` stops it (and closes it)."""

    def __init__(self, sock: socket.socket, handler, fast=None, mode: str | None = None,
                 batch: int = BATCH, max_batches: int = MAX_BATCHES):
        self.sock = sock
        self.handler = handler
        self.fast = fast  # an object whose `.fast.answer(wire, tcp)` may answer first, or None
        self.mode = mode or default_mode()
        if self.mode == "mmsg" and _MMSG is None:
            self.mode = "recvfrom"
        if self.mode not in ("mmsg", "recvfrom"):
            raise ValueError(f"UdpEdge mode {self.mode!r}")
        self.max_batches = max_batches
        self.batch = batch
        self.fd = sock.fileno()
        self.closed = False
        self.dropped = 0  # replies that could not be sent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffers = _Buffers(sock.family, batch) if self.mode == "mmsg" else None
        sock.setblocking(False)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        reader = self._drain_mmsg if self.mode == "mmsg" else self._drain_recvfrom
        self._loop.add_reader(self.fd, reader)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
        self.sock.close()
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None

    # -- one wakeup ------------------------------------------------------------------------

    def _drain_mmsg(self) -> None:
        b = self._buffers
        if b is None:
            return
        recvmmsg, sendmmsg = _MMSG
        fast = self.fast.fast.answer if self.fast is not None else None
        fd, batch, rdata, sdata = self.fd, self.batch, b.rdata, b.sdata
        rlen, sptr, slen, name_addr = b.rlen, b.sptr, b.slen, b.name_addr
        hdr_words, hdr_ptrs, iov_ptrs = _HDR // 4, _HDR // _PTR, _IOV // _PTR
        for _ in range(self.max_batches):
            n = recvmmsg(fd, b.rhdr_addr, batch, socket.MSG_DONTWAIT, None)
            if n <= 0:
                if n < 0:
                    err = ctypes.get_errno()
                    if err not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                        log.debug("UDP receive error: %s", os.strerror(err))
                return
            out = 0
            for i in range(n):
                at = i * SLOT
                wire = rdata[at : at + rlen[i * hdr_words + _LEN_AT]]
                reply = None
                if fast is not None:
                    try:
                        reply = fast(wire, False)
                    except Exception:
                        log.exception("error in the fast path for a UDP message")
                if reply is None:
                    reply = self._slow(wire, b.names_view[i * NAME : (i + 1) * NAME])
                    if reply is None:
                        continue
                size = len(reply)
                if size > SLOT:
                    continue
                to = out * SLOT
                sdata[to : to + size] = reply
                slen[out * iov_ptrs + _IOVLEN_AT] = size
                sptr[out * hdr_ptrs + _NAME_AT] = name_addr[i]
                out += 1
            if out:
                self._send_batch(sendmmsg, b, out)
            if n < batch:
                return

    def _send_batch(self, sendmmsg, b: _Buffers, count: int) -> None:
        done = 0
        while done < count:
            sent = sendmmsg(self.fd, b.shdr_addr + done * _HDR, count - done, 0)
            if sent > 0:
                done += sent
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.dropped += count - done
                log.debug("UDP send buffer full: %d replies dropped", count - done)
                return
            self.dropped += 1
            log.debug("UDP send error: %s", os.strerror(err))
            done += 1  # that reply is lost; the rest of the batch goes on

    def _drain_recvfrom(self) -> None:
        fast = self.fast.fast.answer if self.fast is not None else None
        recvfrom, sendto = self.sock.recvfrom, self.sock.sendto
        for _ in range(self.max_batches * self.batch):
            try:
                wire, addr = recvfrom(SLOT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.debug("UDP receive error: %s", e)
                return
            reply = None
            if fast is not None:
                try:
                    reply = fast(wire, False)
                except Exception:
                    log.exception("error in the fast path for a UDP message from %s", addr[0])
            if reply is None:
                reply = self._handle(wire, addr)
                if reply is None:
                    continue
            try:
                sendto(reply, addr)
            except OSError as e:
                self.dropped += 1
                log.debug("UDP send to %s: %s", addr[0], e)

    # -- the handler -----------------------------------------------------------------------

    def _slow(self, wire: bytes, name: memoryview) -> bytes | None:
        try:
            addr = decode_address(name)
        except ValueError:
            return None
        return self._handle(wire, addr)

    def _handle(self, wire: bytes, addr: tuple) -> bytes | None:
        """The handler's reply to send now, if any; an awaitable one is sent when it is done."""
        try:
            reply = self.handler(wire, Request(tcp=False, peer=addr[:2]))
        except Exception:
            log.exception("error answering a UDP message from %s", addr[0])
            return None
        if reply is None or isinstance(reply, bytes):
            return reply
        if isinstance(reply, list):
            return reply[0] if reply else None  # one datagram per request over UDP
        if inspect.isawaitable(reply):
            asyncio.ensure_future(self._send_later(reply, addr))
        return None

    async def _send_later(self, reply: Awaitable, addr: tuple) -> None:
        try:
            data = await reply
        except Exception:
            log.exception("error answering a UDP message from %s", addr[0])
            return
        if isinstance(data, list):
            data = data[0] if data else None
        if data is None or self.closed:
            return
        try:
            self.sock.sendto(data, addr)
        except OSError as e:
            self.dropped += 1
            log.debug("UDP send to %s: %s", addr[0], e)
