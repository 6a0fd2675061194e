"""Editing the operator's master file: `git diff` must show the changed records and the serial.

Each test builds a change (a ZoneDiff) from the parsed file, edits the text, and checks both the
lines that changed (with difflib) and that the result loads as exactly the new zone.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest

import gitdns.zoneedit
from gitdns.diff import Record, ZoneDiff, apply_diff, soa_record, zone_diff
from gitdns.update import apply_update
from gitdns.zone import Zone
from gitdns.zoneedit import ZoneEditError, edit_zone_text
from gitdns.zonefile import parse_zone

ORIGIN = dns.name.from_text("example.test.")
ZONE_TEXT = """\
; example.test -- the operator's file: comments, directives, layout
$TTL 3600
$ORIGIN example.test.
@   IN  SOA ns1 hostmaster (
            2024010101 ; serial
            7200       ; refresh
            900        ; retry
            1209600    ; expire
            300 )      ; minimum
    IN  NS  ns1
    IN  NS  ns2.example.net.
    IN  MX  10 mail

; name servers
ns1     IN  A   192.0.2.1

mail    IN  A   192.0.2.25      ; the mail host
        IN  AAAA 2001:db8::25
www     300 IN  A   192.0.2.80
        300 IN  A   192.0.2.81
info    IN  TXT ( "one"         ; a record in parentheses
                  "two" )
        IN  TXT "three"

$ORIGIN sub.example.test.
$TTL 600
host    IN  A   192.0.2.10
        IN  TXT "sub host"
$ORIGIN example.test.
last    IN  A   192.0.2.99      ; the end
"""


def n(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ORIGIN)


def rec(name: str, ttl: int, rdtype: str, data: str) -> Record:
    rd = dns.rdata.from_text(
        dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), data, ORIGIN, relativize=False
    )
    return (n(name), ttl, rd)


def change(
    text: str, deleted: list[Record] = (), added: list[Record] = (), serial_step: int = 1,
    origin: dns.name.Name = ORIGIN,
) -> tuple[ZoneDiff, Zone]:
    """The diff that deletes and adds these records and increases the serial; and the new zone."""
    old, _ = parse_zone(text, origin)
    old_soa = soa_record(old)
    new_soa = (old_soa[0], old_soa[1], old_soa[2].replace(serial=old.serial + serial_step))
    diff = ZoneDiff(old_soa, new_soa, tuple(deleted), tuple(added))
    return diff, apply_diff(old, diff)


def contents(zone: Zone) -> set[tuple]:
    return {(r.name, r.rdtype, r.ttl, rd) for r in zone.rrsets() for rd in r}


def edited(text: str, deleted=(), added=(), origin: dns.name.Name = ORIGIN) -> str:
    """Edit `text` and check that the result loads as exactly the new zone."""
    diff, expected = change(text, list(deleted), list(added), origin=origin)
    new_text = edit_zone_text(text, origin, diff)
    got, _ = parse_zone(new_text, origin)
    assert contents(got) == contents(expected)
    again = zone_diff(parse_zone(text, origin)[0], got)
    assert (again.old_soa, again.new_soa) == (diff.old_soa, diff.new_soa)
    assert (set(again.deleted), set(again.added)) == (set(diff.deleted), set(diff.added))
    return new_text


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """The lines removed and the lines added, as `git diff` shows them."""
    removed, inserted = [], []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else inserted).append(line[1:])
    return removed, inserted


SERIAL_OLD = "            2024010101 ; serial"
SERIAL_NEW = "            2024010102 ; serial"


def test_add_one_record_changes_two_lines():
    new = edited(ZONE_TEXT, added=[rec("www", 300, "A", "192.0.2.82")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD]
    assert inserted == [SERIAL_NEW, "www     300 IN  A   192.0.2.82"]
    lines = new.splitlines()
    assert lines.index("www     300 IN  A   192.0.2.82") == lines.index(
        "        300 IN  A   192.0.2.81") + 1  # right after the last record of its owner


def test_only_the_digits_of_the_serial_change():
    new = edited(ZONE_TEXT, added=[rec("www", 300, "A", "192.0.2.82")])
    i = ZONE_TEXT.index("2024010101")
    assert new[:i] == ZONE_TEXT[:i]
    assert new[i : i + 10] == "2024010102"
    j = ZONE_TEXT.index("www     300")
    assert new[i + 10 : j] == ZONE_TEXT[i + 10 : j]


def test_delete_a_record():
    new = edited(ZONE_TEXT, deleted=[rec("mail", 3600, "AAAA", "2001:db8::25")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD, "        IN  AAAA 2001:db8::25"]
    assert inserted == [SERIAL_NEW]


def test_delete_the_first_of_a_blank_owner_run():
    new = edited(ZONE_TEXT, deleted=[rec("www", 300, "A", "192.0.2.80")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [
        SERIAL_OLD, "www     300 IN  A   192.0.2.80", "        300 IN  A   192.0.2.81"
    ]
    assert inserted == [SERIAL_NEW, "www     300 IN  A   192.0.2.81"]


def test_delete_the_first_of_a_run_keeps_the_comment_of_the_next():
    new = edited(ZONE_TEXT, deleted=[rec("mail", 3600, "AAAA", "2001:db8::25")])
    new = edited(new, deleted=[rec("mail", 3600, "A", "192.0.2.25")],
                 added=[rec("mail", 3600, "AAAA", "2001:db8::25")])
    assert "mail    IN  AAAA 2001:db8::25\n" in new
    assert "the mail host" not in new


def test_delete_a_multi_line_record():
    new = edited(ZONE_TEXT, deleted=[rec("info", 3600, "TXT", '"one" "two"')])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [
        SERIAL_OLD,
        'info    IN  TXT ( "one"         ; a record in parentheses',
        '                  "two" )',
        '        IN  TXT "three"',
    ]
    assert inserted == [SERIAL_NEW, 'info    IN  TXT "three"']


def test_delete_every_record_of_a_run():
    new = edited(ZONE_TEXT, deleted=[
        rec("info", 3600, "TXT", '"one" "two"'), rec("info", 3600, "TXT", "three"),
    ])
    removed, inserted = changes(ZONE_TEXT, new)
    assert len(removed) == 4 and inserted == [SERIAL_NEW]


def test_add_to_a_new_name_goes_to_the_end():
    new = edited(ZONE_TEXT, added=[rec("new", 3600, "A", "192.0.2.7")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD]
    # $ORIGIN example.test. and $TTL 600 are in force at the end: the TTL is written.
    assert inserted == [SERIAL_NEW, "new     3600 IN A 192.0.2.7"]
    assert new.endswith("last    IN  A   192.0.2.99      ; the end\nnew     3600 IN A 192.0.2.7\n")


def test_add_under_the_second_origin():
    new = edited(ZONE_TEXT, added=[rec("host.sub", 600, "TXT", "more")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD]
    # relative to $ORIGIN sub.example.test., and no TTL: it is the $TTL in force there
    assert inserted == [SERIAL_NEW, 'host    IN  TXT "more"']
    lines = new.splitlines()
    assert lines[lines.index('host    IN  TXT "more"') - 1] == '        IN  TXT "sub host"'


def test_rdata_names_are_written_relative_to_the_origin_in_force():
    new = edited(ZONE_TEXT, added=[
        rec("host.sub", 600, "MX", "10 mail.example.test."),
        rec("host.sub", 600, "MX", "20 host.sub.example.test."),
    ])
    _removed, inserted = changes(ZONE_TEXT, new)
    assert inserted[1:] == ["host    IN  MX 10 mail.example.test.", "host    IN  MX 20 host"]


def test_apex_records_are_written_with_at():
    new = edited(ZONE_TEXT, added=[rec("@", 3600, "TXT", '"v=spf1 -all"')])
    _removed, inserted = changes(ZONE_TEXT, new)
    assert inserted == [SERIAL_NEW, '@   IN  TXT "v=spf1 -all"']
    lines = new.splitlines()
    assert lines[lines.index('@   IN  TXT "v=spf1 -all"') - 1] == "    IN  MX  10 mail"


def test_replace_a_record_keeps_its_place():
    new = edited(ZONE_TEXT, deleted=[rec("last", 600, "A", "192.0.2.99")],
                 added=[rec("last", 600, "A", "192.0.2.100")])
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD, "last    IN  A   192.0.2.99      ; the end"]
    assert inserted == [SERIAL_NEW, "last    IN  A   192.0.2.100"]


def test_a_ttl_change_is_made_in_place():
    new = edited(
        ZONE_TEXT,
        deleted=[rec("www", 300, "A", "192.0.2.80"), rec("www", 300, "A", "192.0.2.81")],
        added=[rec("www", 600, "A", "192.0.2.80"), rec("www", 600, "A", "192.0.2.81"),
               rec("www", 600, "A", "192.0.2.82")],
    )
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [
        SERIAL_OLD, "www     300 IN  A   192.0.2.80", "        300 IN  A   192.0.2.81"
    ]
    assert inserted == [
        SERIAL_NEW,
        "www     600 IN  A   192.0.2.80",
        "        600 IN  A   192.0.2.81",
        "www     600 IN  A   192.0.2.82",
    ]


def test_a_ttl_change_on_a_record_without_ttl_writes_it():
    new = edited(
        ZONE_TEXT,
        deleted=[rec("mail", 3600, "A", "192.0.2.25")],
        added=[rec("mail", 60, "A", "192.0.2.25")],
    )
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [SERIAL_OLD, "mail    IN  A   192.0.2.25      ; the mail host"]
    assert inserted == [SERIAL_NEW, "mail    60 IN  A   192.0.2.25      ; the mail host"]


def test_many_changes_at_once_reparse():
    new = edited(
        ZONE_TEXT,
        deleted=[rec("www", 300, "A", "192.0.2.80"), rec("info", 3600, "TXT", '"one" "two"'),
                 rec("host.sub", 600, "TXT", '"sub host"')],
        added=[rec("www", 300, "AAAA", "2001:db8::80"), rec("a.b.c", 60, "TXT", "x"),
               rec("host.sub", 600, "AAAA", "2001:db8::10"), rec("zz", 600, "A", "192.0.2.9")],
    )
    assert new.count("\n") == ZONE_TEXT.count("\n") - 4 + 4  # 4 lines held the 3 deleted
    for line in ZONE_TEXT.splitlines():  # every comment survives
        if line.startswith(";") or "; " in line and "parentheses" not in line:
            assert line.split(";", 1)[1] in new


# --- files written other ways ---------------------------------------------------------------

NO_DOLLAR_TTL = """\
@   3600 IN SOA ns1 hostmaster 1 7200 900 1209600 300
    3600 IN NS  ns1
ns1      IN A   192.0.2.1
a   300  IN A   192.0.2.5
b        IN A   192.0.2.6
"""


def test_a_record_that_inherited_its_ttl_from_a_deleted_line_gets_it_written():
    # Without $TTL, a record without TTL takes the last one written (RFC 1035 5.1).
    zone, _ = parse_zone(NO_DOLLAR_TTL, ORIGIN)
    assert zone.get(n("b"), dns.rdatatype.A).ttl == 300
    new = edited(NO_DOLLAR_TTL, deleted=[rec("a", 300, "A", "192.0.2.5")])
    removed, inserted = changes(NO_DOLLAR_TTL, new)
    assert removed == [
        "@   3600 IN SOA ns1 hostmaster 1 7200 900 1209600 300",
        "a   300  IN A   192.0.2.5",
        "b        IN A   192.0.2.6",
    ]
    assert inserted == [
        "@   3600 IN SOA ns1 hostmaster 2 7200 900 1209600 300",
        "b        300 IN A   192.0.2.6",
    ]


def test_an_added_line_that_would_change_inherited_ttls_is_compensated():
    # `b` takes its TTL from `a`'s line; a line with another TTL written between them must not
    # change it, so `b` gets its TTL written out.
    new = edited(NO_DOLLAR_TTL, added=[rec("a", 60, "AAAA", "2001:db8::5")])
    removed, inserted = changes(NO_DOLLAR_TTL, new)
    assert removed[1:] == ["b        IN A   192.0.2.6"]
    assert inserted[1:] == ["a   60   IN AAAA 2001:db8::5", "b        300 IN A   192.0.2.6"]


def test_no_class_in_the_file_no_class_written():
    text = "$TTL 300\n@ SOA ns1 hostmaster 1 2 3 4 5\n NS ns1\nns1 A 192.0.2.1\n"
    new = edited(text, added=[rec("ns1", 300, "AAAA", "2001:db8::1")])
    assert changes(text, new)[1] == ["@ SOA ns1 hostmaster 2 2 3 4 5", "ns1 AAAA 2001:db8::1"]


def test_tabs_are_kept():
    text = "$TTL 300\n@\tSOA\tns1 hostmaster 1 2 3 4 5\n\tNS\tns1\nns1\tA\t192.0.2.1\n"
    new = edited(text, added=[rec("ns1", 300, "AAAA", "2001:db8::1")])
    assert changes(text, new)[1][1] == "ns1\tAAAA\t2001:db8::1"


def test_crlf_line_ends_are_kept():
    text = ZONE_TEXT.replace("\n", "\r\n")
    new = edited(text, deleted=[rec("www", 300, "A", "192.0.2.80")],
                 added=[rec("new", 600, "A", "192.0.2.7")])
    assert "\n" not in new.replace("\r\n", "")
    assert new.endswith("\r\nnew     IN  A   192.0.2.7\r\n")


def test_a_file_without_a_final_line_break():
    text = ZONE_TEXT.rstrip("\n")
    new = edited(text, added=[rec("new", 600, "A", "192.0.2.7")])
    assert new == ZONE_TEXT.replace("2024010101", "2024010102") + "new     IN  A   192.0.2.7"


def test_the_repository_example_zone():
    """The loader's showcase zone: escapes, mixed layouts, many types, $ORIGIN changes."""
    path = Path(__file__).parent / "zones" / "example.test"
    text = path.read_text()
    new = edited(
        text,
        deleted=[
            rec("info", 3600, "HINFO", '"PC-Intel-700mhz" "Linux"'),
            rec("info", 3600, "SSHFP", "4 2 3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb"
                "73eeaed59c009d"),
            rec("ns1", 3600, "A", "192.0.2.53"),
        ],
        added=[
            rec("ns1", 3600, "A", "192.0.2.153"),
            rec("host.sub", 3600, "AAAA", "2001:db8::10"),
            rec("_acme-challenge.www", 60, "TXT", "token"),
        ],
    )
    removed, inserted = changes(text, new)
    assert removed == [
        "                2024010101 ; serial",
        "ns1     A       192.0.2.53",
        "        AAAA    2001:db8::53",
        'info    HINFO   "PC-Intel-700mhz" "Linux"',
        '        TXT     "first string" "second string" "with \\"quotes\\" and ; a semicolon"',
        "        SSHFP   4 2 ( 3e23e8160039594a33894f6564e1b134",
        "                      8bbd7a0088d42c4acb73eeaed59c009d )",
    ]
    assert inserted == [
        "                2024010102 ; serial",
        "ns1     AAAA    2001:db8::53",
        "ns1     A       192.0.2.153",
        'info    TXT     "first string" "second string" "with \\"quotes\\" and ; a semicolon"',
        "host    AAAA    2001:db8::10",  # under $ORIGIN sub.example.test., $TTL 3600
        '_acme-challenge.www 60 TXT "token"',
    ]


# --- refusing rather than writing wrong text ------------------------------------------------


def test_a_record_from_generate_cannot_be_deleted():
    text = ZONE_TEXT + "$GENERATE 1-3 dyn$ A 192.0.2.$\n"
    with pytest.raises(ZoneEditError, match=r"\$GENERATE at line 31; edit the file by hand"):
        edited(text, deleted=[rec("dyn2", 600, "A", "192.0.2.2")])


def test_records_beside_a_generate_can_be_edited():
    text = ZONE_TEXT + "$GENERATE 1-3 dyn$ A 192.0.2.$\n"
    new = edited(text, added=[rec("dyn2", 600, "TXT", "two")])
    assert new.endswith('$GENERATE 1-3 dyn$ A 192.0.2.$\ndyn2    IN  TXT "two"\n')


def test_text_of_another_version_is_refused():
    diff, _ = change(ZONE_TEXT, added=[rec("new", 600, "A", "192.0.2.7")])
    other = ZONE_TEXT.replace("2024010101", "2024010105")
    with pytest.raises(ZoneEditError, match="serial"):
        edit_zone_text(other, ORIGIN, diff)


def test_a_record_missing_from_the_text_is_refused():
    diff, _ = change(ZONE_TEXT, deleted=[rec("nowhere", 600, "A", "192.0.2.7")])
    with pytest.raises(ZoneEditError, match="not in the zone text"):
        edit_zone_text(ZONE_TEXT, ORIGIN, diff)


def test_an_rrset_written_with_two_ttls_gets_one_when_changed():
    # RFC 2181 5.2: the loader gives an RRset written with two TTLs one of them. Deleting the
    # line whose TTL it took must not let the other line's TTL take over.
    text = ZONE_TEXT + "mixed 200 IN A 192.0.2.201\nmixed 100 IN A 192.0.2.202\n"
    zone, _ = parse_zone(text, ORIGIN)
    kept_ttl = zone.get(n("mixed"), dns.rdatatype.A).ttl
    decisive, other = ("201", "202") if kept_ttl == 200 else ("202", "201")
    new = edited(text, deleted=[rec("mixed", kept_ttl, "A", f"192.0.2.{decisive}")])
    assert new.endswith(f"mixed {kept_ttl} IN A 192.0.2.{other}\n")
    assert f"192.0.2.{decisive}" not in new


def test_text_that_cannot_say_the_new_zone_is_refused():
    # $GENERATE lines cannot be edited: if one holds a record whose TTL must change, refuse.
    text = ZONE_TEXT + "$GENERATE 1-2 dyn$ 300 A 192.0.2.$\n"
    with pytest.raises(ZoneEditError, match=r"\$GENERATE at line 31"):
        edited(text, deleted=[rec("dyn1", 300, "A", "192.0.2.1")],
               added=[rec("dyn1", 60, "A", "192.0.2.1")])


# --- the SOA, and a change made by an UPDATE ------------------------------------------------


def test_soa_fields_and_ttl_change_in_place():
    old, _ = parse_zone(ZONE_TEXT, ORIGIN)
    name, _ttl, soa = soa_record(old)
    new_soa = soa.replace(serial=2024060100, refresh=3600, mname=dns.name.from_text("ns2.ex.net."))
    diff = ZoneDiff(soa_record(old), (name, 7200, new_soa), (), ())
    new = edit_zone_text(ZONE_TEXT, ORIGIN, diff)
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [
        "@   IN  SOA ns1 hostmaster (",
        SERIAL_OLD,
        "            7200       ; refresh",
    ]
    assert inserted == [
        "@   7200 IN  SOA ns2.ex.net. hostmaster (",
        "            2024060100 ; serial",
        "            3600       ; refresh",
    ]
    assert contents(parse_zone(new, ORIGIN)[0]) == contents(apply_diff(old, diff))


def test_the_diff_of_an_update():
    old, _ = parse_zone(ZONE_TEXT, ORIGIN)
    msg = dns.update.UpdateMessage(ORIGIN)
    msg.delete("www", "A", "192.0.2.80")
    msg.add("www", 300, "AAAA", "2001:db8::80")
    msg.add("_acme-challenge.host.sub", 60, "TXT", "token")
    result = apply_update(old, dns.message.from_wire(msg.to_wire()))
    assert result.diff is not None and result.zone is not None
    new = edit_zone_text(ZONE_TEXT, ORIGIN, result.diff)
    assert contents(parse_zone(new, ORIGIN)[0]) == contents(result.zone)
    removed, inserted = changes(ZONE_TEXT, new)
    assert removed == [
        SERIAL_OLD, "www     300 IN  A   192.0.2.80", "        300 IN  A   192.0.2.81"
    ]
    assert inserted == [
        SERIAL_NEW,
        "www     300 IN  A   192.0.2.81",
        "www     300 IN  AAAA 2001:db8::80",
        '_acme-challenge.host.sub 60 IN TXT "token"',
    ]


def test_wrong_text_is_never_returned(monkeypatch):
    """Whatever goes wrong in the edit, the check against the new zone stops it."""
    render = gitdns.zoneedit._Plan.render

    def render_with_a_stray_record(self):
        new_text, kept, inserted = render(self)
        return new_text + "stray IN A 192.0.2.66\n", kept, inserted

    monkeypatch.setattr(gitdns.zoneedit._Plan, "render", render_with_a_stray_record)
    with pytest.raises(ZoneEditError, match="does not hold the new zone"):
        edited(ZONE_TEXT, added=[rec("www", 300, "A", "192.0.2.82")])
