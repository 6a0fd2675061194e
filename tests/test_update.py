"""RFC 2136 dynamic updates over a zone: prerequisites, prescan, changes, serial, checks.

Every message is built with dnspython's UpdateMessage and goes through the wire, as the server
receives it. Where dnspython cannot write what a hostile client can (a TTL on an RR without data),
the wire is patched by hand.
"""

from __future__ import annotations

import datetime
import struct

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.update
import dns.wire
import pytest

from gitdns.diff import records
from gitdns.update import UpdateResult, apply_update
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.test.")
ZONE_TEXT = """\
$TTL 3600
@       IN SOA ns1 hostmaster 2024010101 7200 900 1209600 300
        IN NS  ns1
        IN NS  ns2
        IN MX  10 mail
        IN TXT "apex"
ns1     IN A   192.0.2.1
ns2     IN A   192.0.2.2
mail    IN A   192.0.2.25
www     300 IN A 192.0.2.10
        300 IN A 192.0.2.11
        IN TXT "web"
alias   IN CNAME www
deep.ent IN TXT "below an empty non-terminal"
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.53
"""

NOERROR, FORMERR, NOTAUTH, NOTZONE, REFUSED = (
    dns.rcode.NOERROR,
    dns.rcode.FORMERR,
    dns.rcode.NOTAUTH,
    dns.rcode.NOTZONE,
    dns.rcode.REFUSED,
)
YXDOMAIN, NXDOMAIN, YXRRSET, NXRRSET = (
    dns.rcode.YXDOMAIN,
    dns.rcode.NXDOMAIN,
    dns.rcode.YXRRSET,
    dns.rcode.NXRRSET,
)
PREREQ, UPDATE = 1, 2


@pytest.fixture(scope="module")
def zone() -> Zone:
    z, _warnings = parse_zone(ZONE_TEXT, ORIGIN)
    return z


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ORIGIN)


def message() -> dns.update.UpdateMessage:
    return dns.update.UpdateMessage(ORIGIN)


def received(msg: dns.message.Message | bytes) -> dns.message.Message:
    """The message as the server parses it."""
    wire = msg if isinstance(msg, bytes) else msg.to_wire()
    return dns.message.from_wire(wire, one_rr_per_rrset=True)


def run(zone: Zone, msg: dns.message.Message | bytes, **kw) -> UpdateResult:
    return apply_update(zone, received(msg), **kw)


def texts(zone: Zone, name: str, rdtype: str) -> set[str]:
    rrset = zone.get(n(name), dns.rdatatype.from_text(rdtype))
    return set() if rrset is None else {rd.to_text() for rd in rrset}


def ttl(zone: Zone, name: str, rdtype: str) -> int:
    rrset = zone.get(n(name), dns.rdatatype.from_text(rdtype))
    assert rrset is not None
    return rrset.ttl


def add_www2(msg: dns.update.UpdateMessage) -> dns.update.UpdateMessage:
    """The change each prerequisite test guards: is it made or not?"""
    msg.add("www2", 300, "A", "192.0.2.7")
    return msg


def assert_refused(result: UpdateResult, rcode: int) -> None:
    assert dns.rcode.to_text(result.rcode) == dns.rcode.to_text(rcode), result.reason
    assert result.zone is None and result.diff is None
    assert result.reason


def assert_applied(result: UpdateResult) -> Zone:
    assert result.rcode == NOERROR, result.reason
    assert result.zone is not None and result.diff is not None
    return result.zone


def patch_ttl(wire: bytes, section: int, index: int, value: int) -> bytes:
    """`wire` with the TTL of RR `index` of `section` set to `value`."""
    p = dns.wire.Parser(wire)
    counts = p.get_struct("!HHHHHH")[2:]
    for _ in range(counts[0]):
        p.get_name(decompress=True)
        p.get_struct("!HH")
    for sec in range(1, section + 1):
        for i in range(counts[sec]):
            p.get_name(decompress=True)
            at = p.current
            rdlen = p.get_struct("!HHIH")[3]
            if sec == section and i == index:
                return wire[: at + 4] + struct.pack("!I", value) + wire[at + 8 :]
            p.seek(p.current + rdlen)
    raise AssertionError("no such RR")


# --- the zone section (RFC 2136 3.1) --------------------------------------------------------


def test_zone_section_for_another_zone_is_notauth(zone):
    msg = dns.update.UpdateMessage("other.test.")
    msg.add("www.other.test.", 300, "A", "192.0.2.7")
    assert_refused(run(zone, msg), NOTAUTH)


def test_zone_section_without_exactly_one_entry_is_formerr(zone):
    empty = message()
    empty.zone = []
    assert_refused(apply_update(zone, empty), FORMERR)
    two = message()
    two.zone = [two.zone[0], dns.rrset.RRset(ORIGIN, dns.rdataclass.IN, dns.rdatatype.SOA)]
    assert_refused(apply_update(zone, two), FORMERR)


def test_zone_section_of_another_type_is_formerr(zone):
    msg = add_www2(message())
    msg.zone = [dns.rrset.RRset(ORIGIN, dns.rdataclass.IN, dns.rdatatype.A)]
    assert_refused(apply_update(zone, msg), FORMERR)


# --- prerequisites (RFC 2136 2.4, 3.2) ------------------------------------------------------


def test_name_in_use(zone):
    ok = message()
    ok.present("www")
    assert texts(assert_applied(run(zone, add_www2(ok))), "www2", "A") == {"192.0.2.7"}
    missing = message()
    missing.present("nowhere")
    assert_refused(run(zone, add_www2(missing)), NXDOMAIN)


def test_an_empty_non_terminal_is_not_in_use(zone):
    present = message()
    present.present("ent")
    assert_refused(run(zone, add_www2(present)), NXDOMAIN)
    absent = message()
    absent.absent("ent")
    assert_applied(run(zone, add_www2(absent)))


def test_name_not_in_use(zone):
    ok = message()
    ok.absent("www2")
    assert_applied(run(zone, add_www2(ok)))
    taken = message()
    taken.absent("www")
    assert_refused(run(zone, add_www2(taken)), YXDOMAIN)


def test_rrset_exists_value_independent(zone):
    ok = message()
    ok.present("www", "A")
    assert_applied(run(zone, add_www2(ok)))
    missing = message()
    missing.present("www", "AAAA")
    assert_refused(run(zone, add_www2(missing)), NXRRSET)


def test_rrset_does_not_exist(zone):
    ok = message()
    ok.absent("www", "AAAA")
    assert_applied(run(zone, add_www2(ok)))
    there = message()
    there.absent("www", "A")
    assert_refused(run(zone, add_www2(there)), YXRRSET)


def test_rrset_exists_value_dependent_compares_sets(zone):
    ok = message()
    ok.present("www", "A", "192.0.2.11", "192.0.2.10")  # another order
    assert_applied(run(zone, add_www2(ok)))
    subset = message()
    subset.present("www", "A", "192.0.2.10")
    assert_refused(run(zone, add_www2(subset)), NXRRSET)
    superset = message()
    superset.present("www", "A", "192.0.2.10", "192.0.2.11", "192.0.2.12")
    assert_refused(run(zone, add_www2(superset)), NXRRSET)
    absent = message()
    absent.present("nowhere", "A", "192.0.2.10")
    assert_refused(run(zone, add_www2(absent)), NXRRSET)


def test_value_dependent_prerequisite_with_a_ttl_is_formerr(zone):
    msg = message()
    rds = dns.rdataset.from_text("IN", "A", 300, "192.0.2.10", "192.0.2.11")
    msg.present("www", rds)
    assert_refused(run(zone, add_www2(msg)), FORMERR)


@pytest.mark.parametrize("form", ["name", "rrset", "absent-name", "absent-rrset"])
def test_prerequisite_without_data_and_a_ttl_is_formerr(zone, form):
    msg = message()
    if form == "name":
        msg.present("www")
    elif form == "rrset":
        msg.present("www", "A")
    elif form == "absent-name":
        msg.absent("www2")
    else:
        msg.absent("www", "AAAA")
    wire = add_www2(msg).to_wire()
    assert_applied(run(zone, wire))  # the same prerequisite with TTL 0 holds
    assert_refused(run(zone, patch_ttl(wire, PREREQ, 0, 300)), FORMERR)


def test_prerequisite_outside_the_zone_is_notzone(zone):
    msg = message()
    msg.present("www.other.test.")
    assert_refused(run(zone, add_www2(msg)), NOTZONE)


def test_prerequisite_of_another_class_is_formerr(zone):
    msg = message()
    rrset = msg.find_rrset(
        msg.prerequisite, n("www"), dns.rdataclass.CH, dns.rdatatype.TXT,
        create=True, force_unique=True,
    )
    rrset.add(dns.rdata.from_text(dns.rdataclass.CH, dns.rdatatype.TXT, '"x"'), 0)
    assert_refused(run(zone, add_www2(msg)), FORMERR)


def test_the_first_failing_prerequisite_decides(zone):
    msg = message()
    msg.present("nowhere")  # NXDOMAIN
    msg.absent("www", "A")  # YXRRSET
    assert_refused(run(zone, add_www2(msg)), NXDOMAIN)
    msg = message()
    msg.absent("www", "A")
    msg.present("nowhere")
    assert_refused(run(zone, add_www2(msg)), YXRRSET)


def test_a_failing_prerequisite_changes_nothing(zone):
    before = set(records(zone))
    msg = message()
    msg.present("www", "AAAA")
    msg.delete("www")
    msg.add("www2", 300, "A", "192.0.2.7")
    result = run(zone, msg)
    assert_refused(result, NXRRSET)
    assert set(records(zone)) == before and zone.serial == 2024010101


# --- prescan (RFC 2136 3.4.1) ---------------------------------------------------------------


def test_update_outside_the_zone_is_notzone_and_nothing_is_applied(zone):
    msg = add_www2(message())
    msg.add("www.other.test.", 300, "A", "192.0.2.7")
    assert_refused(run(zone, msg), NOTZONE)


def _raw_update(rdclass: int, rdtype: int, data: bytes | None, ttl: int = 0) -> bytes:
    """An UPDATE whose only change is (www, rdclass, rdtype, ttl, data), written by hand."""
    msg = message()
    wire = bytearray(msg.to_wire())
    struct.pack_into("!H", wire, 8, 1)  # UPCOUNT
    rdata = data or b""
    wire += n("www").to_wire() + struct.pack("!HHIH", rdtype, rdclass, ttl, len(rdata)) + rdata
    return bytes(wire)


@pytest.mark.parametrize(
    "rdclass, rdtype, data, ttl",
    [
        (dns.rdataclass.IN, dns.rdatatype.ANY, b"\x00", 300),
        (dns.rdataclass.IN, dns.rdatatype.AXFR, b"\x00", 300),
        (dns.rdataclass.IN, dns.rdatatype.MAILA, b"\x00", 300),
        (dns.rdataclass.ANY, dns.rdatatype.AXFR, None, 0),
        (dns.rdataclass.ANY, dns.rdatatype.A, None, 300),
        (dns.rdataclass.NONE, dns.rdatatype.ANY, b"\x00", 0),
        (dns.rdataclass.NONE, dns.rdatatype.A, b"\xc0\x00\x02\x0a", 300),
        (dns.rdataclass.CH, dns.rdatatype.TXT, b"\x01x", 300),
    ],
    ids=["add-ANY", "add-AXFR", "add-MAILA", "delete-AXFR", "delete-rrset-ttl",
         "delete-rr-ANY", "delete-rr-ttl", "class-CH"],
)
def test_prescan_formerr(zone, rdclass, rdtype, data, ttl):
    assert_refused(run(zone, _raw_update(rdclass, rdtype, data, ttl)), FORMERR)


def test_hand_written_updates_are_read_as_dnspython_writes_them(zone):
    """The raw writer above is right: the same RRs, well formed, are applied."""
    result = run(zone, _raw_update(dns.rdataclass.NONE, dns.rdatatype.A, b"\xc0\x00\x02\x0a"))
    assert texts(assert_applied(result), "www", "A") == {"192.0.2.11"}
    result = run(zone, _raw_update(dns.rdataclass.ANY, dns.rdatatype.A, None))
    assert texts(assert_applied(result), "www", "A") == set()


# --- the changes (RFC 2136 3.4.2) -----------------------------------------------------------


def test_add_to_a_new_name(zone):
    result = run(zone, add_www2(message()))
    new = assert_applied(result)
    assert texts(new, "www2", "A") == {"192.0.2.7"} and ttl(new, "www2", "A") == 300
    assert [(r[0], r[1], r[2].to_text()) for r in result.diff.added] == [
        (n("www2"), 300, "192.0.2.7")
    ]
    assert result.diff.deleted == ()
    assert result.summary == ("+www2 300 A 192.0.2.7",)


def test_add_to_an_existing_rrset(zone):
    msg = message()
    msg.add("www", 300, "A", "192.0.2.12")
    new = assert_applied(run(zone, msg))
    assert texts(new, "www", "A") == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}


def test_an_add_with_another_ttl_gives_the_whole_rrset_the_new_ttl(zone):
    msg = message()
    msg.add("www", 600, "A", "192.0.2.12")
    result = run(zone, msg)
    new = assert_applied(result)
    assert ttl(new, "www", "A") == 600
    assert texts(new, "www", "A") == {"192.0.2.10", "192.0.2.11", "192.0.2.12"}
    assert len(result.diff.deleted) == 2 and len(result.diff.added) == 3
    assert result.summary == ("+www 600 A 192.0.2.12", "~www A TTL 300 -> 600")


def test_a_duplicate_changes_nothing(zone):
    msg = message()
    msg.add("www", 300, "A", "192.0.2.10")
    result = run(zone, msg)
    assert result == UpdateResult(NOERROR, None, None)


def test_a_duplicate_with_another_ttl_changes_the_ttl(zone):
    msg = message()
    msg.add("www", 60, "A", "192.0.2.10")
    result = run(zone, msg)
    new = assert_applied(result)
    assert ttl(new, "www", "A") == 60 and texts(new, "www", "A") == texts(zone, "www", "A")
    assert result.summary == ("~www A TTL 300 -> 60",)


def test_delete_an_rrset(zone):
    msg = message()
    msg.delete("www", "A")
    result = run(zone, msg)
    new = assert_applied(result)
    assert texts(new, "www", "A") == set() and texts(new, "www", "TXT") == {'"web"'}
    assert result.summary == ("-www A (RRset)",)


def test_delete_an_rrset_that_does_not_exist_changes_nothing(zone):
    msg = message()
    msg.delete("www", "AAAA")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_delete_all_rrsets_at_a_name(zone):
    msg = message()
    msg.delete("www")
    result = run(zone, msg)
    new = assert_applied(result)
    assert n("www") not in new.nodes and n("www") not in new.names
    assert result.summary == ("-www (all)",)


def test_delete_all_at_the_apex_keeps_soa_and_ns(zone):
    msg = message()
    msg.delete("@")
    result = run(zone, msg)
    new = assert_applied(result)
    assert texts(new, "@", "NS") == texts(zone, "@", "NS")
    assert texts(new, "@", "MX") == set() and texts(new, "@", "TXT") == set()
    assert new.serial == zone.serial + 1
    assert result.summary == ("-@ (all but SOA and NS)",)


def test_delete_one_record(zone):
    msg = message()
    msg.delete("www", "A", "192.0.2.10")
    result = run(zone, msg)
    new = assert_applied(result)
    assert texts(new, "www", "A") == {"192.0.2.11"}
    assert result.summary == ("-www 300 A 192.0.2.10",)
    assert [(r[0], r[1], r[2].to_text()) for r in result.diff.deleted] == [
        (n("www"), 300, "192.0.2.10")
    ]


def test_delete_a_record_that_does_not_exist_changes_nothing(zone):
    msg = message()
    msg.delete("www", "A", "192.0.2.99")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_changes_apply_in_order(zone):
    msg = message()
    msg.add("www2", 300, "A", "192.0.2.7")
    msg.delete("www2", "A", "192.0.2.7")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)
    msg = message()
    msg.delete("www", "A")
    msg.add("www", 120, "A", "192.0.2.50")
    new = assert_applied(run(zone, msg))
    assert texts(new, "www", "A") == {"192.0.2.50"} and ttl(new, "www", "A") == 120


# --- the SOA and NS rules -------------------------------------------------------------------

SOA_REST = "ns1.example.test. hostmaster.example.test. {} 7200 900 1209600 300"


def test_soa_add_with_a_greater_serial_replaces_it_and_keeps_its_serial(zone):
    msg = message()
    msg.add("@", 3600, "SOA", SOA_REST.format(2024060100).replace("7200", "3600"))
    msg.add("www2", 300, "A", "192.0.2.7")
    new = assert_applied(run(zone, msg))
    assert new.serial == 2024060100  # the update raised it: no +1 on top
    assert new.soa[0].refresh == 3600
    assert texts(new, "www2", "A") == {"192.0.2.7"}


@pytest.mark.parametrize("serial", [2024010101, 2024010100, 2024010101 + 2**31])
def test_soa_add_without_a_greater_serial_is_ignored(zone, serial):
    msg = message()
    msg.add("@", 3600, "SOA", SOA_REST.format(serial).replace("7200", "3600"))
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_soa_add_below_the_apex_is_ignored(zone):
    msg = message()
    msg.add("www", 3600, "SOA", SOA_REST.format(2024060100))
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_soa_deletes_are_ignored(zone):
    msg = message()
    msg.delete("@", "SOA")
    msg.delete("@", "SOA", SOA_REST.format(2024010101))
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_apex_ns_rrset_delete_is_ignored(zone):
    msg = message()
    msg.delete("@", "NS")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_the_last_apex_ns_record_is_kept(zone):
    msg = message()
    msg.delete("@", "NS", "ns1.example.test.")
    msg.delete("@", "NS", "ns2.example.test.")
    result = run(zone, msg)
    new = assert_applied(result)
    assert texts(new, "@", "NS") == {"ns2.example.test."}
    assert result.summary == ("-@ 3600 NS ns1.example.test.",)


def test_a_delegation_may_be_removed(zone):
    msg = message()
    msg.delete("sub", "NS", "ns.sub.example.test.")
    new = assert_applied(run(zone, msg))
    assert n("sub") not in new.cuts and texts(new, "ns.sub", "A") == {"192.0.2.53"}


# --- CNAME exclusivity (RFC 2136 3.4.2.2) ---------------------------------------------------


def test_cname_beside_other_data_is_ignored(zone):
    msg = message()
    msg.add("www", 300, "CNAME", "alias2")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_other_data_beside_a_cname_is_ignored(zone):
    msg = message()
    msg.add("alias", 300, "A", "192.0.2.7")
    msg.add("alias", 300, "TXT", "x")
    assert run(zone, msg) == UpdateResult(NOERROR, None, None)


def test_a_cname_add_replaces_the_cname(zone):
    msg = message()
    msg.add("alias", 300, "CNAME", "mail")
    result = run(zone, msg)
    new = assert_applied(result)
    assert texts(new, "alias", "CNAME") == {"mail.example.test."}
    assert result.summary == (
        "-alias 3600 CNAME www.example.test.",
        "+alias 300 CNAME mail.example.test.",
    )


def test_a_cname_at_a_free_name(zone):
    msg = message()
    msg.add("alias2", 300, "CNAME", "www")
    new = assert_applied(run(zone, msg))
    assert texts(new, "alias2", "CNAME") == {"www.example.test."}


def test_a_cname_after_deleting_the_other_data_in_the_same_update(zone):
    msg = message()
    msg.delete("www")
    msg.add("www", 300, "CNAME", "mail")
    new = assert_applied(run(zone, msg))
    assert texts(new, "www", "CNAME") == {"mail.example.test."}
    assert texts(new, "www", "A") == set()


# --- serial and the loader's checks ---------------------------------------------------------


def test_serial_is_increased_by_one(zone):
    result = run(zone, add_www2(message()))
    assert assert_applied(result).serial == 2024010102
    assert (result.diff.old_serial, result.diff.new_serial) == (2024010101, 2024010102)


def test_serial_wraps():
    text = ZONE_TEXT.replace("2024010101", str(0xFFFFFFFF))
    z, _ = parse_zone(text, ORIGIN)
    assert assert_applied(run(z, add_www2(message()))).serial == 0


def test_date_serial_policy(zone):
    day = datetime.date(2024, 5, 1)
    result = run(zone, add_www2(message()), serial_policy="date", today=day)
    new = assert_applied(result)
    assert new.serial == 2024050100
    again = run(new, message(), serial_policy="date", today=day)
    assert again.zone is None  # an empty update: no new version
    msg = message()
    msg.add("www3", 300, "A", "192.0.2.8")
    assert assert_applied(run(new, msg, serial_policy="date", today=day)).serial == 2024050101


def test_serial_policy_is_checked(zone):
    with pytest.raises(ValueError):
        run(zone, add_www2(message()), serial_policy="date")
    with pytest.raises(ValueError):
        run(zone, add_www2(message()), serial_policy="unix")


def test_an_update_that_breaks_the_zone_is_refused(zone):
    msg = message()
    msg.delete("ns2", "A")
    result = run(zone, msg)
    assert_refused(result, REFUSED)
    assert "NS example.test. -> ns2.example.test." in result.reason
    assert "no address" in result.reason
    assert texts(zone, "ns2", "A") == {"192.0.2.2"}


def test_an_update_that_breaks_glue_is_refused(zone):
    msg = message()
    msg.delete("ns.sub")
    result = run(zone, msg)
    assert_refused(result, REFUSED)
    assert "no glue" in result.reason


def test_the_old_zone_is_never_changed(zone):
    before = {(r[0], r[1], r[2]) for r in records(zone)}
    msg = message()
    msg.delete("www", "A", "192.0.2.10")
    msg.add("www", 900, "A", "192.0.2.12")
    msg.delete("@")
    assert_applied(run(zone, msg))
    assert {(r[0], r[1], r[2]) for r in records(zone)} == before
    assert zone.serial == 2024010101


def test_summary_names_every_change(zone):
    msg = message()
    msg.present("www", "A")
    msg.add("www2", 300, "A", "192.0.2.7")
    msg.delete("mail", "A", "192.0.2.25")
    msg.add("mail", 3600, "AAAA", "2001:db8::25")
    msg.delete("www", "TXT")
    msg.delete("deep.ent")
    msg.delete("nowhere")  # nothing to delete: no line
    result = run(zone, msg)
    assert_applied(result)
    assert result.summary == (
        "+www2 300 A 192.0.2.7",
        "-mail 3600 A 192.0.2.25",
        "+mail 3600 AAAA 2001:db8::25",
        "-www TXT (RRset)",
        "-deep.ent (all)",
    )


def test_a_message_built_in_memory_works_too(zone):
    msg = message()
    msg.present("www", "A")
    msg.absent("www2")
    msg.add("www2", 300, "A", "192.0.2.7")
    msg.delete("www", "A", "192.0.2.10")
    new = assert_applied(apply_update(zone, msg))
    assert texts(new, "www2", "A") == {"192.0.2.7"} and texts(new, "www", "A") == {"192.0.2.11"}
