"""Outgoing DNS: NOTIFY to secondaries (RFC 1996 4), with retransmission and logs.

Rules this module keeps:
- Every wait is bounded: a NOTIFY is retransmitted with doubling timeouts and given up after
  NOTIFY_ATTEMPTS tries; the reply must match the id and, when signed, verify with our key.
- Nothing here blocks the event loop; a failure is logged, never raised to the server.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rrset

from gitdns.notify import NotifyTarget, notify_message

log = logging.getLogger("gitdns.notify")

NOTIFY_ATTEMPTS = 5
NOTIFY_FIRST_TIMEOUT = 1.0


class _OneShot(asyncio.DatagramProtocol):
    def __init__(self):
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error while notifying: %s", exc)


async def send_notify(
    target: NotifyTarget,
    origin: dns.name.Name,
    soa: dns.rrset.RRset | None,
    attempts: int = NOTIFY_ATTEMPTS,
    first_timeout: float = NOTIFY_FIRST_TIMEOUT,
) -> bool:
    """Tell `target` that `origin` changed; True once it acknowledged."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    message = notify_message(origin, soa, target.key)
    wire = message.to_wire()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _OneShot, family=family, remote_addr=(target.host, target.port)
        )
    except OSError as e:
        log.warning("NOTIFY %s to %s: cannot send: %s", origin, target, e)
        return False
    try:
        timeout = first_timeout
        for attempt in range(1, attempts + 1):
            transport.sendto(wire)
            deadline = loop.time() + timeout
            while (left := deadline - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(proto.replies.get(), left)
                except TimeoutError:
                    break
                verdict = _check_reply(data, message, target)
                if verdict is None:
                    continue  # not ours
                if verdict == "":
                    log.info("NOTIFY %s serial %s acknowledged by %s", origin,
                             soa[0].serial if soa else "?", target)
                    return True
                log.warning("NOTIFY %s to %s: %s", origin, target, verdict)
                return False
            log.debug("NOTIFY %s to %s: no answer to try %d", origin, target, attempt)
            timeout *= 2
        log.warning("NOTIFY %s to %s: no answer after %d tries; giving up", origin, target,
                    attempts)
        return False
    finally:
        transport.close()


def _check_reply(data: bytes, request: dns.message.Message, target: NotifyTarget) -> str | None:
    """None: not a reply to `request`; "": a good acknowledgement; else what is wrong."""
    try:
        if target.key is not None:
            reply = dns.message.from_wire(
                data, keyring={target.key.name: target.key.tsig}, request_mac=request.mac
            )
        else:
            reply = dns.message.from_wire(data)
    except dns.message.UnknownTSIGKey:
        return "the acknowledgement is not signed with our key"
    except dns.exception.DNSException as e:
        if len(data) >= 2 and int.from_bytes(data[:2], "big") != request.id:
            return None
        return f"bad acknowledgement ({type(e).__name__}: {e})"
    if reply.id != request.id:
        return None
    if target.key is not None and not reply.had_tsig:
        return "the acknowledgement is not signed"
    if reply.rcode() != dns.rcode.NOERROR:
        return f"answered {dns.rcode.to_text(reply.rcode())}"
    return ""
