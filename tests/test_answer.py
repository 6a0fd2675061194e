"""Authoritative answers, sans-IO: `answer.lookup` and `core.handle` on wire bytes.

RFC 1034 4.3.2 (the algorithm), RFC 2181, RFC 2308 (negative answers), RFC 4592 (wildcards),
RFC 6672 (DNAME), RFC 6604 (rcode of CNAME chains), RFC 6891 (EDNS), RFC 8482 (ANY),
RFC 9471 (glue), RFC 5936 (AXFR only over TCP).
"""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gitdns.answer import lookup
from gitdns.core import Request, handle
from gitdns.store import ZoneSet
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

NOERROR, NXDOMAIN, FORMERR, REFUSED, NOTIMP, YXDOMAIN = (
    dns.rcode.NOERROR,
    dns.rcode.NXDOMAIN,
    dns.rcode.FORMERR,
    dns.rcode.REFUSED,
    dns.rcode.NOTIMP,
    dns.rcode.YXDOMAIN,
)

MAIN = """\
$TTL 3600
@ 7200 SOA ns1 hostmaster 2024010101 7200 3600 1209600 300
@ NS ns1
@ NS ns2
@ MX 10 mail
@ MX 20 mx.example.net.
ns1 A 192.0.2.1
ns1 AAAA 2001:db8::1
ns2 A 192.0.2.2
mail A 192.0.2.25
mail AAAA 2001:db8::25
www A 192.0.2.80
www AAAA 2001:db8::80
a CNAME b
b CNAME c
c A 192.0.2.3
loop1 CNAME loop2
loop2 CNAME loop1
self CNAME self
dangling CNAME nothere
to-www CNAME www
out CNAME www.example.net.
to-sub CNAME host.sub
x.ent A 192.0.2.9
*.wild TXT "wild"
*.wild MX 10 mail
exists.wild A 192.0.2.10
x.blocked.wild TXT "makes blocked.wild an empty non-terminal"
*.wc CNAME www
*.wcout CNAME target.example.net.
sub NS ns.sub
sub NS ns.sib
sub DS 12345 13 2 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF
ns.sub A 192.0.2.53
ns.sub AAAA 2001:db8::53
sib NS ns.example.net.
ns.sib A 192.0.2.54
d 300 DNAME target.example.test.
y.target A 192.0.2.77
dout 600 DNAME example.net.
_sip._tcp SRV 0 0 5060 www
_sip._tcp SRV 0 0 5061 sip.example.net.
"""
ORIGIN = "example.test."


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def make_zone(text: str, origin: str) -> Zone:
    zone, _warnings = parse_zone(text, origin, origin)
    return zone


@pytest.fixture(scope="module")
def main_zone() -> Zone:
    return make_zone(MAIN, ORIGIN)


@pytest.fixture(scope="module")
def zones(main_zone: Zone) -> ZoneSet:
    return ZoneSet({main_zone.origin: main_zone})


def ask(
    zones: ZoneSet,
    qname: str,
    qtype: str | int = "A",
    *,
    tcp: bool = False,
    qclass: str | int = "IN",
    **kwargs,
) -> tuple[dns.message.Message, bytes, bytes]:
    """Query over `handle`; returns the parsed reply, its wire form and the query's wire form."""
    query = dns.message.make_query(qname, qtype, qclass, **kwargs)
    wire = query.to_wire()
    reply = handle(zones, wire, Request(tcp=tcp))
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == query.id
    assert msg.flags & dns.flags.QR
    return msg, reply, wire


def texts(section: list[dns.rrset.RRset]) -> list[str]:
    """Each RR as text, in section order (RRsets sorted inside, so order within one is free)."""
    out: list[str] = []
    for rrset in section:
        out.extend(sorted(rrset.to_text().splitlines()))
    return out


def owners_types(section: list[dns.rrset.RRset]) -> list[tuple[str, str]]:
    return [(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in section]


def is_aa(msg: dns.message.Message) -> bool:
    return bool(msg.flags & dns.flags.AA)


def assert_negative_soa(msg: dns.message.Message, origin: str = ORIGIN, ttl: int = 300) -> None:
    assert owners_types(msg.authority) == [(origin, "SOA")]
    assert msg.authority[0].ttl == ttl


def question_bytes(wire: bytes) -> bytes:
    """The raw question section of a one-question message (the name is never compressed)."""
    i = 12
    while wire[i]:
        i += 1 + wire[i]
    return wire[12 : i + 5]


# --- positive answers ---------------------------------------------------------------------------


def test_exact_answer(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A")
    assert msg.rcode() == NOERROR
    assert is_aa(msg)
    assert texts(msg.answer) == ["www.example.test. 3600 IN A 192.0.2.80"]
    assert msg.authority == []  # minimal responses: no NS in authority


def test_question_id_and_rd_echoed(zones: ZoneSet) -> None:
    msg, reply, wire = ask(zones, "www.example.test.", "AAAA")
    assert msg.flags & dns.flags.RD
    assert not msg.flags & dns.flags.RA
    assert reply[:2] == wire[:2]
    assert question_bytes(reply) == question_bytes(wire)
    assert texts(msg.answer) == ["www.example.test. 3600 IN AAAA 2001:db8::80"]


def test_cname_chain_in_zone(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "a.example.test.", "A")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert owners_types(msg.answer) == [
        ("a.example.test.", "CNAME"),
        ("b.example.test.", "CNAME"),
        ("c.example.test.", "A"),
    ]
    assert msg.authority == []


def test_cname_query_is_not_chased(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "a.example.test.", "CNAME")
    assert texts(msg.answer) == ["a.example.test. 3600 IN CNAME b.example.test."]


def test_cname_to_out_of_zone_target_stops(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "out.example.test.", "A")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert texts(msg.answer) == ["out.example.test. 3600 IN CNAME www.example.net."]
    # Not a negative answer about the target (RFC 2308 would read an SOA here as NODATA).
    assert all(r.rdtype != dns.rdatatype.SOA for r in msg.authority)


@pytest.mark.parametrize(
    ("qname", "expected"),
    [
        ("loop1.example.test.", {"loop1.example.test.", "loop2.example.test."}),
        ("self.example.test.", {"self.example.test."}),
    ],
)
def test_cname_loop_terminates(zones: ZoneSet, qname: str, expected: set[str]) -> None:
    msg, _, _ = ask(zones, qname, "A")
    owners = [r.name.to_text() for r in msg.answer]
    assert all(r.rdtype == dns.rdatatype.CNAME for r in msg.answer)
    assert set(owners) == expected
    assert len(owners) == len(expected)  # every link once, no repetition
    assert msg.rcode() in (NOERROR, dns.rcode.SERVFAIL)


def test_cname_into_nxdomain(zones: ZoneSet) -> None:
    # RFC 6604 / RFC 2308 2.1: the rcode is that of the last name in the chain.
    msg, _, _ = ask(zones, "dangling.example.test.", "A")
    assert msg.rcode() == NXDOMAIN
    assert is_aa(msg)
    assert texts(msg.answer) == ["dangling.example.test. 3600 IN CNAME nothere.example.test."]
    assert_negative_soa(msg)


def test_cname_into_nodata(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "to-www.example.test.", "MX")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert texts(msg.answer) == ["to-www.example.test. 3600 IN CNAME www.example.test."]
    assert_negative_soa(msg)


def test_cname_into_delegation(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "to-sub.example.test.", "A")
    assert msg.rcode() == NOERROR
    assert texts(msg.answer) == ["to-sub.example.test. 3600 IN CNAME host.sub.example.test."]
    assert ("sub.example.test.", "NS") in owners_types(msg.authority)


# --- negative answers (RFC 2308) ---------------------------------------------------------------


def test_nodata(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "MX")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert msg.answer == []
    # SOA TTL 7200, MINIMUM 300: the negative TTL is the smaller (RFC 2308 section 3).
    assert_negative_soa(msg, ttl=300)


def test_negative_soa_ttl_when_soa_ttl_is_smaller() -> None:
    zone = make_zone(
        "@ 60 SOA ns hm 1 7200 3600 1209600 900\n@ 60 NS ns\nns 60 A 192.0.2.1\n", "low.test."
    )
    msg, _, _ = ask(ZoneSet({zone.origin: zone}), "ns.low.test.", "TXT")
    assert_negative_soa(msg, origin="low.test.", ttl=60)
    assert msg.authority[0][0].minimum == 900  # the rdata itself is unchanged
    msg, _, _ = ask(ZoneSet({zone.origin: zone}), "nope.low.test.", "A")
    assert msg.rcode() == NXDOMAIN
    assert_negative_soa(msg, origin="low.test.", ttl=60)


def test_nxdomain(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "nope.example.test.", "A")
    assert msg.rcode() == NXDOMAIN and is_aa(msg)
    assert msg.answer == []
    assert_negative_soa(msg)
    assert texts(msg.authority)[0].endswith("2024010101 7200 3600 1209600 300")


def test_nxdomain_below_existing_name(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "deep.down.www.example.test.", "A")
    assert msg.rcode() == NXDOMAIN
    assert_negative_soa(msg)


@pytest.mark.parametrize("qtype", ["A", "TXT", "ANY"])
def test_empty_non_terminal_is_nodata(zones: ZoneSet, qtype: str) -> None:
    msg, _, _ = ask(zones, "ent.example.test.", qtype, tcp=True)
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert msg.answer == []
    assert_negative_soa(msg)


def test_apex_nodata(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "example.test.", "TXT")
    assert msg.rcode() == NOERROR and msg.answer == []
    assert_negative_soa(msg)


# --- wildcards (RFC 4592) ----------------------------------------------------------------------


@pytest.mark.parametrize("qname", ["foo.wild.example.test.", "a.b.c.wild.example.test."])
def test_wildcard_synthesis_owner_is_qname(zones: ZoneSet, qname: str) -> None:
    msg, _, _ = ask(zones, qname, "TXT")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert texts(msg.answer) == [f'{qname} 3600 IN TXT "wild"']


def test_wildcard_mx_gets_additional(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "host.wild.example.test.", "MX")
    assert texts(msg.answer) == ["host.wild.example.test. 3600 IN MX 10 mail.example.test."]
    assert sorted(owners_types(msg.additional)) == [
        ("mail.example.test.", "A"),
        ("mail.example.test.", "AAAA"),
    ]


def test_wildcard_without_the_type_is_nodata(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "foo.wild.example.test.", "A")
    assert msg.rcode() == NOERROR and msg.answer == []
    assert_negative_soa(msg)


def test_wildcard_not_applied_when_name_exists(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "exists.wild.example.test.", "TXT")
    assert msg.rcode() == NOERROR and msg.answer == []
    assert_negative_soa(msg)


def test_wildcard_blocked_by_empty_non_terminal(zones: ZoneSet) -> None:
    # blocked.wild exists (empty non-terminal): it is not synthesized from *.wild ...
    msg, _, _ = ask(zones, "blocked.wild.example.test.", "TXT")
    assert msg.rcode() == NOERROR and msg.answer == []
    # ... and below it the closest encloser is blocked.wild, which has no wildcard.
    msg, _, _ = ask(zones, "other.blocked.wild.example.test.", "TXT")
    assert msg.rcode() == NXDOMAIN and msg.answer == []
    assert_negative_soa(msg)


def test_wildcard_cname(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "anything.wc.example.test.", "A")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert texts(msg.answer) == [
        "anything.wc.example.test. 3600 IN CNAME www.example.test.",
        "www.example.test. 3600 IN A 192.0.2.80",
    ]


def test_wildcard_cname_out_of_zone(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "x.wcout.example.test.", "AAAA")
    assert texts(msg.answer) == ["x.wcout.example.test. 3600 IN CNAME target.example.net."]


def test_wildcard_itself_asked_directly(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "*.wild.example.test.", "TXT")
    assert texts(msg.answer) == ['*.wild.example.test. 3600 IN TXT "wild"']


RFC4592_ZONE = """\
$ORIGIN example.
example.                 3600 IN  SOA   ns.example.com. hm.example.com. 1 7200 3600 1209600 300
example.                 3600     NS    ns.example.com.
example.                 3600     NS    ns.example.net.
*.example.               3600     TXT   "this is a wildcard"
*.example.               3600     MX    10 host1.example.
sub.*.example.           3600     TXT   "this is not a wildcard"
host1.example.           3600     A     192.0.2.1
_ssh._tcp.host1.example. 3600     SRV   0 0 22 host1.example.
_ssh._tcp.host2.example. 3600     SRV   0 0 22 host1.example.
subdel.example.          3600     NS    ns.example.com.
subdel.example.          3600     NS    ns.example.net.
"""


@pytest.fixture(scope="module")
def rfc4592() -> Zone:
    return make_zone(RFC4592_ZONE, "example.")


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "answer"),
    [
        # RFC 4592 2.2.1: synthesized from a wildcard
        ("host3.example.", "MX", NOERROR, ["host3.example. 3600 IN MX 10 host1.example."]),
        ("host3.example.", "A", NOERROR, []),  # no A at *.example: no error, but no data
        ("foo.bar.example.", "TXT", NOERROR, ['foo.bar.example. 3600 IN TXT "this is a wildcard"']),
        # RFC 4592 2.2.1: not synthesized
        ("host1.example.", "MX", NOERROR, []),  # host1.example. exists
        ("sub.*.example.", "MX", NOERROR, []),  # sub.*.example. exists
        ("_telnet._tcp.host1.example.", "SRV", NXDOMAIN, []),  # _tcp.host1.example. exists
        ("ghost.*.example.", "MX", NXDOMAIN, []),  # *.example. exists, *.*.example. does not
        # and the neighbours
        ("_tcp.host2.example.", "SRV", NOERROR, []),  # empty non-terminal
        ("host2.example.", "A", NOERROR, []),  # empty non-terminal
        (
            "_ssh._tcp.host2.example.",
            "SRV",
            NOERROR,
            ["_ssh._tcp.host2.example. 3600 IN SRV 0 0 22 host1.example."],
        ),
    ],
)
def test_rfc4592_section_2_2_1(
    rfc4592: Zone, qname: str, qtype: str, rcode: int, answer: list[str]
) -> None:
    result = lookup(rfc4592, n(qname), dns.rdatatype.from_text(qtype))
    assert result.rcode == rcode
    assert result.aa
    assert texts(result.answer) == answer
    if not answer:
        assert [(r.name, r.rdtype) for r in result.authority] == [
            (n("example."), dns.rdatatype.SOA)
        ]


def test_rfc4592_wildcard_mx_additional(rfc4592: Zone) -> None:
    result = lookup(rfc4592, n("host3.example."), dns.rdatatype.MX)
    assert texts(result.additional) == ["host1.example. 3600 IN A 192.0.2.1"]


def test_rfc4592_subdel_is_a_referral(rfc4592: Zone) -> None:
    # host.subdel.example.: subdel.example. exists and is a zone cut.
    result = lookup(rfc4592, n("host.subdel.example."), dns.rdatatype.A)
    assert result.rcode == NOERROR
    assert not result.aa
    assert result.answer == []
    assert owners_types(result.authority) == [("subdel.example.", "NS")]


# --- referrals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "qtype"),
    [
        ("host.sub.example.test.", "A"),
        ("deep.host.sub.example.test.", "MX"),
        ("sub.example.test.", "A"),  # the cut itself
        ("sub.example.test.", "NS"),  # NS at a cut is the child's: a referral, not an answer
        ("sub.example.test.", "SOA"),
        ("ns.sub.example.test.", "A"),  # glue is not authoritative data
    ],
)
def test_referral(zones: ZoneSet, qname: str, qtype: str) -> None:
    msg, _, _ = ask(zones, qname, qtype)
    assert msg.rcode() == NOERROR
    assert not is_aa(msg)
    assert msg.answer == []
    assert owners_types(msg.authority)[0] == ("sub.example.test.", "NS")
    assert {rd.target.to_text() for rd in msg.authority[0]} == {
        "ns.sub.example.test.",
        "ns.sib.example.test.",
    }
    assert all(r.rdtype != dns.rdatatype.SOA for r in msg.authority)
    # In-domain glue (A and AAAA) and sibling glue (ns.sib, below another cut) in additional.
    assert sorted(owners_types(msg.additional)) == [
        ("ns.sib.example.test.", "A"),
        ("ns.sub.example.test.", "A"),
        ("ns.sub.example.test.", "AAAA"),
    ]


def test_referral_of_unsigned_zone_has_no_ds_even_with_do(zones: ZoneSet) -> None:
    # The DS of a referral comes with its RRSIGs (RFC 4035 3.1.4); an unsigned zone has none,
    # and BIND 9.18 leaves the DS out: so do we.
    msg, _, _ = ask(zones, "host.sub.example.test.", "A", use_edns=0, want_dnssec=True)
    assert not is_aa(msg)
    assert owners_types(msg.authority) == [("sub.example.test.", "NS")]


def test_referral_of_signed_zone_carries_ds_when_do_is_set() -> None:
    signed_text = MAIN + (
        "sub RRSIG DS 13 3 3600 20300101000000 20200101000000 12345 example.test. "
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
    )
    signed, _ = parse_zone(signed_text, "example.test.", "signed")
    assert signed.signed
    msg, _, _ = ask(ZoneSet({signed.origin: signed}), "host.sub.example.test.", "A", use_edns=0,
                    want_dnssec=True)
    assert not is_aa(msg)
    assert ("sub.example.test.", "DS") in owners_types(msg.authority)


@pytest.mark.parametrize("edns", [-1, 0])
def test_referral_has_no_ds_without_do(zones: ZoneSet, edns: int) -> None:
    # RFC 3225 section 3: with DO clear the client "is unprepared to handle DNSSEC security
    # RRs and those RRs MUST NOT be returned in the response (unless [...] explicitly queried
    # for)". DS is a DNSSEC RR (RFC 4034 section 5); an A query does not ask for it.
    msg, _, _ = ask(zones, "host.sub.example.test.", "A", use_edns=edns)
    assert not is_aa(msg)
    assert owners_types(msg.authority) == [("sub.example.test.", "NS")]


def test_ds_at_cut_answered_from_parent(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "sub.example.test.", "DS")
    assert msg.rcode() == NOERROR
    assert is_aa(msg)
    assert owners_types(msg.answer) == [("sub.example.test.", "DS")]
    assert all(r.rdtype != dns.rdatatype.NS for r in msg.authority)


def test_ds_absent_at_cut_is_nodata_not_referral(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "sib.example.test.", "DS")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert msg.answer == []
    assert_negative_soa(msg)


def test_ds_below_cut_is_referral(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "x.sub.example.test.", "DS")
    assert not is_aa(msg)
    assert owners_types(msg.authority)[0] == ("sub.example.test.", "NS")


PARENT = """\
$TTL 3600
@ SOA ns hostmaster 1 7200 3600 1209600 300
@ NS ns
ns A 192.0.2.1
child NS ns.child
child DS 11111 13 2 86F7E437FAA5A7FCE15D1DDCB9EAEAEA377667B886F7E437FAA5A7FCE15D1DDC
ns.child A 192.0.2.61
"""
CHILD = """\
$TTL 600
@ SOA ns hostmaster 7 7200 3600 1209600 300
@ NS ns
ns A 192.0.2.61
www A 192.0.2.62
"""


@pytest.fixture(scope="module")
def parent_child() -> ZoneSet:
    parent = make_zone(PARENT, "parent.test.")
    child = make_zone(CHILD, "child.parent.test.")
    return ZoneSet({parent.origin: parent, child.origin: child})


def test_zoneset_find(parent_child: ZoneSet) -> None:
    parent, child = n("parent.test."), n("child.parent.test.")
    DS, A = dns.rdatatype.DS, dns.rdatatype.A
    assert parent_child.find(n("child.parent.test."), DS).origin == parent
    assert parent_child.find(n("child.parent.test."), A).origin == child
    assert parent_child.find(n("child.parent.test."), dns.rdatatype.NS).origin == child
    assert parent_child.find(n("www.child.parent.test."), DS).origin == child
    assert parent_child.find(n("WWW.Child.Parent.Test."), A).origin == child
    assert parent_child.find(n("x.parent.test."), A).origin == parent
    assert parent_child.find(n("parent.test."), DS).origin == parent  # parent not served
    assert parent_child.find(n("test."), A) is None
    assert parent_child.find(n("other.test."), DS) is None


def test_ds_in_served_parent_and_child(parent_child: ZoneSet) -> None:
    msg, _, _ = ask(parent_child, "child.parent.test.", "DS")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert owners_types(msg.answer) == [("child.parent.test.", "DS")]
    assert msg.answer[0].ttl == 3600  # from the parent zone
    assert msg.authority == []


def test_child_apex_answered_from_child(parent_child: ZoneSet) -> None:
    msg, _, _ = ask(parent_child, "child.parent.test.", "SOA")
    assert is_aa(msg)
    assert texts(msg.answer)[0].startswith("child.parent.test. 600 IN SOA")
    msg, _, _ = ask(parent_child, "child.parent.test.", "NS")
    assert is_aa(msg)
    assert texts(msg.answer) == ["child.parent.test. 600 IN NS ns.child.parent.test."]
    msg, _, _ = ask(parent_child, "www.child.parent.test.", "A")
    assert is_aa(msg) and texts(msg.answer) == ["www.child.parent.test. 600 IN A 192.0.2.62"]


# --- DNAME (RFC 6672) ------------------------------------------------------------------------


def test_dname_substitution(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "y.d.example.test.", "A")
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert texts(msg.answer) == [
        "d.example.test. 300 IN DNAME target.example.test.",
        # the synthesized CNAME has the TTL of the DNAME (RFC 6672 2.3)
        "y.d.example.test. 300 IN CNAME y.target.example.test.",
        "y.target.example.test. 3600 IN A 192.0.2.77",
    ]


def test_dname_to_missing_name_is_nxdomain(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "z.d.example.test.", "A")
    assert msg.rcode() == NXDOMAIN
    assert owners_types(msg.answer) == [
        ("d.example.test.", "DNAME"),
        ("z.d.example.test.", "CNAME"),
    ]
    assert_negative_soa(msg)


def test_dname_out_of_zone(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "a.b.dout.example.test.", "MX")
    assert msg.rcode() == NOERROR
    assert texts(msg.answer) == [
        "dout.example.test. 600 IN DNAME example.net.",
        "a.b.dout.example.test. 600 IN CNAME a.b.example.net.",
    ]


def test_dname_owner_itself_is_not_redirected(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "d.example.test.", "A")
    assert msg.rcode() == NOERROR and msg.answer == []
    assert_negative_soa(msg)
    msg, _, _ = ask(zones, "d.example.test.", "DNAME")
    assert texts(msg.answer) == ["d.example.test. 300 IN DNAME target.example.test."]


def test_dname_overflow_is_yxdomain() -> None:
    long_target = ".".join(["x" * 60] * 3) + ".example.net."  # 183 + 13 octets
    zone = make_zone(
        f"$TTL 60\n@ SOA ns hm 1 2 3 4 5\n@ NS ns.example.net.\nd DNAME {long_target}\n",
        "dn.test.",
    )
    qname = ".".join(["q" * 60, "q" * 20]) + ".d.dn.test."
    msg, _, _ = ask(ZoneSet({zone.origin: zone}), qname, "A")
    assert msg.rcode() == YXDOMAIN
    assert owners_types(msg.answer) == [("d.dn.test.", "DNAME")]


# --- additional section -----------------------------------------------------------------------


def test_additional_for_mx(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "example.test.", "MX")
    assert len(texts(msg.answer)) == 2
    assert sorted(owners_types(msg.additional)) == [
        ("mail.example.test.", "A"),
        ("mail.example.test.", "AAAA"),
    ]


def test_additional_for_srv(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "_sip._tcp.example.test.", "SRV")
    assert sorted(owners_types(msg.additional)) == [
        ("www.example.test.", "A"),
        ("www.example.test.", "AAAA"),
    ]


def test_additional_for_ns(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "example.test.", "NS")
    assert is_aa(msg)
    assert sorted(owners_types(msg.answer)) == [("example.test.", "NS")]
    assert sorted(owners_types(msg.additional)) == [
        ("ns1.example.test.", "A"),
        ("ns1.example.test.", "AAAA"),
        ("ns2.example.test.", "A"),
    ]


def test_no_additional_for_a(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A", use_edns=0)
    assert msg.additional == []


# --- ANY (RFC 8482) ---------------------------------------------------------------------------


def test_any_in_full_over_tcp(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "example.test.", "ANY", tcp=True)
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert sorted({t for _, t in owners_types(msg.answer)}) == ["MX", "NS", "SOA"]


@pytest.mark.parametrize("edns", [-1, 0])
def test_any_one_rrset_over_udp(zones: ZoneSet, edns: int) -> None:
    msg, _, _ = ask(zones, "example.test.", "ANY", use_edns=edns)
    assert msg.rcode() == NOERROR and is_aa(msg)
    assert len(msg.answer) == 1
    assert msg.answer[0].name == n("example.test.")
    assert not msg.flags & dns.flags.TC


def test_any_lookup_direct(main_zone: Zone) -> None:
    full = lookup(main_zone, n("www.example.test."), dns.rdatatype.ANY, any_in_full=True)
    one = lookup(main_zone, n("www.example.test."), dns.rdatatype.ANY, any_in_full=False)
    assert sorted(owners_types(full.answer)) == [
        ("www.example.test.", "A"),
        ("www.example.test.", "AAAA"),
    ]
    assert len(one.answer) == 1


# --- refusals and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("qname", ["www.example.net.", "test.", ".", "example.test.evil."])
def test_refused_outside_zones(zones: ZoneSet, qname: str) -> None:
    msg, _, _ = ask(zones, qname, "A")
    assert msg.rcode() == REFUSED
    assert not is_aa(msg)
    assert msg.answer == [] and msg.authority == []


@pytest.mark.parametrize("qclass", ["CH", "HS", "ANY"])
def test_other_classes_refused(zones: ZoneSet, qclass: str) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A", qclass=qclass)
    assert msg.rcode() == REFUSED
    assert msg.answer == []


def test_chaos_version_bind_refused(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "version.bind.", "TXT", qclass="CH")
    assert msg.rcode() == REFUSED


@pytest.mark.parametrize("opcode", [2, 3, 6, 7, 15])
def test_unknown_opcode_notimp(zones: ZoneSet, opcode: int) -> None:
    query = dns.message.make_query("www.example.test.", "A")
    query.set_opcode(opcode)
    reply = handle(zones, query.to_wire(), Request())
    assert reply is not None
    qid, flags = struct.unpack("!HH", reply[:4])
    assert qid == query.id
    assert flags & dns.flags.QR
    assert (flags >> 11) & 0xF == opcode
    assert flags & 0xF == NOTIMP


def raw_query(qid: int, qdcount: int, questions: bytes, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qdcount, 0, 0, 0) + questions


def q_wire(name: str, qtype: int = 1, qclass: int = 1) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", qtype, qclass)


@pytest.mark.parametrize(
    "wire",
    [
        raw_query(0x1234, 0, b""),
        raw_query(0x1234, 2, q_wire("www.example.test.") + q_wire("ns1.example.test.")),
        raw_query(0x1234, 2, q_wire("www.example.test.") + q_wire("www.example.test.")),
    ],
    ids=["qdcount-0", "qdcount-2", "qdcount-2-same"],
)
def test_formerr_for_question_count(zones: ZoneSet, wire: bytes) -> None:
    reply = handle(zones, wire, Request())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x1234
    assert msg.flags & dns.flags.QR
    assert msg.rcode() == FORMERR
    assert msg.answer == []


def test_axfr_over_udp_is_refused(zones: ZoneSet) -> None:
    # Issue 4 asks for REFUSED over UDP (BIND answers FORMERR; RFC 5936 4.2 only says AXFR
    # is a TCP protocol): REFUSED tells the client plainly that this server will not do it.
    msg, _, _ = ask(zones, "example.test.", "AXFR")
    assert msg.rcode() == dns.rcode.REFUSED
    assert msg.answer == []


def test_response_is_not_answered(zones: ZoneSet) -> None:
    query = dns.message.make_query("www.example.test.", "A")
    wire = bytearray(query.to_wire())
    wire[2] |= 0x80  # QR
    assert handle(zones, bytes(wire), Request()) is None
    assert handle(zones, bytes(wire), Request(tcp=True)) is None
    # and a real reply of ours, fed back in, is not answered either
    reply = handle(zones, query.to_wire(), Request())
    assert reply is not None
    assert handle(zones, reply, Request()) is None


# --- EDNS (RFC 6891) --------------------------------------------------------------------------


def test_badvers(zones: ZoneSet) -> None:
    msg, reply, _ = ask(zones, "www.example.test.", "A", use_edns=1)
    assert msg.edns == 0  # the OPT is there, with the version we do speak
    assert msg.rcode() == dns.rcode.BADVERS
    assert struct.unpack("!H", reply[2:4])[0] & 0xF == 0  # low bits of 16 in the header
    assert (msg.ednsflags >> 24) & 0xFF == 1  # high bits in the OPT's extended rcode
    assert msg.answer == []


def test_do_bit_copied(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A", use_edns=0, want_dnssec=True)
    assert msg.ednsflags & dns.flags.DO
    msg, _, _ = ask(zones, "www.example.test.", "A", use_edns=0, want_dnssec=False)
    assert msg.edns == 0
    assert not msg.ednsflags & dns.flags.DO


@pytest.mark.parametrize("payload", [512, 1232, 4096, 65535])
def test_our_edns_payload(zones: ZoneSet, payload: int) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A", use_edns=0, payload=payload)
    assert msg.edns == 0
    assert msg.payload == 1232


def test_no_opt_without_edns(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "www.example.test.", "A")
    assert msg.edns == -1


def test_unknown_edns_options_ignored(zones: ZoneSet) -> None:
    options = [dns.edns.GenericOption(65001, b"hello"), dns.edns.GenericOption(30000, b"")]
    msg, _, _ = ask(zones, "www.example.test.", "A", use_edns=0, options=options)
    assert msg.rcode() == NOERROR
    assert texts(msg.answer) == ["www.example.test. 3600 IN A 192.0.2.80"]
    assert all(o.otype not in (65001, 30000) for o in msg.options)


# --- sizes and truncation ----------------------------------------------------------------------


def big_zone() -> ZoneSet:
    lines = ["$TTL 300", "@ SOA ns hm 1 2 3 4 5", "@ NS ns", "ns A 192.0.2.1"]
    for count, name in ((4, "medium"), (6, "large"), (12, "huge")):
        lines += [f'{name} TXT "{i:02d}{"x" * 198}"' for i in range(count)]
    # many MX targets, each with many addresses: the answer fits 512, the additional does not
    for i in range(8):
        lines.append(f"@ MX {i} mx{i}")
        lines += [f"mx{i} AAAA 2001:db8::{i}:{j}" for j in range(4)]
    # a delegation whose in-domain glue cannot fit in 512 octets
    for i in range(8):
        lines.append(f"fat NS ns{i}.fat")
        lines += [f"ns{i}.fat AAAA 2001:db8::f:{i}:{j}" for j in range(3)]
    zone = make_zone("\n".join(lines) + "\n", "big.test.")
    return ZoneSet({zone.origin: zone})


@pytest.fixture(scope="module")
def big() -> ZoneSet:
    return big_zone()


def assert_truncated(msg: dns.message.Message, reply: bytes, wire: bytes, limit: int) -> None:
    assert len(reply) <= limit
    assert msg.flags & dns.flags.TC
    assert question_bytes(reply) == question_bytes(wire)
    assert msg.answer == []
    assert msg.rcode() == NOERROR


def test_tc_without_edns(big: ZoneSet) -> None:
    msg, reply, wire = ask(big, "medium.big.test.", "TXT")
    assert_truncated(msg, reply, wire, 512)
    assert msg.edns == -1


def test_same_answer_over_tcp_is_whole(big: ZoneSet) -> None:
    for name, count in (("medium", 4), ("huge", 12)):
        msg, reply, _ = ask(big, f"{name}.big.test.", "TXT", tcp=True)
        assert not msg.flags & dns.flags.TC
        assert len(texts(msg.answer)) == count
        assert len(reply) > 512


def test_fits_the_clients_edns_size(big: ZoneSet) -> None:
    msg, reply, _ = ask(big, "medium.big.test.", "TXT", use_edns=0, payload=1232)
    assert not msg.flags & dns.flags.TC
    assert len(texts(msg.answer)) == 4
    assert 512 < len(reply) <= 1232


def test_tc_when_over_the_clients_edns_size(big: ZoneSet) -> None:
    msg, reply, wire = ask(big, "medium.big.test.", "TXT", use_edns=0, payload=700)
    assert_truncated(msg, reply, wire, 700)
    assert msg.edns == 0  # the truncated reply keeps its OPT


def test_client_size_below_512_counts_as_512(big: ZoneSet, zones: ZoneSet) -> None:
    # RFC 6891 6.2.5: values below 512 are treated as 512.
    msg, reply, _ = ask(zones, "example.test.", "MX", use_edns=0, payload=100)
    assert not msg.flags & dns.flags.TC and len(reply) > 100
    msg, reply, wire = ask(big, "medium.big.test.", "TXT", use_edns=0, payload=100)
    assert_truncated(msg, reply, wire, 512)


def test_tc_above_our_payload(big: ZoneSet) -> None:
    # The client offers 4096; we never send more than our own 1232 over UDP.
    msg, reply, wire = ask(big, "large.big.test.", "TXT", use_edns=0, payload=4096)
    assert_truncated(msg, reply, wire, 1232)


def test_additional_dropped_without_tc(big: ZoneSet) -> None:
    msg, reply, _ = ask(big, "big.test.", "MX")
    assert len(reply) <= 512
    assert not msg.flags & dns.flags.TC
    assert len(texts(msg.answer)) == 8
    assert len(texts(msg.additional)) < 32
    # With room, all 32 addresses go out.
    msg, _, _ = ask(big, "big.test.", "MX", tcp=True)
    assert len(texts(msg.additional)) == 32


def test_referral_glue_that_does_not_fit_sets_tc(big: ZoneSet) -> None:
    # RFC 9471: in-domain glue must be sent, or TC set.
    msg, reply, wire = ask(big, "www.fat.big.test.", "A")
    assert len(reply) <= 512
    assert msg.flags & dns.flags.TC
    assert question_bytes(reply) == question_bytes(wire)
    msg, _, _ = ask(big, "www.fat.big.test.", "A", tcp=True)
    assert len(texts(msg.additional)) == 24 and not msg.flags & dns.flags.TC


# --- case (draft-vixie-dnsext-dns0x20, RFC 4343) --------------------------------------------------


@pytest.mark.parametrize(
    ("qname", "qtype", "rcode"),
    [
        ("WwW.ExAmPlE.tEsT.", "A", NOERROR),
        ("A.EXAMPLE.TEST.", "A", NOERROR),
        ("NoPe.ExAmPlE.TeSt.", "A", NXDOMAIN),
        ("HoSt.SuB.eXaMpLe.TeSt.", "A", NOERROR),
        ("FoO.WiLd.ExAmPlE.TeSt.", "TXT", NOERROR),
        ("wWw.ExAmPlE.NeT.", "A", REFUSED),
    ],
)
def test_0x20_case_echoed(zones: ZoneSet, qname: str, qtype: str, rcode: int) -> None:
    msg, reply, wire = ask(zones, qname, qtype)
    assert question_bytes(reply) == question_bytes(wire)
    assert qname.split(".")[0].encode() in question_bytes(reply)
    assert msg.rcode() == rcode


def test_0x20_answer_content(zones: ZoneSet) -> None:
    msg, _, _ = ask(zones, "WwW.ExAmPlE.tEsT.", "A")
    assert [rd.to_text() for rd in msg.answer[0]] == ["192.0.2.80"]
    assert msg.answer[0].name == n("www.example.test.")


def test_0x20_case_echoed_in_truncated_reply(big: ZoneSet) -> None:
    msg, reply, wire = ask(big, "MeDiUm.BiG.tEsT.", "TXT")
    assert msg.flags & dns.flags.TC
    assert question_bytes(reply) == question_bytes(wire)


def test_formerr_for_malformed_opt_keeps_an_opt(zones: ZoneSet) -> None:
    # RFC 6891 section 7: "If there is a problem with processing the OPT record itself, such as
    # an option value that is badly formatted [...], a FORMERR MUST be returned. If this occurs,
    # the response MUST include an OPT record." Here an option claims 10 octets and has 2.
    question = q_wire("www.example.test.")
    rdata = struct.pack("!HH", 65001, 10) + b"ab"
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(rdata)) + rdata
    wire = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 1) + question + opt
    reply = handle(zones, wire, Request())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == 0x4242
    assert msg.rcode() == FORMERR
    assert msg.edns == 0, "a FORMERR about the OPT record must carry an OPT record"
