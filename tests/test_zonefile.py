"""Master files (RFC 1035 section 5) to zones: parsing, and the checks a primary makes.

Every error must name the file and the line an operator has to fix. The offending line in each
test zone is marked with `<-`; `marked` finds its 1-based number and removes the mark (or turns it
into a trailing comment: the line must be right with and without one).
"""

from __future__ import annotations

import dns.name
import dns.rdatatype
import pytest

from gitdns.zone import Zone
from gitdns.zonefile import (
    ZoneLoadError,
    check_serial_increase,
    parse_zone,
    zone_name_from_filename,
)

ORIGIN = "example.test."
FILE = "zones/example.test"
MARK = " <-"

HEAD = """\
$TTL 3600
@ IN SOA ns1 hostmaster (
        2024010101 ; serial
        7200 3600 1209600 300 )
@ NS ns1
@ NS ns2.example.net.
ns1 A 192.0.2.1
"""
# A record after the body, so the offending line is never the file's last line.
TAIL = 'zz TXT "the end"\n'


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def marked(text: str, comment: bool = False) -> tuple[str, int]:
    """`text` without its mark, and the number of the marked line."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if MARK in line]
    assert len(lines) == 1, "test zone must mark exactly one line"
    return text.replace(MARK, " ; the offending record" if comment else ""), lines[0]


def zone_text(body: str, head: str = HEAD) -> str:
    return head + body + TAIL


def load_error(text: str | bytes, origin: str = ORIGIN, filename: str = FILE) -> ZoneLoadError:
    with pytest.raises(ZoneLoadError) as info:
        parse_zone(text, origin, filename)
    err = info.value
    assert err.errors, "a ZoneLoadError must say why"
    return err


def parse_ok(body: str, head: str = HEAD) -> tuple[Zone, list[str]]:
    return parse_zone(zone_text(body, head), ORIGIN, FILE)


def rdata_texts(zone: Zone, name: str, rdtype: str) -> set[str]:
    rrset = zone.get(n(name), dns.rdatatype.from_text(rdtype))
    assert rrset is not None, f"{name} {rdtype} missing"
    return {rd.to_text() for rd in rrset}


# --- a good zone --------------------------------------------------------------------------------

GOOD = """\
; gitdns test zone: comments, relative names, @, $ORIGIN, $TTL, parentheses, $GENERATE
$TTL 3600
$ORIGIN example.test.
@   IN  SOA ns1.example.test. hostmaster.example.test. (
            2024010101 ; serial
            7200       ; refresh
            3600       ; retry
            1209600    ; expire
            300 )      ; minimum
    IN  NS  ns1        ; owner inherited from the SOA line
@       NS  ns2.example.net.
@       MX  10 mail
ns1     A   192.0.2.1
ns1     AAAA 2001:db8::1
mail 600 A  192.0.2.25
www     A   192.0.2.80
        A   192.0.2.81 ; owner inherited
txt     TXT ( "first part"
              "second part" )
$TTL 60
short   A   192.0.2.60
$ORIGIN sub.example.test.
host    A   192.0.2.100
@       TXT "sub apex"
$ORIGIN example.test.
alias   CNAME www
$GENERATE 1-5 dyn$ A 198.51.100.$
"""


def test_good_zone_parses() -> None:
    zone, warnings = parse_zone(GOOD, ORIGIN, FILE)
    assert warnings == []
    assert zone.origin == n(ORIGIN)
    assert zone.serial == 2024010101
    # SOA 1, NS 2, MX 1, ns1 A+AAAA 2, mail 1, www 2, txt 1, short 1, host.sub 1, sub TXT 1,
    # alias 1, dyn1..dyn5 5
    assert zone.record_count == 19


def test_good_zone_contents() -> None:
    zone, _ = parse_zone(GOOD, ORIGIN, FILE)
    assert rdata_texts(zone, "example.test.", "NS") == {"ns1.example.test.", "ns2.example.net."}
    assert rdata_texts(zone, "example.test.", "MX") == {"10 mail.example.test."}
    soa = zone.get(n(ORIGIN), dns.rdatatype.SOA)
    assert soa is not None and len(soa) == 1
    assert (soa[0].refresh, soa[0].retry, soa[0].expire, soa[0].minimum) == (
        7200,
        3600,
        1209600,
        300,
    )
    assert rdata_texts(zone, "www.example.test.", "A") == {"192.0.2.80", "192.0.2.81"}
    assert rdata_texts(zone, "txt.example.test.", "TXT") == {'"first part" "second part"'}
    assert rdata_texts(zone, "host.sub.example.test.", "A") == {"192.0.2.100"}
    assert rdata_texts(zone, "sub.example.test.", "TXT") == {'"sub apex"'}
    assert rdata_texts(zone, "alias.example.test.", "CNAME") == {"www.example.test."}
    for i in range(1, 6):
        assert rdata_texts(zone, f"dyn{i}.example.test.", "A") == {f"198.51.100.{i}"}
    assert zone.get(n("dyn6.example.test."), dns.rdatatype.A) is None
    # TTLs: explicit, $TTL, and $TTL changed half-way.
    assert zone.get(n("mail.example.test."), dns.rdatatype.A).ttl == 600
    assert zone.get(n("www.example.test."), dns.rdatatype.A).ttl == 3600
    assert zone.get(n("short.example.test."), dns.rdatatype.A).ttl == 60
    assert zone.get(n("host.sub.example.test."), dns.rdatatype.A).ttl == 60
    assert zone.get(n("dyn1.example.test."), dns.rdatatype.A).ttl == 60


def test_good_zone_from_utf8_bytes_and_name_origin() -> None:
    zone, _ = parse_zone(
        (HEAD + 'txt TXT "caf\u00e9"\n').encode("utf-8"), dns.name.from_text(ORIGIN), FILE
    )
    assert zone.serial == 2024010101
    assert zone.record_count == 5


def test_record_count_and_serial_of_minimal_zone() -> None:
    zone, warnings = parse_zone(HEAD, ORIGIN, FILE)
    assert (zone.serial, zone.record_count, warnings) == (2024010101, 4, [])


def test_origin_is_the_file_name_not_dollar_origin() -> None:
    # $ORIGIN only moves relative names; `@` follows it (RFC 1035 5.1).
    zone, _ = parse_ok("$ORIGIN a.example.test.\n@ A 192.0.2.7\nb A 192.0.2.8\n")
    assert zone.origin == n(ORIGIN)
    assert rdata_texts(zone, "a.example.test.", "A") == {"192.0.2.7"}
    assert rdata_texts(zone, "b.a.example.test.", "A") == {"192.0.2.8"}


def test_ttl_units_and_relative_origin() -> None:
    text = (
        "$TTL 1h\n@ SOA ns1 hm 1 2h 30m 2w 5m\n@ NS ns1\nns1 1d A 192.0.2.1\n"
        "$ORIGIN sub\nwww A 192.0.2.3\n"
    )
    zone, _ = parse_zone(text, ORIGIN, FILE)
    soa = zone.get(n(ORIGIN), dns.rdatatype.SOA)
    assert (soa.ttl, soa[0].refresh, soa[0].retry, soa[0].expire, soa[0].minimum) == (
        3600,
        7200,
        1800,
        1209600,
        300,
    )
    assert zone.get(n("ns1.example.test."), dns.rdatatype.A).ttl == 86400
    # a relative $ORIGIN is relative to the current origin (RFC 1035 5.1, as BIND does)
    assert rdata_texts(zone, "www.sub.example.test.", "A") == {"192.0.2.3"}


# --- errors with file and line --------------------------------------------------------------------

# (id, body with the offending line marked, words the message must contain)
LINE_ERRORS = [
    ("bad-A-address", "ok A 192.0.2.9\nbad A 192.0.2.256 <-\nok2 A 192.0.2.10\n", []),
    ("A-address-too-short", "bad A 1.2.3 <-\n", []),
    ("unknown-type", "bad FROB something <-\n", []),
    ("wrong-class", "x CH A 192.0.2.1 <-\n", []),
    ("include-refused", "$INCLUDE other.zone <-\n", ["$INCLUDE"]),
    (
        "two-SOA-at-apex",
        "@ SOA ns1 hostmaster 2024010102 7200 3600 1209600 300 <-\n",
        ["SOA"],
    ),
    ("SOA-below-apex", "sub SOA ns1 hostmaster 1 7200 3600 1209600 300 <-\n", ["SOA"]),
    ("CNAME-after-other-data", "x A 192.0.2.5\nx CNAME www.example.net. <-\n", ["CNAME"]),
    ("CNAME-before-other-data", 'x CNAME www.example.net. <-\nx TXT "hi"\n', ["CNAME"]),
    ("multi-line-CNAME", "x A 192.0.2.5\nx CNAME ( <-\n    www.example.net. )\n", ["CNAME"]),
    ("CNAME-at-apex", "@ CNAME www.example.net. <-\n", ["CNAME"]),
    (
        "two-CNAMEs",
        "x CNAME a.example.net.\nx CNAME b.example.net. <-\n",
        ["CNAME"],
    ),
    ("two-DNAMEs", "d DNAME a.example.net.\nd DNAME b.example.net. <-\n", ["DNAME"]),
    ("out-of-zone-absolute", "www.other.test. A 192.0.2.1 <-\n", ["www.other.test"]),
    ("out-of-zone-suffix", "notexample.test. A 192.0.2.1 <-\n", ["notexample.test"]),
    ("out-of-zone-parent", "test. A 192.0.2.1 <-\n", ["test."]),
    (
        "out-of-zone-after-ORIGIN",
        "$ORIGIN other.test.\nwww A 192.0.2.1 <-\n$ORIGIN example.test.\n",
        ["www.other.test"],
    ),
    ("apex-NS-without-address", "@ NS ns3 <-\n", ["ns3.example.test"]),
    ("MX-without-address", "@ MX 10 mail <-\n", ["mail.example.test"]),
    (
        "second-MX-without-address",
        "mx1 A 192.0.2.25\n@ MX 10 mx1\n@ MX 20 mx2 <-\n",
        ["mx2.example.test"],
    ),
    ("SRV-without-address", "_sip._tcp SRV 0 0 5060 sip <-\n", ["sip.example.test"]),
    ("delegation-glue-missing", "sub NS ns.sub <-\n", ["ns.sub.example.test"]),
    (
        "delegation-in-zone-target-missing",
        "sub NS ns.example.net.\nsub NS ns9 <-\n",
        ["ns9.example.test"],
    ),
]


@pytest.mark.parametrize("comment", [False, True], ids=["plain", "trailing-comment"])
@pytest.mark.parametrize(
    ("body", "words"), [c[1:] for c in LINE_ERRORS], ids=[c[0] for c in LINE_ERRORS]
)
def test_error_names_file_and_line(body: str, words: list[str], comment: bool) -> None:
    text, expected_line = marked(zone_text(body), comment)
    err = load_error(text)
    assert all(e.filename == FILE for e in err.errors)
    for word in words:
        assert any(word in e.message for e in err.errors), (word, err.errors)
    lines = [e.line for e in err.errors]
    assert expected_line in lines, f"expected line {expected_line}, got {err.errors}"
    assert f"{FILE}:{expected_line}" in str(err)


def test_syntax_error_on_last_line_without_newline() -> None:
    text = HEAD + "bad A 192.0.2.256"
    err = load_error(text)
    assert [(e.filename, e.line) for e in err.errors] == [(FILE, 8)]


def test_syntax_error_in_parentheses_names_a_line_of_the_record() -> None:
    text, line = marked(zone_text('txt TXT ( "a" <-\n    "b" \n'))  # "(" never closed
    err = load_error(text)
    assert err.errors[0].filename == FILE
    assert err.errors[0].line is not None and err.errors[0].line >= line


def test_no_soa() -> None:
    text = "$TTL 3600\n@ NS ns1\nns1 A 192.0.2.1\n"
    err = load_error(text)
    assert [e.filename for e in err.errors] == [FILE]
    assert "SOA" in err.errors[0].message


def test_no_ns_at_apex() -> None:
    text = "$TTL 3600\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\nns1 A 192.0.2.1\n"
    err = load_error(text)
    assert [e.filename for e in err.errors] == [FILE]
    assert "NS" in err.errors[0].message


def test_two_soa_records_are_rejected_not_merged() -> None:
    # RFC 1035 / RFC 1034 4.2.1: exactly one SOA per zone. A second SOA must be an error,
    # not silently replace the first.
    text = zone_text("@ SOA ns1 hostmaster 7 7200 3600 1209600 300\n")
    with pytest.raises(ZoneLoadError):
        parse_zone(text, ORIGIN, FILE)


def test_two_cnames_are_rejected_not_merged() -> None:
    # RFC 1034 3.6.2 / RFC 2181 10.1: one CNAME per name. The second must not silently win.
    text = zone_text("x CNAME a.example.net.\nx CNAME b.example.net.\n")
    with pytest.raises(ZoneLoadError):
        parse_zone(text, ORIGIN, FILE)


def test_every_out_of_zone_record_is_reported() -> None:
    text = zone_text("a.other.test. A 192.0.2.1\nwww A 192.0.2.2\nb.other.test. A 192.0.2.3\n")
    err = load_error(text)
    bad = [e for e in err.errors if "other.test" in e.message]
    assert len(bad) == 2, err.errors
    assert sorted(e.line for e in bad) == [8, 10]


def test_all_rule_errors_are_collected() -> None:
    text = zone_text("x A 192.0.2.5\nx CNAME www.example.net.\n@ MX 10 mail\n")
    err = load_error(text)
    messages = " ".join(e.message for e in err.errors)
    assert "CNAME" in messages and "mail.example.test" in messages


def test_non_utf8_bytes_give_a_clean_error() -> None:
    data = HEAD.encode() + b'x TXT "\xff\xfe"\n'
    err = load_error(data)
    assert [e.filename for e in err.errors] == [FILE]
    assert "UTF-8" in err.errors[0].message or "utf-8" in err.errors[0].message
    assert FILE in str(err)


def test_latin1_bytes_give_a_clean_error() -> None:
    err = load_error(HEAD.encode() + "x TXT caf\u00e9\n".encode("latin-1"))
    assert err.errors[0].filename == FILE


# --- not errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("@ MX 10 mx.example.net.\nsub NS ns.example.net.\n", id="out-of-zone-targets"),
        pytest.param("sub NS ns.example.net.\n@ MX 10 mail.sub\n", id="MX-below-delegation"),
        pytest.param("sub NS ns.example.net.\n@ MX 10 sub\n", id="MX-at-delegation"),
        pytest.param("@ MX 0 .\nnomail MX 0 .\n", id="null-MX"),
        pytest.param("_x._tcp SRV 0 0 0 .\n", id="SRV-dot"),
        pytest.param("sub NS ns.example.net.\n_s._tcp SRV 0 0 1 h.sub\n", id="SRV-below-cut"),
        pytest.param("ns3 AAAA 2001:db8::3\n@ NS ns3\n", id="NS-target-AAAA-only"),
        pytest.param(
            "sub NS ns.sub\nns.sub A 192.0.2.53\nns.sub AAAA 2001:db8::53\n", id="glue-below-cut"
        ),
        pytest.param("a NS ns.b\nb NS ns.example.net.\nns.b A 192.0.2.54\n", id="sibling-glue"),
        pytest.param("sub NS ns1\n", id="delegation-to-apex-host"),
        pytest.param("*.wild A 192.0.2.1\n*.wild MX 10 ns1\n", id="wildcard"),
        pytest.param("x CNAME ns1\n", id="in-zone-CNAME"),
        pytest.param("d DNAME example.net.\n", id="DNAME"),
    ],
)
def test_not_errors(body: str) -> None:
    zone, warnings = parse_ok(body)
    assert zone.serial == 2024010101
    assert warnings == []


def test_non_address_data_below_a_cut_is_a_warning_only() -> None:
    text, line = marked(
        zone_text('sub NS ns.sub\nns.sub A 192.0.2.53\ntxt.sub TXT "occluded" <-\n')
    )
    zone, warnings = parse_zone(text, ORIGIN, FILE)
    assert zone.serial == 2024010101
    assert len(warnings) == 1, warnings
    assert "txt.sub.example.test" in warnings[0]
    assert f"{FILE}:{line}" in warnings[0]


def test_ttl_conflict_is_a_warning_and_first_ttl_wins() -> None:
    # BIND 9.18 keeps the first TTL of an RRset ("TTL set to prior TTL"); so do we.
    zone, warnings = parse_ok("x 600 A 192.0.2.1\nx 60 A 192.0.2.2\n")
    assert len(warnings) == 1 and "TTL" in warnings[0] and FILE in warnings[0]
    assert zone.get(n("x.example.test."), dns.rdatatype.A).ttl == 600


# --- zone_name_from_filename ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "zone"),
    [
        ("example.com", "example.com."),
        ("mirage", "mirage."),
        ("example.com.", "example.com."),
        ("a.b.c.example", "a.b.c.example."),
        ("10.in-addr.arpa", "10.in-addr.arpa."),
    ],
)
def test_zone_name_from_filename(filename: str, zone: str) -> None:
    name = zone_name_from_filename(filename)
    assert name.is_absolute()
    assert name == n(zone)


# --- check_serial_increase -----------------------------------------------------------------------


def zone_with_serial(serial: int) -> Zone:
    head = HEAD.replace("2024010101", str(serial))
    zone, _ = parse_zone(head, ORIGIN, FILE)
    assert zone.serial == serial
    return zone


@pytest.mark.parametrize(
    ("old", "new"), [(1, 2), (2024010101, 2024010200), (0xFFFFFFFF, 0), (0xFFFFFFF0, 5)]
)
def test_check_serial_increase_ok(old: int, new: int) -> None:
    assert check_serial_increase(zone_with_serial(old), zone_with_serial(new)) is None


@pytest.mark.parametrize(
    ("old", "new"), [(5, 5), (5, 4), (0, 0xFFFFFFFF), (0, 1 << 31), (10, 10 + (1 << 31) + 1)]
)
def test_check_serial_increase_rejects(old: int, new: int) -> None:
    why = check_serial_increase(zone_with_serial(old), zone_with_serial(new))
    assert why is not None
    assert str(new) in why and str(old) in why
