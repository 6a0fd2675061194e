"""ZoneText.apply must make exactly the text `zoneedit.edit_zone_text` makes (byte for byte, and
the same refusals), one diff after another, and that text must read as the new zone.

Compared on the editor's own scenarios, the repository's zones, files written in many styles
(tabs, classes or not, $TTL or not, blank owners, $ORIGIN changes, parentheses, CRLF, no final
line break), and long random sequences of changes. Diffs are those of zones that pass the
loader's checks, as the update path makes them (`apply` leaves those checks to its caller).
"""

from __future__ import annotations

import random
from pathlib import Path

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update
import pytest

import tests.test_zoneedit as te
import tests.test_zonefile as tz
from gitdns.diff import Record, ZoneDiff, apply_diff, condense, records, soa_record
from gitdns.fastload import parse_zone_fast
from gitdns.update import apply_update
from gitdns.zone import Zone
from gitdns.zoneedit import ZoneEditError, edit_zone_text
from gitdns.zonefile import check_zone, parse_zone

ORIGIN = te.ORIGIN
ZONES = Path(__file__).parent / "zones"
GENERATE = te.ZONE_TEXT + "$GENERATE 1-3 dyn$ A 192.0.2.$\n"
rec = te.rec


def contents(zone: Zone) -> set[tuple]:
    return {(r.name, r.rdtype, r.covers, r.ttl, rd) for r in zone.rrsets() for rd in r}


def both(text: str, origin: dns.name.Name, diff: ZoneDiff, zt=None) -> tuple[tuple, tuple]:
    """(edit_zone_text's outcome, ZoneText's outcome): ("text", ...) or ("refused", message)."""
    try:
        want: tuple = ("text", edit_zone_text(text, origin, diff))
    except ZoneEditError as e:
        want = ("refused", str(e))
    if zt is None:
        zt = parse_zone_fast(text, origin)[2]
    before = zt.text()
    try:
        zt.apply(diff)
        got: tuple = ("text", zt.text())
    except ZoneEditError as e:
        got = ("refused", str(e))
        assert zt.text() == before, "a refused change must leave the text as it was"
    return want, got


def same_edit(text: str, deleted=(), added=(), origin: dns.name.Name = ORIGIN) -> tuple:
    diff, expected = te.change(text, list(deleted), list(added), origin=origin)
    want, got = both(text, origin, diff)
    assert got == want
    if got[0] == "text":
        assert contents(parse_zone(got[1], origin)[0]) == contents(expected)
    return got


# --- the editor's own scenarios --------------------------------------------------------------

NO_TTL = ("@ SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\nx 60 A 192.0.2.2\ny A 192.0.2.3\n"
          "  A 192.0.2.4\nz A 192.0.2.5\n")
OUTSIDE_GLUE = (te.ZONE_TEXT.replace("    IN  NS  ns2.example.net.",
                                     "    IN  NS  ns2.example.net.\n    IN  NS  ns.other.test.")
                + "ns.other.test. IN A 192.0.2.77\n   IN AAAA 2001:db8::77\n"
                + "after IN A 192.0.2.78\n")

SCENARIOS = {
    "add-one": (te.ZONE_TEXT, [], [rec("www", 300, "A", "192.0.2.82")]),
    "delete-one": (te.ZONE_TEXT, [rec("mail", 3600, "AAAA", "2001:db8::25")], []),
    "delete-first-of-blank-owner-run": (te.ZONE_TEXT, [rec("www", 300, "A", "192.0.2.80")], []),
    "delete-multi-line": (te.ZONE_TEXT, [rec("info", 3600, "TXT", '"one" "two"')], []),
    "delete-whole-run": (te.ZONE_TEXT, [rec("info", 3600, "TXT", '"one" "two"'),
                                       rec("info", 3600, "TXT", "three")], []),
    "new-name-at-end": (te.ZONE_TEXT, [], [rec("new", 3600, "A", "192.0.2.7")]),
    "second-origin": (te.ZONE_TEXT, [], [rec("host.sub", 600, "TXT", "more")]),
    "relative-rdata": (te.ZONE_TEXT, [], [rec("host.sub", 600, "MX", "10 mail.example.test."),
                                          rec("host.sub", 600, "MX", "20 host.sub.example.test.")]),
    "apex-at": (te.ZONE_TEXT, [], [rec("@", 3600, "TXT", '"v=spf1 -all"')]),
    "replace-keeps-place": (te.ZONE_TEXT, [rec("last", 600, "A", "192.0.2.99")],
                            [rec("last", 600, "A", "192.0.2.100")]),
    "ttl-change": (te.ZONE_TEXT,
                   [rec("www", 300, "A", "192.0.2.80"), rec("www", 300, "A", "192.0.2.81")],
                   [rec("www", 600, "A", "192.0.2.80"), rec("www", 600, "A", "192.0.2.81"),
                    rec("www", 600, "A", "192.0.2.82")]),
    "ttl-written": (te.ZONE_TEXT, [rec("mail", 3600, "A", "192.0.2.25")],
                    [rec("mail", 60, "A", "192.0.2.25")]),
    "many": (te.ZONE_TEXT,
             [rec("www", 300, "A", "192.0.2.80"), rec("info", 3600, "TXT", '"one" "two"'),
              rec("host.sub", 600, "TXT", '"sub host"')],
             [rec("www", 300, "AAAA", "2001:db8::80"), rec("a.b.c", 60, "TXT", "x"),
              rec("host.sub", 600, "AAAA", "2001:db8::10"), rec("zz", 600, "A", "192.0.2.9")]),
    "no-dollar-ttl-inherited": (te.NO_DOLLAR_TTL, [rec("a", 300, "A", "192.0.2.5")], []),
    "no-dollar-ttl-compensated": (te.NO_DOLLAR_TTL, [], [rec("a", 60, "AAAA", "2001:db8::5")]),
    "no-class": ("$TTL 300\n@ SOA ns1 hostmaster 1 2 3 4 5\n NS ns1\nns1 A 192.0.2.1\n", [],
                 [rec("ns1", 300, "AAAA", "2001:db8::1")]),
    "tabs": ("$TTL 300\n@\tSOA\tns1 hostmaster 1 2 3 4 5\n\tNS\tns1\nns1\tA\t192.0.2.1\n", [],
             [rec("ns1", 300, "AAAA", "2001:db8::1")]),
    "crlf": (te.ZONE_TEXT.replace("\n", "\r\n"), [rec("www", 300, "A", "192.0.2.80")],
             [rec("new", 600, "A", "192.0.2.7")]),
    "no-final-line-break": (te.ZONE_TEXT.rstrip("\n"), [], [rec("new", 600, "A", "192.0.2.7")]),
    "no-final-line-break-replace-last": (te.ZONE_TEXT.rstrip("\n"),
                                         [rec("last", 600, "A", "192.0.2.99")],
                                         [rec("last", 600, "A", "192.0.2.100")]),
    "no-final-line-break-owner-and-new": (te.ZONE_TEXT.rstrip("\n"), [],
                                          [rec("last", 600, "TXT", "x"),
                                           rec("new", 600, "A", "192.0.2.7")]),
    "generate-refused": (GENERATE, [rec("dyn2", 600, "A", "192.0.2.2")], []),
    "beside-generate": (GENERATE, [], [rec("dyn2", 600, "TXT", "two")]),
    "generate-ttl-refused": (te.ZONE_TEXT + "$GENERATE 1-2 dyn$ 300 A 192.0.2.$\n",
                             [rec("dyn1", 300, "A", "192.0.2.1")],
                             [rec("dyn1", 60, "A", "192.0.2.1")]),
    "missing-record-refused": (te.ZONE_TEXT, [rec("nowhere", 600, "A", "192.0.2.7")], []),
    "two-ttls": (te.ZONE_TEXT + "mixed 200 IN A 192.0.2.201\nmixed 100 IN A 192.0.2.202\n",
                 [rec("mixed", 200, "A", "192.0.2.201")], []),
    # no $TTL: TTLs inherited from the last one written, and the SOA's minimum
    "no-ttl-delete-the-ttl-line": (NO_TTL, [rec("x", 60, "A", "192.0.2.2")], []),
    "no-ttl-delete-an-inheritor": (NO_TTL, [rec("y", 60, "A", "192.0.2.3")], []),
    "no-ttl-add-between": (NO_TTL, [], [rec("x", 30, "TXT", "between")]),
    "ttl-after-the-soa": (NO_TTL.replace("x 60", "$TTL 120\nx 60"),
                          [rec("x", 60, "A", "192.0.2.2")], []),
    # the same record written twice: both lines go
    "duplicate-lines": (te.ZONE_TEXT + "dup IN A 192.0.2.50\ndup IN A 192.0.2.50\n  IN TXT t\n",
                        [rec("dup", 3600, "A", "192.0.2.50")], []),
    # names read with the IDNA codec `$UNICODE` asks for
    "unicode": (te.ZONE_TEXT + "$UNICODE 2003\nstra\u00dfe IN A 192.0.2.60\n  IN TXT t\n",
                [rec("strasse", 600, "A", "192.0.2.60")], [rec("strasse", 600, "TXT", "u")]),
    # the address of an out-of-zone name server, and blank owners after it
    "outside-glue": (OUTSIDE_GLUE, [rec("after", 600, "A", "192.0.2.78")],
                     [rec("after", 600, "TXT", "x"), rec("@", 3600, "TXT", "y")]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_editors_scenarios(name: str) -> None:
    text, deleted, added = SCENARIOS[name]
    same_edit(text, deleted, added)


def test_the_repository_example_zone() -> None:
    text = (ZONES / "example.test").read_text()
    same_edit(
        text,
        deleted=[rec("info", 3600, "HINFO", '"PC-Intel-700mhz" "Linux"'),
                 rec("info", 3600, "SSHFP", "4 2 3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4"
                     "acb73eeaed59c009d"),
                 rec("ns1", 3600, "A", "192.0.2.53")],
        added=[rec("ns1", 3600, "A", "192.0.2.153"), rec("host.sub", 3600, "AAAA", "2001:db8::10"),
               rec("_acme-challenge.www", 60, "TXT", "token")],
    )


def test_text_of_another_version_is_refused() -> None:
    diff, _ = te.change(te.ZONE_TEXT, added=[rec("new", 600, "A", "192.0.2.7")])
    other = te.ZONE_TEXT.replace("2024010101", "2024010105")
    want, got = both(other, ORIGIN, diff)
    assert got == want and got[0] == "refused"


def test_soa_fields_and_ttl_change_in_place() -> None:
    old, _ = parse_zone(te.ZONE_TEXT, ORIGIN)
    name, _ttl, soa = soa_record(old)
    new_soa = soa.replace(serial=2024060100, refresh=3600, mname=dns.name.from_text("ns2.ex.net."))
    diff = ZoneDiff(soa_record(old), (name, 7200, new_soa), (), ())
    want, got = both(te.ZONE_TEXT, ORIGIN, diff)
    assert got == want and got[0] == "text"


@pytest.mark.parametrize("text", [NO_TTL, "@ SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\n",
                                  te.ZONE_TEXT])
def test_a_new_soa_minimum(text: str) -> None:
    """Without $TTL the SOA's minimum is the default TTL: the records that take it keep theirs."""
    diff, _ = te.change(text, added=[rec("v", 600, "A", "192.0.2.10")])
    old = diff.old_soa
    diff = ZoneDiff(old, (old[0], old[1], diff.new_soa[2].replace(minimum=100)), (), diff.added)
    want, got = both(text, ORIGIN, diff)
    assert got == want


def test_the_diff_of_an_update() -> None:
    old, _ = parse_zone(te.ZONE_TEXT, ORIGIN)
    msg = dns.update.UpdateMessage(ORIGIN)
    msg.delete("www", "A", "192.0.2.80")
    msg.add("www", 300, "AAAA", "2001:db8::80")
    msg.add("_acme-challenge.host.sub", 60, "TXT", "token")
    result = apply_update(old, dns.message.from_wire(msg.to_wire()))
    assert result.diff is not None and result.zone is not None
    want, got = both(te.ZONE_TEXT, ORIGIN, result.diff)
    assert got == want
    assert contents(parse_zone(got[1], ORIGIN)[0]) == contents(result.zone)


def test_a_refusal_leaves_the_text_usable() -> None:
    zone, _w, zt = parse_zone_fast(GENERATE, ORIGIN)
    diff, _ = te.change(GENERATE, deleted=[rec("dyn2", 600, "A", "192.0.2.2")])
    with pytest.raises(ZoneEditError, match=r"\$GENERATE at line 31"):
        zt.apply(diff)
    diff, expected = te.change(GENERATE, added=[rec("www", 300, "A", "192.0.2.82")])
    zt.apply(diff)
    assert zt.text() == edit_zone_text(GENERATE, ORIGIN, diff)
    assert zt.serial == expected.serial


# --- files in many styles, long random sequences of changes ------------------------------------


def styled_zone(rnd: random.Random, records_count: int) -> str:
    """A zone file written in one of many styles."""
    tabs = rnd.random() < 0.3
    sep = "\t" if tabs else rnd.choice([" ", "    ", "  "])
    cls = rnd.choice(["", "IN" + sep])
    dollar_ttl = rnd.random() < 0.7
    late_ttl = not dollar_ttl and rnd.random() < 0.4  # a $TTL only after the SOA and NS
    lines = [f"; a zone written with {'tabs' if tabs else 'spaces'}"]
    if dollar_ttl:
        lines.append(f"$TTL {rnd.choice(['3600', '1h', '300'])}")
    if rnd.random() < 0.5:
        lines.append("$ORIGIN example.test.")
    soa_ttl = "" if dollar_ttl else "3600 "
    if rnd.random() < 0.5:
        lines += [f"@{sep}{soa_ttl}{cls}SOA{sep}ns1 hostmaster (",
                  "        2024010101 ; serial", "        7200 900 1209600 300 )"]
    else:
        lines.append(f"@{sep}{soa_ttl}{cls}SOA{sep}ns1 hostmaster 2024010101 7200 900 1209600 300")
    lines.append(f"{sep}{soa_ttl}{cls}NS{sep}ns1")
    lines.append(f"ns1{sep}{soa_ttl}{cls}A{sep}192.0.2.1")
    if late_ttl:
        lines.append("$TTL 600")
    for k in range(records_count):
        r = rnd.random()
        ttl = "" if dollar_ttl and rnd.random() < 0.7 else f"{rnd.choice([60, 300, 3600])}{sep}"
        owner = f"h{k % max(1, records_count // 3)}" if rnd.random() < 0.8 else ""
        owner = owner or (sep if lines[-1][:1] not in (";", "$", "") else f"h{k}")
        if r < 0.05:
            lines.append(f"$ORIGIN {rnd.choice(['sub.example.test.', 'example.test.'])}")
            continue
        if r < 0.08:
            lines.append(rnd.choice(["", "; a comment", "  ; an indented comment"]))
            continue
        if r < 0.1 and dollar_ttl:
            lines.append(f"$TTL {rnd.choice([60, 600, 3600])}")
            continue
        if r < 0.14:
            lines.append(f"{owner}{sep}{ttl}{cls}TXT{sep}( \"a{k}\"\n{sep}{sep}\"b\" )")
            continue
        kind = rnd.choice(["A", "A", "AAAA", "TXT", "MX"])
        data = {"A": f"192.0.2.{k % 250 + 2}", "AAAA": f"2001:db8::{k:x}", "TXT": f'"t{k}"',
                "MX": f"10{sep}ns1.example.test."}[kind]
        comment = rnd.choice(["", "", f"{sep}; note {k}"])
        lines.append(f"{owner}{ttl}{cls}{kind}{sep}{data}{comment}" if owner == sep
                     else f"{owner}{sep}{ttl}{cls}{kind}{sep}{data}{comment}")
    text = "\n".join(lines) + "\n"
    if rnd.random() < 0.15:
        text = text.replace("\n", "\r\n")
    if rnd.random() < 0.15:
        text = text.rstrip("\r\n")
    return text


def random_diff(zone: Zone, rnd: random.Random) -> ZoneDiff | None:
    """A small change of the kinds updates make, to a zone that still passes the checks."""
    origin = zone.origin
    have = list(records(zone))
    for _ in range(20):
        deleted: list[Record] = []
        added: list[Record] = []
        for _ in range(rnd.choice([0, 0, 1, 1, 2, 3])):
            r = rnd.choice(have)
            if r not in deleted:
                deleted.append(r)
        names = [r[0] for r in have]
        for _ in range(rnd.choice([0, 1, 1, 2, 3])):
            pick = rnd.random()
            if pick < 0.5:
                name = rnd.choice(names)
            elif pick < 0.8:
                name = dns.name.from_text(f"new{rnd.randint(0, 9)}", origin)
            else:
                name = dns.name.from_text(f"n{rnd.randint(0, 3)}.sub", origin)
            rdtype = rnd.choice(["A", "A", "AAAA", "TXT"])
            data = {"A": f"198.51.100.{rnd.randint(1, 250)}",
                    "AAAA": f"2001:db8:1::{rnd.randint(1, 999)}",
                    "TXT": f'"x{rnd.randint(0, 99)}"'}[rdtype]
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), data)
            added.append((name, rnd.choice([60, 300, 600, 3600, 86400]), rd))
        if deleted and rnd.random() < 0.25:
            name, ttl, rd = deleted[0]
            added.append((name, ttl + 7, rd))  # a TTL change
        added = [a for a in added if a not in deleted]
        old_soa = soa_record(zone)
        new_ttl = old_soa[1] if rnd.random() < 0.9 else old_soa[1] + 1
        minimum = old_soa[2].minimum if rnd.random() < 0.9 else rnd.choice([60, 300, 900])
        new_soa = (old_soa[0], new_ttl,
                   old_soa[2].replace(serial=old_soa[2].serial + 1, minimum=minimum))
        diff = ZoneDiff(old_soa, new_soa, tuple(deleted), tuple(added))
        errors, _warnings = check_zone(apply_diff(zone, diff))
        if not errors:
            return diff
    return None


def run_sequence(text: str, origin: dns.name.Name, rnd: random.Random, steps: int,
                 zt=None) -> int:
    """Apply `steps` random diffs both ways, comparing every step; returns the number applied.
    `zt`: the index to edit through (default: the one parse_zone_fast builds)."""
    zone, _w, fast_zt = parse_zone_fast(text, origin)
    zt = zt or fast_zt
    applied = 0
    for _ in range(steps):
        diff = random_diff(zone, rnd)
        if diff is None:
            break
        want, got = both(text, origin, diff, zt)
        assert got == want, (text, diff)
        if got[0] == "refused":
            break
        text = got[1]
        zone = apply_diff(zone, diff)
        assert contents(parse_zone(text, origin)[0]) == contents(zone)
        applied += 1
    return applied


def _editor_corpus() -> list[tuple[str, dns.name.Name]]:
    texts = [(p.read_text(), dns.name.from_text(p.name + ".")) for p in sorted(ZONES.iterdir())]
    texts += [(t, ORIGIN) for t in (te.ZONE_TEXT, te.NO_DOLLAR_TTL, te.ZONE_TEXT.rstrip("\n"),
                                     te.ZONE_TEXT.replace("\n", "\r\n"), GENERATE, tz.GOOD)]
    return texts


@pytest.mark.parametrize("seed", range(30))
def test_random_changes_to_the_repository_and_editor_zones(seed: int) -> None:
    rnd = random.Random(seed)
    corpus = _editor_corpus()
    for _ in range(6):
        text, origin = rnd.choice(corpus)
        run_sequence(text, origin, rnd, steps=5)


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_to_files_in_many_styles(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    text = styled_zone(rnd, rnd.choice([10, 30, 80]))
    run_sequence(text, ORIGIN, rnd, steps=8)


def big_zone(hosts: int) -> str:
    """A generated zone: hosts with A records, some with AAAA, TXT and MX records."""
    lines = ["$ORIGIN example.test.", "$TTL 3600",
             "@ IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 300",
             "@ IN NS ns1", "ns1 IN A 192.0.2.1"]
    for i in range(1, hosts + 1):
        lines.append(f"h{i} IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        if i % 10 == 1:
            lines.append(f"h{i} IN AAAA 2001:db8::{i >> 16:x}:{i & 0xffff:x}")
        elif i % 10 == 2:
            lines.append(f'    IN TXT "host {i}"')
        elif i % 10 == 3:
            lines.append(f"h{i} 600 IN MX 10 h{i - 1}")
    return "\n".join(lines) + "\n"


def lease_diffs(zone: Zone, count: int) -> list[ZoneDiff]:
    """Updates as DHCP and ACME make them: leases added and taken away, tokens added."""
    soa = soa_record(zone)
    diffs = []
    live: list[Record] = []
    in_ = dns.rdataclass.IN
    for i in range(count):
        new_soa = (soa[0], soa[1], soa[2].replace(serial=soa[2].serial + 1))
        if i % 3 == 0:
            rd = dns.rdata.from_text(in_, dns.rdatatype.A, f"10.200.{i >> 8 & 255}.{i & 255}")
            r = (dns.name.from_text(f"lease{i}", zone.origin), 300, rd)
            live.append(r)
            diffs.append(ZoneDiff(soa, new_soa, (), (r,)))
        elif i % 3 == 1:
            rd = dns.rdata.from_text(in_, dns.rdatatype.TXT, f'"token{i}"')
            name = dns.name.from_text(f"h{(i * 7919) % 1000 + 1}", zone.origin)
            diffs.append(ZoneDiff(soa, new_soa, (), ((name, 60, rd),)))
        else:
            diffs.append(ZoneDiff(soa, new_soa, (live.pop(0),), ()))
        soa = new_soa
    return diffs


def test_a_sequence_of_changes_matches_the_editor_step_by_step() -> None:
    text = big_zone(150)
    zone, _w, zt = parse_zone_fast(text, ORIGIN)
    for diff in lease_diffs(zone, 45):
        want, got = both(text, ORIGIN, diff, zt)
        assert got == want
        text = got[1]


def test_a_thousand_changes_to_a_100k_record_file() -> None:
    """The timing of this is in the benchmark; here, the text must end as the zone does."""
    text = big_zone(83000)
    zone, _w, zt = parse_zone_fast(text, ORIGIN)
    assert zone.record_count > 100_000
    diffs = lease_diffs(zone, 1000)
    for diff in diffs:
        zt.apply(diff)
    zone = apply_diff(zone, condense(diffs))
    final, _w, _zt = parse_zone_fast(zt.text(), ORIGIN)
    assert contents(final) == contents(zone)
    assert final.serial == zone.serial == 2024010101 + 1000
