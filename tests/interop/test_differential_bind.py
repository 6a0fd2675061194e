"""gitdns answers like BIND: the same zone files, the same query bytes, the same answers.

BIND (`named` 9.18, Debian) serves the corpus in tests/zones/ on loopback with
`minimal-responses no-auth; minimal-any yes;`. Every query of a deterministic list (every owner
name of the corpus with its types and an absent type, ANY, empty non-terminals, children of
existing names, names under wildcards and below cuts, DS/NS at cuts, DNAME substitution,
out-of-zone names; mixed-case qnames, RD on and off, CD and AD set; UDP without EDNS, with EDNS
512, 1232, 4096 (+DO), and TCP) goes to BIND and to gitdns as the same bytes with the same id,
and the replies are compared: rcode, header flags, EDNS (version, payload, DO), the question
(byte for byte: the query's case echoed), the answer and authority sections as multisets of
RRsets (owner names compared case-insensitively, TTLs and rdata compared), and the additional
section as a set. Each corpus file must also load into the same RRsets as BIND loads.

gitdns is tested twice: the sans-IO core in-process (`gitdns.core.handle`), and the real
`python -m gitdns serve` on a git repository of the same files, over UDP and TCP on loopback.

Where BIND legitimately answers differently, a comment marked "Known difference" says why and
the code beside it compares the part that must agree. They are:
- EDNS options (BIND's COOKIE) are not compared;
- ANY over UDP (RFC 8482): any single RRset of BIND's full (TCP) ANY answer;
- ANY additional data: BIND adds none, ours must be what BIND adds for the single types;
- both replies truncated: only header, question and EDNS are compared;
- BIND echoes the query's AD bit in truncated replies;
- ours truncated and BIND's not: only because our complete reply is longer (compression,
  after a DNAME) or because in-domain referral glue does not fit (RFC 9471, which BIND 9.18
  does not implement); the complete replies must then agree;
- additional data BIND leaves out over UDP (what does not fit; all of it at EDNS 512);
- referrals: addresses of name servers that are authoritative data above the cut (RFC 1034
  4.3.2 step 3b), which BIND 9.18 does not add, checked against BIND's own answer for them.
Everything else that differs is a mismatch and fails the test, with a report grouped by cause
(what differed, names left out), the kinds of query it hit, and one example each.
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from gitdns import core
from gitdns.store import ZoneSet
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

from .peers import LOOPBACK, free_port, make_git_repo, read_frame, start_gitdns, start_named

ZONES_DIR = Path(__file__).resolve().parent.parent / "zones"
CORPUS: dict[str, Path] = {
    p.name: p for p in sorted(ZONES_DIR.iterdir()) if p.is_file() and not p.name.startswith(".")
}
QUERY_TIMEOUT = 2.0
MAX_SILENT = 10  # stop asking a server that has not answered this many queries

A, AAAA, NS, SOA, CNAME, MX, TXT, SRV, DS, DNAME, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.NS,
    dns.rdatatype.SOA,
    dns.rdatatype.CNAME,
    dns.rdatatype.MX,
    dns.rdatatype.TXT,
    dns.rdatatype.SRV,
    dns.rdatatype.DS,
    dns.rdatatype.DNAME,
    dns.rdatatype.ANY,
)
COMPARED_FLAGS = (
    ("QR", dns.flags.QR),
    ("AA", dns.flags.AA),
    ("TC", dns.flags.TC),
    ("RD", dns.flags.RD),
    ("RA", dns.flags.RA),
    ("AD", dns.flags.AD),
    ("CD", dns.flags.CD),
)


# --------------------------------------------------------------------------- the corpus


def load_corpus() -> dict[dns.name.Name, Zone]:
    zones = {}
    for name, path in CORPUS.items():
        zone, _warnings = parse_zone(path.read_text(), name, str(path))
        zones[zone.origin] = zone
    return zones


def named_checkzone_dump(origin: str, path: Path) -> dns.zone.Zone:
    """The zone as BIND loads it (`named-checkzone -D`), read back by dnspython."""
    out = subprocess.run(
        ["named-checkzone", "-D", "-o", "-", origin, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return dns.zone.from_text(out, origin, relativize=False, check_origin=False)


# --------------------------------------------------------------------------- the queries


@dataclass(frozen=True)
class Transport:
    label: str
    tcp: bool
    payload: int | None  # EDNS payload size; None: no EDNS
    do: bool = False


UDP = Transport("udp", False, None)
UDP_512 = Transport("udp/edns512", False, 512)
UDP_1232 = Transport("udp/edns1232", False, 1232)
UDP_4096_DO = Transport("udp/edns4096+do", False, 4096, do=True)
TCP = Transport("tcp", True, None)
TCP_1232 = Transport("tcp/edns1232", True, 1232)
ROTATION = (UDP, UDP_1232, TCP, UDP_4096_DO, UDP_512, TCP_1232)


@dataclass(frozen=True)
class Case:
    qname: dns.name.Name  # as sent, case included
    qtype: int
    transport: Transport
    tag: str  # what kind of query this is, for grouping the report
    qid: int
    rd: bool = True
    extra_flags: int = 0  # CD and/or AD set in the query

    def message(self) -> dns.message.Message:
        t = self.transport
        query = dns.message.make_query(
            self.qname,
            self.qtype,
            use_edns=0 if t.payload is not None else False,
            payload=t.payload or 1232,
            want_dnssec=t.do,
        )
        query.id = self.qid
        if not self.rd:
            query.flags &= ~dns.flags.RD
        query.flags |= self.extra_flags
        return query

    def wire(self) -> bytes:
        return self.message().to_wire()

    def __str__(self) -> str:
        rd = "" if self.rd else " norec"
        if self.extra_flags:
            rd += " +" + dns.flags.to_text(self.extra_flags).replace(" ", "+")
        qtype = dns.rdatatype.to_text(self.qtype)
        return f"{self.qname} {qtype} over {self.transport.label}{rd} [{self.tag}]"


def mix_case(name: dns.name.Name, rng: random.Random) -> dns.name.Name:
    """The same name with the case of its ASCII letters flipped at random (DNS 0x20)."""
    labels = []
    for label in name.labels:
        out = bytearray(label)
        for i, c in enumerate(out):
            if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A:
                out[i] = c ^ 0x20 if rng.random() < 0.5 else c
        labels.append(bytes(out))
    return dns.name.Name(labels)


def _below_cut(zone: Zone, name: dns.name.Name) -> bool:
    n = name
    while n != zone.origin:
        n = n.parent()
        if n in zone.cuts:
            return True
    return False


def below(prefix: tuple[bytes, ...], name: dns.name.Name) -> dns.name.Name | None:
    """`prefix` labels prepended to `name`; None when that is longer than 255 octets."""
    try:
        return dns.name.Name((*prefix, *name.labels))
    except dns.name.NameTooLong:
        return None


def base_queries(zones: dict[dns.name.Name, Zone]) -> list[tuple[dns.name.Name, int, str, bool]]:
    """(qname, qtype, tag, all_transports) for the corpus, in a fixed order."""
    out: list[tuple[dns.name.Name, int, str, bool]] = []
    seen: set[tuple[dns.name.Name, int]] = set()

    def add(name: dns.name.Name | str | None, qtype: int, tag: str, every: bool = False) -> None:
        if name is None:
            return
        if isinstance(name, str):
            name = dns.name.from_text(name)
        if (name, qtype) not in seen:
            seen.add((name, qtype))
            out.append((name, qtype, tag, every))

    for origin in sorted(zones):
        zone = zones[origin]
        big = origin == dns.name.from_text("big.test")
        for owner in sorted(zone.nodes):
            types = sorted({rdtype for rdtype, _covers in zone.nodes[owner]})
            if owner == origin:
                tag = "apex"
            elif _below_cut(zone, owner):
                tag = "below-cut"
            elif owner in zone.cuts:
                tag = "cut"
            elif owner.labels[0] == b"*":
                tag = "wildcard-owner"
            elif CNAME in types:
                tag = "cname"
            elif DNAME in types:
                tag = "dname-owner"
            else:
                tag = "owner"
            every = big or owner == origin
            for rdtype in types:
                add(owner, rdtype, tag, every)
            absent = next(t for t in (A, TXT, AAAA, MX, SRV) if t not in types)
            add(owner, absent, tag + "/absent-type", every)
            add(owner, ANY, tag + "/any", every)
            if owner.labels[0] != b"*":
                add(below((b"nx-probe",), owner), A, tag + "/child")
        for ent in sorted(zone.names - zone.nodes.keys()):
            add(ent, A, "ent")
            add(ent, ANY, "ent/any")
            add(below((b"nx-probe",), ent), TXT, "ent/child")
        add(origin, DS, "apex/ds")
        add(origin, dns.rdatatype.DNSKEY, "apex/dnssec")
        add(origin, dns.rdatatype.RRSIG, "apex/dnssec")
        add(origin, dns.rdatatype.NSEC, "apex/dnssec")
        add(dns.name.Name((b"nonexistent", *origin.labels)), A, "nxdomain")
        add(dns.name.Name((b"nonexistent", *origin.labels)), DS, "nxdomain")
        add(dns.name.Name((b"a", b"b", b"nonexistent", *origin.labels)), AAAA, "nxdomain")
        for cut in sorted(zone.cuts):
            for rdtype in (DS, NS, SOA, A, ANY, dns.rdatatype.DNSKEY):
                add(cut, rdtype, "cut")
            for rdtype in (A, DS, NS, MX):
                add(dns.name.Name((b"www", *cut.labels)), rdtype, "below-cut")
        for owner in sorted(zone.nodes):
            if owner.labels[0] == b"*":
                parent = dns.name.Name(owner.labels[1:])
                for prefix in ((b"a",), (b"Deep", b"b"), (b"host3",)):
                    qname = dns.name.Name((*prefix, *parent.labels))
                    for rdtype in (A, AAAA, TXT, MX, ANY, CNAME, DS):
                        add(qname, rdtype, "wildcard")
                add(dns.name.Name((b"x", *owner.labels)), A, "wildcard/below-star")
            if (DNAME, 0) in zone.nodes[owner]:
                for prefix in (b"www", b"mail", b"alias", b"nx", b"ns"):
                    qname = dns.name.Name((prefix, *owner.labels))
                    for rdtype in (A, AAAA, MX, CNAME, DNAME, TXT, ANY):
                        add(qname, rdtype, "dname")
                add(dns.name.Name((b"a", b"www", *owner.labels)), A, "dname")
    # RFC 6672 2.2: substitution that makes a name longer than 255 octets is YXDOMAIN
    add(dns.name.Name((b"y" * 60, b"longer", b"dname", b"test", b"")), A, "dname/yxdomain")
    add(dns.name.Name((b"z", b"longer", b"dname", b"test", b"")), A, "dname")
    add(dns.name.Name((b"y" * 50, b"z" * 50, b"longer", b"dname", b"test", b"")), TXT, "dname")
    # RFC 4592 2.2.1's example queries, as they are written there
    for name, rdtype in (
        ("host3.wild.test.", MX),
        ("host3.wild.test.", A),
        ("foo.bar.wild.test.", TXT),
        ("host1.wild.test.", MX),
        ("sub.*.wild.test.", MX),
        ("_telnet._tcp.host1.wild.test.", SRV),
        ("host.subdel.wild.test.", A),
        ("ghost.*.wild.test.", MX),
        ("_ssh._tcp.host2.wild.test.", SRV),
        ("host2.wild.test.", A),
        ("*.wild.test.", TXT),
    ):
        add(name, rdtype, "rfc4592")
    # Names outside every served zone: REFUSED
    for name, rdtype in (
        (".", NS),
        (".", SOA),
        ("test.", SOA),
        ("test.", DS),
        ("example.com.", A),
        ("nonexistent.test.", A),
        ("example.net.", MX),
        ("xexample.test.", A),
        ("arent.test.", AAAA),
        ("localhost.", A),
        ("1.0.0.127.in-addr.arpa.", dns.rdatatype.PTR),
    ):
        add(name, rdtype, "out-of-zone")
    return out


def build_cases() -> list[Case]:
    """The queries, deterministically: base queries in order, each over one transport of the
    rotation (all of them for the big and apex names), every third name in mixed case, every
    fourth without RD, every seventh with CD, every eleventh with AD (RFC 6840 5.7)."""
    cases: list[Case] = []
    for i, (qname, qtype, tag, every) in enumerate(base_queries(load_corpus())):
        transports = ROTATION if every else (ROTATION[i % len(ROTATION)],)
        sent = mix_case(qname, random.Random(i)) if i % 3 == 0 else qname
        flags = (dns.flags.CD if i % 7 == 3 else 0) | (dns.flags.AD if i % 11 == 5 else 0)
        for transport in transports:
            qid = (len(cases) * 7919 + 17) & 0xFFFF
            rd = i % 4 != 1
            cases.append(Case(sent, qtype, transport, tag, qid, rd=rd, extra_flags=flags))
    return cases


CASES = build_cases()


# --------------------------------------------------------------------------- exchanges


def udp_exchange(port: int, wire: bytes, timeout: float = QUERY_TIMEOUT) -> bytes | None:
    """Send `wire` over UDP to 127.0.0.1:`port`; the reply with the same id, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((LOOPBACK, port))
        sock.send(wire)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                return None
            if data[:2] == wire[:2]:
                return data
    return None


def tcp_exchange(port: int, wire: bytes, timeout: float = QUERY_TIMEOUT) -> bytes | None:
    """Send `wire` over TCP (RFC 7766 framing) to 127.0.0.1:`port`; the reply, or None."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("!H", len(wire)) + wire)
            return read_frame(sock)
    except OSError:  # (read_frame's ConnectionError is one)
        return None


Exchange = Callable[[bytes, bool], "bytes | None"]


def server_exchange(port: int) -> Exchange:
    def exchange(wire: bytes, tcp: bool) -> bytes | None:
        return tcp_exchange(port, wire) if tcp else udp_exchange(port, wire)

    return exchange


def core_exchange(zones: ZoneSet) -> Exchange:
    def exchange(wire: bytes, tcp: bool) -> bytes | None:
        return core.handle(zones, wire, core.Request(tcp=tcp, peer=(LOOPBACK, 53000)))

    return exchange


# --------------------------------------------------------------------------- comparison


def rrset_key(rrset: dns.rrset.RRset) -> tuple:
    """An RRset as a comparable value: owner case-insensitive, TTL and rdata included."""
    return (
        rrset.name.canonicalize(),
        rrset.rdclass,
        rrset.rdtype,
        rrset.covers,
        rrset.ttl,
        frozenset(rd.to_digestable() for rd in rrset),
    )


def section_keys(section: Iterable[dns.rrset.RRset]) -> collections.Counter:
    return collections.Counter(rrset_key(r) for r in section)


def _show(keys: Iterable[tuple]) -> str:
    out = []
    for name, rdclass, rdtype, _covers, ttl, rdatas in sorted(keys, key=repr):
        kind = f"{dns.rdataclass.to_text(rdclass)} {dns.rdatatype.to_text(rdtype)}"
        out.append(f"{name} {ttl} {kind} ({len(rdatas)} rdata)")
    return "; ".join(out) or "nothing"


def _types(keys: Iterable[tuple]) -> str:
    return ",".join(sorted({dns.rdatatype.to_text(key[2]) for key in keys})) or "-"


def flag_names(flags: int) -> str:
    return " ".join(n for n, bit in COMPARED_FLAGS if flags & bit) or "-"


@dataclass
class Replies:
    """BIND's replies for one case: the reply itself, and the same query bytes over TCP."""

    query_wire: bytes
    bind: dns.message.Message
    bind_wire: bytes
    bind_tcp: dns.message.Message
    bind_tcp_wire: bytes


@dataclass
class Mismatch:
    kind: str
    case: Case
    detail: str
    bind: str = ""
    ours: str = ""
    cause: str = ""  # what groups it in the report: the kind and what differs, names left out


@dataclass
class Comparison:
    """One reply of ours against BIND's, with what the known-difference rules may consult."""

    case: Case
    tcp: bool
    query: dns.message.Message
    bind: Replies
    ours: dns.message.Message
    ours_wire: bytes
    ours_over_tcp: Callable[[], tuple[bytes, dns.message.Message]]
    bind_lookup: Callable[[dns.name.Name, int], dns.message.Message]
    mismatches: list[Mismatch] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)

    @property
    def their(self) -> dns.message.Message:
        return self.bind.bind_tcp if self.tcp else self.bind.bind

    def fail(self, kind: str, detail: str, cause: str = "") -> None:
        self.mismatches.append(
            Mismatch(
                kind,
                self.case,
                detail,
                self.their.to_text(),
                self.ours.to_text(),
                cause or f"{kind}: {detail}",
            )
        )

    def fail_section(self, kind: str, ours: collections.Counter, theirs: collections.Counter):
        """A section that differs: the RRsets only we have, and those only BIND has."""
        extra, missing = ours - theirs, theirs - ours
        self.fail(
            kind,
            f"extra: {_show(extra.elements())}; missing: {_show(missing.elements())}",
            f"{kind}: extra {_types(extra)}; missing {_types(missing)}",
        )


def udp_limit(query: dns.message.Message) -> int:
    return 512 if query.edns < 0 else max(512, query.payload)


def compare(c: Comparison) -> None:
    """Every check of one reply against BIND's; results land in `c.mismatches`."""
    bind, ours, query = c.their, c.ours, c.query

    # The question, byte for byte: RFC 1035 4.1.1 copies it; the 0x20 case must survive.
    q = query.question[0]
    if [(r.name.labels, r.rdtype, r.rdclass) for r in ours.question] != [
        (q.name.labels, q.rdtype, q.rdclass)
    ]:
        c.fail(
            "question",
            f"question not echoed exactly: {[str(r) for r in ours.question]}",
            "question: not echoed byte for byte",
        )
    if ours.id != query.id or ours.opcode() != bind.opcode():
        c.fail(
            "header",
            f"id/opcode {ours.id}/{ours.opcode()} vs {bind.id}/{bind.opcode()}",
            "header: id or opcode",
        )
    if not c.tcp and len(c.ours_wire) > udp_limit(query):
        c.fail(
            "size",
            f"{len(c.ours_wire)} octets over UDP, the limit is {udp_limit(query)}",
            "size: reply over the UDP limit",
        )

    if ours.rcode() != bind.rcode():
        theirs = dns.rcode.to_text(bind.rcode())
        c.fail("rcode", f"{dns.rcode.to_text(ours.rcode())}, BIND {theirs}")

    # EDNS: presence, version, payload, DO. Options are not compared: BIND adds a server
    # COOKIE (RFC 7873) of its own; gitdns does not implement cookies, which is allowed.
    ours_edns = (ours.edns, ours.payload if ours.edns >= 0 else None, ours.ednsflags)
    bind_edns = (bind.edns, bind.payload if bind.edns >= 0 else None, bind.ednsflags)
    if ours_edns != bind_edns:
        c.fail("edns", f"(version, payload, flags) {ours_edns}, BIND {bind_edns}")

    ours_flags = ours.flags & sum(bit for _, bit in COMPARED_FLAGS)
    bind_flags = bind.flags & sum(bit for _, bit in COMPARED_FLAGS)
    both_tc = ours_flags & bind_flags & dns.flags.TC
    if both_tc and (ours_flags ^ bind_flags) == dns.flags.AD and query.flags & dns.flags.AD:
        # Known difference: BIND 9.18 echoes the query's AD bit in a truncated reply (seen
        # without EDNS). A server that has not validated the data MUST NOT set AD (RFC 4035
        # 3.2.3, RFC 6840 5.8); gitdns clears it, as BIND does in its untruncated replies.
        c.explained.append("BIND echoes AD in truncated replies")
        ours_flags |= dns.flags.AD
    if (ours_flags ^ bind_flags) & ~dns.flags.TC:
        differ = (ours_flags ^ bind_flags) & ~dns.flags.TC
        c.fail(
            "flags",
            f"{flag_names(differ)}: ours {flag_names(ours_flags & differ)}, "
            f"BIND {flag_names(bind_flags & differ)}",
        )
    if (ours_flags ^ bind_flags) & dns.flags.TC:
        if ours_flags & dns.flags.TC:
            explain_our_truncation(c)
        else:
            c.fail(
                "flags/tc",
                f"TC clear, BIND set it; our reply is {len(c.ours_wire)} octets",
                "flags/tc: TC clear, BIND set it",
            )
        return  # the sections of replies with a different TC are not comparable
    if ours.flags & dns.flags.TC:
        # Known difference: both truncated. RFC 2181 9 lets a server leave in whatever fits,
        # even part of an RRset, and a client retries over TCP without using any of it; BIND
        # keeps the records that fit, gitdns sends the question alone (RFC 1035 4.1.1 TC).
        # The header, the question and EDNS must agree, and were compared above.
        c.explained.append("both truncated: sections not compared")
        return

    compare_answer(c)
    ours_keys, bind_keys = section_keys(ours.authority), section_keys(bind.authority)
    if ours_keys != bind_keys:
        c.fail_section("authority", ours_keys, bind_keys)
    compare_additional(c)


def explain_our_truncation(c: Comparison) -> None:
    """We set TC over UDP and BIND did not: explained only where the complete reply (ours
    over TCP) does not fit, for one of the two reasons below; the complete replies must then
    agree, and are compared as TCP replies."""
    limit = udp_limit(c.query)
    full_wire, full = c.ours_over_tcp()
    reason = None
    if len(full_wire) <= limit:
        reason = None  # we truncated a reply that fits: a real mismatch
    elif len(c.bind.bind_tcp_wire) <= limit:
        # Known difference: name compression. BIND's complete reply fits, ours is longer
        # for the same records: BIND compresses names against the names inside DNAME RDATA
        # (which itself must go uncompressed, RFC 6672 2.5), dnspython's renderer does not.
        # RFC 1035 4.1.4 makes compression optional, so the TC is honest (RFC 2181 9).
        reason = "TC: our reply is longer (name compression), BIND's fits"
    elif referral_glue_left_out(c):
        # Known difference: RFC 9471 3.1, a referral MUST carry all its in-domain glue or
        # set TC. BIND 9.18 predates it and leaves glue that does not fit out silently.
        reason = "TC: in-domain glue does not fit (RFC 9471), BIND 9.18 drops it"
    if reason is None:
        c.fail(
            "flags/tc",
            f"TC set, BIND did not; our complete reply is {len(full_wire)} octets",
            "flags/tc: TC set, BIND did not",
        )
        return
    c.explained.append(reason)
    sub = Comparison(c.case, True, c.query, c.bind, full, full_wire, c.ours_over_tcp, c.bind_lookup)
    compare(sub)
    seen = {(m.kind, m.detail) for m in c.mismatches}
    c.mismatches.extend(m for m in sub.mismatches if (m.kind, m.detail) not in seen)
    c.explained.extend(sub.explained)


def referral_glue_left_out(c: Comparison) -> bool:
    """BIND's UDP reply is a referral that lacks glue below the cut its TCP reply has."""
    bind = c.bind.bind
    cuts = [r.name for r in bind.authority if r.rdtype == NS]
    if bind.answer or bind.flags & dns.flags.AA or len(cuts) != 1:
        return False
    full = set(section_keys(c.bind.bind_tcp.additional))
    missing = full - set(section_keys(bind.additional))
    return bool(missing) and all(key[0].is_subdomain(cuts[0]) for key in missing)


def compare_answer(c: Comparison) -> None:
    ours_keys, bind_keys = section_keys(c.ours.answer), section_keys(c.their.answer)
    if ours_keys == bind_keys:
        return
    if c.case.qtype == ANY and not c.tcp:
        # Known difference: ANY over UDP (RFC 8482 4.2). With `minimal-any yes` BIND answers
        # with one RRset of the name, in the order of its database; gitdns also answers with
        # one (the lowest type). Which one is free: ours must hold as many RRsets as BIND's
        # (one, after any CNAME/DNAME links), each of them in BIND's full answer over TCP.
        full = section_keys(c.bind.bind_tcp.answer)
        if len(c.ours.answer) == len(c.their.answer) and not (ours_keys - full):
            c.explained.append("ANY over UDP: a different single RRset")
            return
        c.fail(
            "answer/any",
            f"ours {_show(ours_keys.elements())}; BIND over TCP has {_show(full.elements())}",
            f"answer/any: ours {_types(ours_keys)} not one RRset of BIND's {_types(full)}",
        )
        return
    c.fail_section("answer", ours_keys, bind_keys)


def authoritative_ns_addresses(c: Comparison, extra: set) -> set:
    """Of `extra` additional records, those that are addresses of the name servers of a
    referral that are authoritative data of the zone (not glue): BIND confirms them with an
    authoritative answer of the very same RRset."""
    ns = [r for r in c.ours.authority if r.rdtype == NS]
    if len(ns) != 1:
        return set()
    cut, targets = ns[0].name, {rd.target for rd in ns[0]}
    ok = set()
    for key in extra:
        name, rdtype = key[0], key[2]
        if rdtype not in (A, AAAA) or name not in targets or name.is_subdomain(cut):
            continue
        reply = c.bind_lookup(name, rdtype)
        if reply.flags & dns.flags.AA and set(section_keys(reply.answer)) == {key}:
            ok.add(key)
    return ok


def compare_additional(c: Comparison) -> None:
    ours_set = set(section_keys(c.ours.additional))
    bind_set = set(section_keys(c.their.additional))
    if ours_set == bind_set:
        return
    extra_ns = authoritative_ns_addresses(c, ours_set - bind_set)
    if extra_ns:
        # Known difference: a referral whose name servers have addresses in the zone above
        # the cut (authoritative data, not glue). RFC 1034 4.3.2 step 3b: "put whatever
        # addresses are available into the additional section"; gitdns does, BIND 9.18 adds
        # glue (addresses at or below a cut) only. Those extra addresses are checked
        # against BIND's own authoritative answer for them; the rest must agree.
        c.explained.append("referral: addresses of in-zone name servers above the cut")
        ours_set -= extra_ns
        if ours_set == bind_set:
            return
    if c.case.qtype == ANY and c.their.answer and c.their.flags & dns.flags.AA:
        # Known difference: BIND adds no additional data to ANY answers at all (over TCP
        # either); gitdns adds the addresses of the NS, MX and SRV targets of the RRsets it
        # answers with, as for a query of that type. RFC 1034 4.3.2 step 6 makes additional
        # data optional, so both are right; ours must be exactly what BIND adds for a query of
        # each of those types (over TCP, so nothing is left out for size).
        expected: set = set()
        for rrset in c.ours.answer:
            if rrset.rdtype in (NS, MX, SRV) and rrset.name == c.case.qname:
                expected |= set(section_keys(c.bind_lookup(rrset.name, rrset.rdtype).additional))
        if ours_set <= expected and (ours_set == expected or not c.tcp):
            c.explained.append("ANY: BIND adds no additional data")
            return
        c.fail_section(
            "additional/any", collections.Counter(ours_set), collections.Counter(expected)
        )
        return
    full = set(section_keys(c.bind.bind_tcp.additional))
    if not c.tcp and bind_set < full and ours_set <= full:
        # Known difference: additional data left out over UDP. BIND fills the additional
        # section with the RRsets that fit, and leaves all of it out when the client's EDNS
        # buffer is 512 octets (9.18: `dig +bufsize=512` gets none, 600 gets all, plain UDP
        # gets what fits); gitdns adds all of it when it fits and none otherwise. Additional
        # data is optional and never sets TC (RFC 2181 9). Ours must be part of what BIND
        # gives without a size limit.
        c.explained.append("additional data left out over UDP")
        return
    c.fail_section("additional", collections.Counter(ours_set), collections.Counter(bind_set))


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    compared: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    explained: collections.Counter = field(default_factory=collections.Counter)
    silent: list[Case] = field(default_factory=list)


def ask_bind(port: int) -> dict[Case, Replies]:
    exchange = server_exchange(port)
    replies: dict[Case, Replies] = {}
    for case in CASES:
        wire = case.wire()
        raw = exchange(wire, case.transport.tcp)
        raw_tcp = raw if case.transport.tcp else exchange(wire, True)
        if raw is None or raw_tcp is None:
            raise AssertionError(f"BIND did not answer {case}")
        replies[case] = Replies(
            wire, dns.message.from_wire(raw), raw, dns.message.from_wire(raw_tcp), raw_tcp
        )
    return replies


def run_against(exchange: Exchange, bind_port: int, bind: dict[Case, Replies]) -> Run:
    run = Run()
    cache: dict[tuple[dns.name.Name, int], dns.message.Message] = {}
    bind_ex = server_exchange(bind_port)

    def bind_lookup(name: dns.name.Name, rdtype: int) -> dns.message.Message:
        key = (name, rdtype)
        if key not in cache:
            query = dns.message.make_query(name, rdtype, use_edns=0, payload=1232)
            query.id = 4711
            raw = bind_ex(query.to_wire(), True)
            assert raw is not None, f"BIND did not answer {name} {rdtype}"
            cache[key] = dns.message.from_wire(raw)
        return cache[key]

    for case in CASES:
        if len(run.silent) >= MAX_SILENT:
            break
        query = case.message()
        wire = query.to_wire()
        replies = bind[case]
        assert wire == replies.query_wire, f"the query bytes for {case} are not stable"
        raw = exchange(wire, case.transport.tcp)
        if raw is None:
            run.silent.append(case)
            run.mismatches.append(
                Mismatch("no reply", case, "no reply", replies.bind.to_text(), "", "no reply")
            )
            continue
        try:
            ours = dns.message.from_wire(raw)
        except Exception as e:  # a reply dnspython cannot parse is a mismatch, not a crash
            detail = f"{type(e).__name__}: {e}"
            run.mismatches.append(Mismatch("unparsable", case, detail, "", "", "unparsable"))
            continue

        def ours_over_tcp(
            wire: bytes = wire, case: Case = case
        ) -> tuple[bytes, dns.message.Message]:
            full = exchange(wire, True)
            if full is None:
                raise AssertionError(f"no reply over TCP to {case}")
            return full, dns.message.from_wire(full)

        c = Comparison(
            case, case.transport.tcp, query, replies, ours, raw, ours_over_tcp, bind_lookup
        )
        compare(c)
        run.compared += 1
        run.mismatches.extend(c.mismatches)
        run.explained.update(c.explained)
    return run


def _clip(text: str, lines: int = 30) -> str:
    out = text.splitlines()
    if len(out) > lines:
        out = [*out[:lines], f"... ({len(out) - lines} more lines)"]
    return "\n      ".join(out)


def report(run: Run) -> str:
    """The mismatches grouped by cause, with the kinds of query each hit and one example."""
    groups: dict[str, list[Mismatch]] = collections.defaultdict(list)
    for m in run.mismatches:
        groups[m.cause or m.kind].append(m)
    lines = [
        f"{len(run.mismatches)} mismatches in {run.compared} compared replies "
        f"({len(CASES)} queries), {len(groups)} causes:"
    ]
    for cause, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        tags = collections.Counter(m.case.tag.split("/")[0] for m in items)
        where = ", ".join(f"{tag} {n}" for tag, n in tags.most_common())
        m = items[0]
        lines.append(f"\n== {cause}: {len(items)} ({where})")
        lines.append(f"   e.g. {m.case}: {m.detail}")
        if m.bind:
            lines.append("   --- BIND:\n      " + _clip(m.bind))
        if m.ours:
            lines.append("   --- gitdns:\n      " + _clip(m.ours))
    if run.silent:
        lines.append(f"\nno reply to {len(run.silent)} queries; gave up after {MAX_SILENT}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    port = free_port()
    with start_named(tmp_path_factory.mktemp("named"), CORPUS, port) as peer:
        yield peer


@pytest.fixture(scope="module")
def bind_replies(named) -> dict[Case, Replies]:
    return ask_bind(named.port)


# --------------------------------------------------------------------------- tests


def test_corpus_is_big_enough():
    """>= 300 queries, over every transport, with mixed case, RD off, CD and AD among them."""
    assert len(CASES) >= 300
    assert {c.transport for c in CASES} == set(ROTATION)
    assert any(c.qname.labels != c.qname.canonicalize().labels for c in CASES)
    assert any(not c.rd for c in CASES)
    assert any(c.extra_flags & dns.flags.CD for c in CASES)
    assert any(c.extra_flags & dns.flags.AD for c in CASES)
    assert len(CORPUS) >= 5
    assert len({c.qid for c in CASES}) == len(CASES)


@pytest.mark.parametrize("zone_file", sorted(CORPUS))
def test_zone_loads_as_bind_loads_it(zone_file):
    """Each corpus file gives gitdns the same RRsets, TTLs included, that BIND loads."""
    path = CORPUS[zone_file]
    ours, _warnings = parse_zone(path.read_text(), zone_file, str(path))
    theirs = named_checkzone_dump(zone_file, path)
    ours_keys = {rrset_key(r) for node in ours.nodes.values() for r in node.values()}
    bind_keys = {
        rrset_key(dns.rrset.from_rdata_list(name, rds.ttl, list(rds)))
        for name, rds in theirs.iterate_rdatasets()
    }
    assert ours_keys == bind_keys, (
        f"only gitdns: {_show(ours_keys - bind_keys)}\nonly BIND: {_show(bind_keys - ours_keys)}"
    )


def test_bind_echoes_the_question(bind_replies):
    """A check of the reference itself: BIND copies the question case byte for byte."""
    for case, replies in bind_replies.items():
        assert replies.bind.question[0].name.labels == case.qname.labels, case


@pytest.mark.parametrize("target", ["core", "serve"])
def test_answers_like_bind(target, named, bind_replies, tmp_path):
    """gitdns (the core in-process, or `gitdns serve` on loopback) answers every query of the
    corpus as BIND does, but for the known differences documented in this module."""
    log = None
    with contextlib.ExitStack() as stack:
        if target == "core":
            exchange = core_exchange(ZoneSet(load_corpus()))
        else:
            # `gitdns serve` on a git repository of the corpus; a server that does not start
            # fails this test (start_gitdns raises with its log), it is never skipped.
            repo = make_git_repo(
                tmp_path / "zones.git", {name: p.read_bytes() for name, p in CORPUS.items()}
            )
            port = free_port()
            peer = start_gitdns(repo, port, tmp_path / "data", zones=list(CORPUS))
            stack.enter_context(peer)
            log = peer.log_path
            exchange = server_exchange(port)
        run = run_against(exchange, named.port, bind_replies)
    if run.mismatches or run.compared < 300:
        pytest.fail(report(run), pytrace=False)
    if log is not None:
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-4000:]
