"""The protocol core: one request's bytes in, the reply's bytes out. No sockets, no git, no clock.

Rules this module keeps:
- A response (QR set) or a packet shorter than a header is never answered.
- A packet that does not parse gets FORMERR when its header can be read; a request with an
  opcode we do not serve gets NOTIMP; a name outside every served zone gets REFUSED.
- EDNS (RFC 6891): OPT echoed with our payload size (1232), the DO bit copied, unknown options
  ignored, BADVERS for a version above 0. Over UDP the reply fits the client's size or is
  truncated (TC) with the question alone; additional data that does not fit is dropped first
  (RFC 2181 9), except referral glue (RFC 9471).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer

from gitdns.answer import lookup
from gitdns.store import ZoneSet

OUR_UDP_PAYLOAD = 1232
MIN_UDP = 512
_QR = dns.flags.QR
_TRANSFER_TYPES = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}
_META_QTYPES = {dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY}
_OBSOLETE_QTYPES = {dns.rdatatype.MAILA, dns.rdatatype.MAILB}
_NO_ZONE_CLASSES = {dns.rdataclass.CH, dns.rdataclass.HS, dns.rdataclass.ANY}


@dataclass(frozen=True)
class Request:
    """Where a request came from and over what."""

    tcp: bool = False
    peer: tuple[str, int] | None = None


def handle(zones: ZoneSet, wire: bytes, request: Request = Request()) -> bytes | None:
    """Answer one DNS message; None means stay silent."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    try:
        query = dns.message.from_wire(wire, one_rr_per_rrset=False)
    except dns.message.UnknownTSIGKey:
        return _header_reply(wire, dns.rcode.NOTAUTH)
    except Exception:  # any parse failure of hostile input is a FORMERR, never a crash
        return _header_reply(wire, dns.rcode.FORMERR)
    opcode = query.opcode()
    if opcode != dns.opcode.QUERY:
        return _error(query, dns.rcode.NOTIMP, request)
    return answer_query(zones, query, request)


def answer_query(zones: ZoneSet, query: dns.message.Message, request: Request) -> bytes | None:
    """A standard query (opcode QUERY), parsed."""
    if query.edns > 0:
        return _error(query, dns.rcode.BADVERS, request)
    if len(query.question) != 1 or query.answer or query.authority:
        return _error(query, dns.rcode.FORMERR, request)
    question = query.question[0]
    qname, qtype, qclass = question.name, question.rdtype, question.rdclass
    if qtype in _META_QTYPES:
        return _error(query, dns.rcode.FORMERR, request)
    if qtype in _OBSOLETE_QTYPES:
        return _error(query, dns.rcode.NOTIMP, request)
    if qclass != dns.rdataclass.IN:
        rcode = dns.rcode.REFUSED if qclass in _NO_ZONE_CLASSES else dns.rcode.FORMERR
        return _error(query, rcode, request)
    if qtype in _TRANSFER_TYPES:
        if qtype == dns.rdatatype.AXFR and not request.tcp:
            return _error(query, dns.rcode.FORMERR, request)
        return _error(query, dns.rcode.REFUSED, request)
    zone = zones.find(qname, qtype)
    if zone is None:
        return _error(query, dns.rcode.REFUSED, request)
    result = lookup(zone, qname, qtype, any_in_full=request.tcp)
    response = _response(query)
    response.set_rcode(result.rcode)
    if result.aa:
        response.flags |= dns.flags.AA
    response.answer = result.answer
    response.authority = result.authority
    response.additional = result.additional
    return render(response, query, request, glue_required=result.referral)


def _response(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD, pad=0)
    if query.edns >= 0:
        response.ednsflags = query.ednsflags & dns.flags.DO
    return response


def reply_size(query: dns.message.Message, request: Request) -> int:
    """The most bytes a reply may take: 65535 over TCP, else the client's EDNS size capped."""
    if request.tcp:
        return 65535
    if query.edns < 0:
        return MIN_UDP
    return min(max(query.payload, MIN_UDP), OUR_UDP_PAYLOAD)


def render(
    response: dns.message.Message,
    query: dns.message.Message,
    request: Request,
    glue_required: bool = False,
) -> bytes:
    """Wire form within the size limit: drop additional data first, then truncate (TC)."""
    limit = reply_size(query, request)
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    if not glue_required:
        response.additional = []
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
    response.answer, response.authority, response.additional = [], [], []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=limit)


def _error(query: dns.message.Message, rcode: int, request: Request) -> bytes:
    response = _response(query)
    response.set_rcode(rcode)
    if rcode == dns.rcode.BADVERS and response.edns < 0:
        response.use_edns(0, 0, OUR_UDP_PAYLOAD)
    if len(query.question) != 1:
        response.question = []
    return render(response, query, request)


def _header_reply(wire: bytes, rcode: int) -> bytes:
    """A bare reply built from the header alone, for requests that do not parse."""
    (qid, flags) = struct.unpack_from("!HH", wire)
    opcode_bits = flags & 0x7800
    rd = flags & dns.flags.RD
    out_flags = _QR | opcode_bits | rd | (rcode & 0xF)
    return struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0)
