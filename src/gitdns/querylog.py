"""`--log-queries`: one line per answered message, the same for the primary and the secondary."""

from __future__ import annotations

import logging

import dns.message
import dns.rcode
import dns.rdatatype

from gitdns.core import Request

qlog = logging.getLogger("gitdns.queries")


def log_query(wire: bytes, reply, request: Request, note: str = "") -> None:
    """`CLIENT PROTO NAME TYPE -> RCODE[ TC]`; only called when query logging is on."""
    who = request.peer[0] if request.peer else "?"
    proto = "TCP" if request.tcp else "UDP"
    try:
        q = dns.message.from_wire(wire, ignore_trailing=True, keyring=lambda _m, _n: False)
        question = f"{q.question[0].name} {dns.rdatatype.to_text(q.question[0].rdtype)}"
    except Exception:
        question = f"<{len(wire)} bytes, unparsable>"
    if isinstance(reply, bytes) and len(reply) >= 4:
        outcome = dns.rcode.to_text(reply[3] & 0xF) + (" TC" if reply[2] & 0x02 else "")
    else:
        outcome = "no reply"
    qlog.info("%s %s %s -> %s%s", who, proto, question, outcome, note)
