"""The protocol core: one request's bytes in, the reply's bytes out. No sockets, no git, no clock.

Rules this module keeps:
- A response (QR set) or a packet shorter than a header is never answered.
- TSIG is checked before anything else; a request with a bad signature gets NOTAUTH and its
  TSIG error (RFC 8945) and has no other effect. Rights come from the key's name (keys.py).
- Work that needs git or time (a pull after NOTIFY, a transfer, an update) is returned as a
  `Deferred` for the edge to run; the core itself only answers from the version it was given.
- A packet that does not parse gets FORMERR when its header can be read; a request with an
  opcode we do not serve gets NOTIMP; a name outside every served zone gets REFUSED.
- EDNS (RFC 6891): OPT echoed with our payload size (1232), the DO bit copied, unknown options
  ignored, BADVERS for a version above 0. Over UDP the reply fits the client's size or is
  truncated (TC) with the question alone; additional data that does not fit is dropped first
  (RFC 2181 9), except referral glue (RFC 9471).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
import dns.wire

from gitdns.ack import ack_wire
from gitdns.answer import lookup
from gitdns.keys import Key, KeyStore
from gitdns.store import ZoneSet
from gitdns.tsig import TsigFailure, error_reply, parse_request
from gitdns.zone import Zone

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
    connection: object | None = None  # the TCP connection, for hidden secondaries


@dataclass
class ServerState:
    """What the core answers from: one consistent version of zones and keys."""

    zones: ZoneSet
    keys: KeyStore = field(default_factory=KeyStore)
    axfr_unauthenticated: bool = False


@dataclass(frozen=True)
class Deferred:
    """Work the edge does before (or beside) replying.

    kind: "notify" (pull, then acknowledge), "transfer" (AXFR/IXFR stream), "update" (apply,
    commit, then answer), "watch" (send `reply` now and keep the TCP connection for NOTIFY).
    """

    kind: str
    query: dns.message.Message
    key: Key | None
    origin: dns.name.Name
    zone: Zone | None
    request: Request
    reply: bytes | None = None


Outcome = bytes | Deferred | None


def handle(state: ServerState | ZoneSet, wire: bytes, request: Request = Request(),
           now: int = 0) -> Outcome:
    """Answer one DNS message; None means stay silent."""
    if isinstance(state, ZoneSet):
        state = ServerState(state)
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    opcode = (wire[2] >> 3) & 0xF
    try:
        verified = parse_request(wire, state.keys, one_rr_per_rrset=opcode == dns.opcode.UPDATE)
    except TsigFailure as failure:
        return error_reply(failure, now)
    except Exception:  # any parse failure of hostile input is a FORMERR, never a crash
        return _header_reply(wire, dns.rcode.FORMERR)
    query, key = verified.message, verified.key
    if opcode == dns.opcode.QUERY:
        return answer_query(state, query, request, key)
    if opcode == dns.opcode.NOTIFY:
        return _notify(state, query, request, key)
    if opcode == dns.opcode.UPDATE:
        return _update(state, query, request, key)
    return _error(query, dns.rcode.NOTIMP, request)


def answer_query(
    state: ServerState | ZoneSet,
    query: dns.message.Message,
    request: Request,
    key: Key | None = None,
) -> Outcome:
    """A standard query (opcode QUERY), parsed and verified."""
    zones = state.zones if isinstance(state, ServerState) else state
    if query.edns > 0:
        return _error(query, dns.rcode.BADVERS, request)
    if len(query.question) != 1 or query.answer:
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
        return _transfer(state, query, request, key)
    if query.authority:
        return _error(query, dns.rcode.FORMERR, request)
    zone = zones.find(qname, qtype)
    if zone is None:
        if key is not None and qtype == dns.rdatatype.SOA and request.tcp and \
                key.allows("transfer", qname):
            # A hidden secondary's "watch" query for a zone we do not (yet) serve, or for the
            # root with a root key (the seeds' letsencrypt service): REFUSED, but registered.
            return Deferred("watch", query, key, qname, None, request,
                            _error(query, dns.rcode.REFUSED, request))
        return _error(query, dns.rcode.REFUSED, request)
    dnssec_ok = query.edns >= 0 and bool(query.ednsflags & dns.flags.DO)
    result = lookup(zone, qname, qtype, any_in_full=request.tcp, dnssec_ok=dnssec_ok,
                    served=zones)
    response = _response(query)
    response.set_rcode(result.rcode)
    if result.aa:
        response.flags |= dns.flags.AA
    response.answer = result.answer
    response.authority = result.authority
    response.additional = result.additional
    reply = render(response, query, request, glue_required=result.referral)
    if (key is not None and qtype == dns.rdatatype.SOA and request.tcp
            and qname == zone.origin and key.allows("transfer", zone.origin)):
        return Deferred("watch", query, key, zone.origin, zone, request, reply)
    return reply


def _transfer(state, query: dns.message.Message, request: Request, key: Key | None) -> Outcome:
    """AXFR/IXFR: authorized here, streamed by the edge (RFC 5936 6: REFUSED if not allowed)."""
    zones = state.zones if isinstance(state, ServerState) else state
    question = query.question[0]
    zone = zones.get(question.name)
    if zone is None:
        return _error(query, dns.rcode.NOTAUTH if key else dns.rcode.REFUSED, request)
    if question.rdtype == dns.rdatatype.AXFR and not request.tcp:
        return _error(query, dns.rcode.REFUSED, request)
    allowed = (key is not None and key.allows("transfer", zone.origin)) or (
        key is None and isinstance(state, ServerState) and state.axfr_unauthenticated
    )
    if not allowed:
        return _error(query, dns.rcode.REFUSED, request)
    return Deferred("transfer", query, key, zone.origin, zone, request)


def _notify(state: ServerState, query: dns.message.Message, request: Request,
            key: Key | None) -> Outcome:
    """NOTIFY in (RFC 1996; the seeds' primary pulls git on a signed one)."""
    if len(query.question) != 1 or query.question[0].rdtype != dns.rdatatype.SOA:
        return _error(query, dns.rcode.FORMERR, request)
    origin = query.question[0].name
    if key is None:
        return _error(query, dns.rcode.REFUSED, request)
    if not key.allows("notify", origin):
        return _error(query, dns.rcode.NOTAUTH, request)
    return Deferred("notify", query, key, origin, state.zones.get(origin), request)


def _update(state: ServerState, query: dns.message.Message, request: Request,
            key: Key | None) -> Outcome:
    """UPDATE (RFC 2136 3.1): the zone section names a zone we serve; the key may update it."""
    zone_section = query.question
    if len(zone_section) != 1 or zone_section[0].rdtype != dns.rdatatype.SOA:
        return _error(query, dns.rcode.FORMERR, request)
    origin = zone_section[0].name
    zone = state.zones.get(origin)
    if zone is None:
        return _error(query, dns.rcode.NOTAUTH, request)
    if key is None:
        return _error(query, dns.rcode.REFUSED, request)
    if not key.allows("update", origin):
        return _error(query, dns.rcode.NOTAUTH, request)
    return Deferred("update", query, key, origin, zone, request)


def reply(query: dns.message.Message, rcode: int = dns.rcode.NOERROR, request: Request = Request(),
          aa: bool = True) -> bytes:
    """A bare reply to `query` (signed with its key if it was signed): NOTIFY and UPDATE acks."""
    wire = ack_wire(query, rcode, aa)
    if wire is not None:
        return wire
    response = _response(query)
    response.set_rcode(rcode)
    if aa and rcode == dns.rcode.NOERROR:
        response.flags |= dns.flags.AA
    return render(response, query, request)


def _response(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query, our_payload=OUR_UDP_PAYLOAD, pad=0)
    response.flags |= query.flags & dns.flags.CD  # RFC 4035 3.1.6 (copied, as BIND does)
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
    """Wire form within the size limit: drop additional data first, then truncate (TC).

    Records keep the zone's order (no shuffling): the same question always gets the same bytes,
    which is what lets the fast path cache them.
    """
    limit = reply_size(query, request)
    try:
        return response.to_wire(max_size=limit, want_shuffle=False)
    except dns.exception.TooBig:
        pass
    if not glue_required:
        response.additional = []
        try:
            return response.to_wire(max_size=limit, want_shuffle=False)
        except dns.exception.TooBig:
            pass
    response.answer, response.authority, response.additional = [], [], []
    response.flags |= dns.flags.TC
    return response.to_wire(max_size=limit, want_shuffle=False)


def _error(query: dns.message.Message, rcode: int, request: Request) -> bytes:
    response = _response(query)
    response.set_rcode(rcode)
    if rcode == dns.rcode.BADVERS and response.edns < 0:
        response.use_edns(0, 0, OUR_UDP_PAYLOAD)
    if len(query.question) != 1:
        response.question = []
    return render(response, query, request)


def _header_reply(wire: bytes, rcode: int) -> bytes:
    """A bare reply built from the header alone, for requests that do not parse.

    If the request carried an OPT record, the reply carries one too (RFC 6891 7).
    """
    (qid, flags) = struct.unpack_from("!HH", wire)
    opcode_bits = flags & 0x7800
    rd = flags & dns.flags.RD
    out_flags = _QR | opcode_bits | rd | (rcode & 0xF)
    if _has_opt(wire):
        opt = b"\x00" + struct.pack("!HHIH", dns.rdatatype.OPT, OUR_UDP_PAYLOAD, 0, 0)
        return struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 1) + opt
    return struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0)


def _has_opt(wire: bytes) -> bool:
    """Whether a malformed message has an OPT record, as far as its RR headers can be read."""
    try:
        parser = dns.wire.Parser(wire, 4)
        qd, an, ns, ar = parser.get_struct("!HHHH")
        for _ in range(min(qd, 16)):
            parser.get_name()
            parser.get_struct("!HH")
        for _ in range(min(an + ns + ar, 256)):
            parser.get_name()
            rdtype, _c, _t, rdlen = parser.get_struct("!HHIH")
            if rdtype == dns.rdatatype.OPT:
                return True
            parser.get_bytes(rdlen)
    except Exception:
        return False
    return False
