"""The bare replies to UPDATE and NOTIFY (header, question, TSIG), written as bytes.

Why by hand: every update is acknowledged with such a reply, and dnspython's renderer (a
Message, a Renderer, a Name object made for every suffix of every name it writes) took about
160 us of the event loop's time per update, as much as parsing the update. Here it is one
header, the question copied, and the TSIG dnspython signs (`dns.tsig.sign`): about a third of
that. Anything else (EDNS, several questions, an extended rcode, a GSS-TSIG key) goes to
`core.render`; tests/test_ack.py compares the bytes with dnspython's.
"""

from __future__ import annotations

import struct
import time

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tsig

from gitdns.compactzone import name_wire

_HEADER = struct.Struct("!HHHHHH")
_QUESTION = struct.Struct("!HH")
_TSIG_HEAD = struct.Struct("!HHIH")  # type, class, TTL, rdata length
_KEEP = dns.flags.RD | dns.flags.CD | 0x7800  # copied from the query: RD, CD, opcode
FUDGE = 300  # dnspython's default, as make_response uses it


def ack_wire(query: dns.message.Message, rcode: int, aa: bool) -> bytes | None:
    """The reply `core.reply` would render, or None where this does not apply."""
    if query.edns >= 0 or rcode > 15 or len(query.question) != 1:
        return None
    flags = dns.flags.QR | (query.flags & _KEEP) | rcode
    if aa and rcode == 0:
        flags |= dns.flags.AA
    question = query.question[0]
    qname = question.name
    qwire = name_wire(qname) + _QUESTION.pack(question.rdtype, question.rdclass)
    if not query.had_tsig:
        return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + qwire
    key = query.keyring
    if not isinstance(key, dns.tsig.Key) or key.algorithm == dns.tsig.GSS_TSIG \
            or query.mac is None or query.keyname is None:
        return None
    unsigned = _HEADER.pack(query.id, flags, 1, 0, 0, 0) + qwire
    template = dns.message.Message._make_tsig(
        query.keyname, key.algorithm, 0, FUDGE, b"", query.id, 0, b"")[0]
    signed, _ctx = dns.tsig.sign(unsigned, key, template, int(time.time()), query.mac)
    rdata = _tsig_rdata(signed)
    return (_HEADER.pack(query.id, flags, 1, 0, 0, 1) + qwire
            + _compressed(query.keyname, qname, 12)
            + _TSIG_HEAD.pack(dns.rdatatype.TSIG, dns.rdataclass.ANY, 0, len(rdata)) + rdata)


def _compressed(name: dns.name.Name, earlier: dns.name.Name, offset: int) -> bytes:
    """`name` compressed against `earlier` written at `offset`, as dnspython's renderer does
    (its longest suffix that is a suffix of `earlier`, but the root, becomes a pointer)."""
    suffixes: dict[tuple[bytes, ...], int] = {}
    pos = offset
    labels = [label.lower() for label in earlier.labels]
    for i in range(len(labels) - 1):  # every suffix but the root
        suffixes[tuple(labels[i:])] = pos
        pos += 1 + len(labels[i])
    out = []
    mine = name.labels
    lowered = [label.lower() for label in mine]
    for i in range(len(mine)):
        at = suffixes.get(tuple(lowered[i:]))
        if at is not None and len(mine) - i > 1:
            out.append(struct.pack("!H", 0xC000 + at))
            break
        out.append(bytes((len(mine[i]),)) + mine[i])
    return b"".join(out)


def _tsig_rdata(rd) -> bytes:
    """A TSIG rdata's wire form (its algorithm name uncompressed, as RFC 8945 4.2 asks)."""
    return (name_wire(rd.algorithm) + struct.pack("!HIH", (rd.time_signed >> 32) & 0xFFFF,
                                                   rd.time_signed & 0xFFFFFFFF, rd.fudge)
            + struct.pack("!H", len(rd.mac)) + rd.mac
            + struct.pack("!HHH", rd.original_id, rd.error, len(rd.other)) + rd.other)
