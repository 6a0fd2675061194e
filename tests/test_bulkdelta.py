"""A zone made from the lines that changed is the zone a full load makes, or is not made."""

from __future__ import annotations

import hashlib
import logging
import random
import threading

import dns.name
import pytest

from bench import workload
from gitdns import repository, zonecache
from gitdns.bulkdelta import load_change, load_changed
from gitdns.bulkload import load_compact
from gitdns.compactzone import CompactZone
from gitdns.diff import zone_diff
from gitdns.repository import load_repository, load_zone
from gitdns.zonecache import ZoneCache
from gitdns.zonefile import ZoneLoadError
from tests.test_zone import same

ORIGIN = dns.name.from_text("example.test.")
BIG = dns.name.from_text(workload.BIG_ORIGIN)

HAND = """\
$ORIGIN example.test.
$TTL 300
; a hand-made zone with a bit of everything the bulk loader reads
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
@ NS ns2.example.net.
@ MX 10 mail
ns1 A 192.0.2.1
mail A 192.0.2.2
mail AAAA 2001:db8::2
www A 192.0.2.3
www A 192.0.2.4
www TXT "hello world" "x"
ftp CNAME www

_sip._tcp SRV 10 5 5060 sip
sip A 192.0.2.5
* A 192.0.2.9
*.wild TXT wild
sub NS ns.sub
ns.sub A 192.0.2.10
a.b.c A 192.0.2.11
Host7 A 192.0.2.12
Host7 AAAA 2001:db8::7
long 600 IN A 192.0.2.13
mx2 MX 5 mail
mx2 TXT "points at mail"
"""

POOL = [  # lines an edit may add: most fine, some breaking a rule, some not for the scanner
    "new{n} A 192.0.2.{n}",
    "new{n} AAAA 2001:db8::{n}",
    "www A 192.0.2.{n}",
    "www 600 A 192.0.2.{n}",
    "www TXT more{n}",
    "www CNAME mail",
    "ftp A 192.0.2.{n}",
    "alias{n} CNAME www",
    "m{n} MX 10 mail",
    "m{n} MX 10 nowhere",
    "m{n} MX 10 sub",
    "srv{n} SRV 1 2 3 sip",
    "srv{n} SRV 1 2 3 missing",
    "mail A 192.0.2.{n}",
    "Mail TXT case{n}",
    "Host7 TXT seven{n}",
    "x.sub A 192.0.2.{n}",
    "x.sub TXT below",
    "sub2 NS ns1",
    "@ NS ns{n}.example.net.",
    "@ TXT apex{n}",
    "@ SOA ns1 hostmaster {n} 3600 600 86400 300",
    "outside.example.net. A 192.0.2.1",
    "new{n}.example.test. A 192.0.2.{n}",
    "*.w{n} A 192.0.2.{n}",
    "a.b.c AAAA 2001:db8::{n}",
    "b.c TXT ent{n}",
    "t{n} TXT \"quoted {n}\"",
    "t{n} HINFO a b",
    "  A 192.0.2.{n}",
    "p{n} A ( 192.0.2.{n} )",
    "$TTL 60",
    "$ORIGIN sub.example.test.",
    "; a comment {n}",
    "",
]


def full(text: str | bytes, origin: dns.name.Name = ORIGIN):
    """What the repository's full load makes of the text: (zone, warnings), or None."""
    data = text.encode() if isinstance(text, str) else text
    try:
        return load_zone(data, origin, "f")
    except ZoneLoadError:
        return None


def exactly_same(zone: CompactZone, expected: CompactZone) -> None:
    """Every node byte for byte (records, their order, TTLs, owner case), the names, cuts,
    counts and referrers."""
    same(zone, expected)
    mine = dict(zone.nodes.raw_items())
    theirs = dict(expected.nodes.raw_items())
    assert mine == theirs
    assert [(r.name.to_text(), r.rdtype, r.ttl, [rd.to_text() for rd in r])
            for r in zone.nodes.get(zone.origin).values()] == \
        [(r.name.to_text(), r.rdtype, r.ttl, [rd.to_text() for rd in r])
         for r in expected.nodes.get(zone.origin).values()]


def try_change(old_text: str, new_text: str, origin: dns.name.Name = ORIGIN) -> bool:
    """load_changed on an edit: None, or exactly the full load; True when it made the zone."""
    base = load_compact(old_text.encode(), origin)
    if base is None:
        return False  # not a base load_changed works from (see its docstring)
    old = base[0]
    got = load_changed(old, old_text.encode(), new_text.encode(), origin, "f")
    if got is None:
        return False
    zone, warnings = got
    expected = full(new_text, origin)
    assert expected is not None, f"made a zone the full load refuses:\n{new_text}"
    assert warnings == [] and expected[1] == [], expected[1]
    exactly_same(zone, expected[0])
    # The difference for IXFR comes from the shared table, and is the true one.
    assert zone.nodes.table is old.nodes.table
    fast, slow = zone_diff(old, zone), zone_diff(old, expected[0])
    assert (fast.old_soa, fast.new_soa) == (slow.old_soa, slow.new_soa)
    assert set(fast.deleted) == set(slow.deleted) and set(fast.added) == set(slow.added)
    return True


def edit(rng: random.Random, lines: list[str], n: int) -> list[str]:
    """One random edit of a zone's lines."""
    lines = list(lines)
    body = [i for i, line in enumerate(lines) if line and line[0] not in "$;"]
    op = rng.randrange(6)
    if op == 0:  # add a line
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(POOL).format(n=n))
    elif op == 1 and body:  # remove one
        del lines[rng.choice(body)]
    elif op == 2 and body:  # change one
        lines[rng.choice(body)] = rng.choice(POOL).format(n=n)
    elif op == 3 and len(body) > 1:  # move one
        line = lines.pop(rng.choice(body))
        lines.insert(rng.randrange(len(lines) + 1), line)
    elif op == 4:  # raise the serial
        lines = [_bump(line) for line in lines]
    else:  # the same line twice
        if body:
            lines.insert(rng.randrange(len(lines) + 1), lines[rng.choice(body)])
    return lines


def _bump(line: str) -> str:
    parts = line.split()
    if "SOA" in parts:
        i = parts.index("SOA") + 3
        parts[i] = str(int(parts[i]) + 1)
        return " ".join(parts)
    return line


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_of_the_hand_made_zone(seed):
    rng = random.Random(seed)
    made = 0
    for n in range(150):
        lines = HAND.split("\n")
        for _ in range(rng.randrange(1, 4)):
            lines = edit(rng, lines, n + 20)
        made += try_change(HAND, "\n".join(lines))
    assert made > 20  # most edits that keep the zone regular are made from the change


def test_random_edits_with_the_base_moving():
    """Edit after edit, each new version made from the previous one that loaded cleanly."""
    rng = random.Random(99)
    text = HAND
    made = 0
    for n in range(300):
        lines = text.split("\n")
        for _ in range(rng.randrange(1, 3)):
            lines = edit(rng, lines, n + 20)
        new_text = "\n".join(lines)
        made += try_change(text, new_text)
        if load_compact(new_text.encode(), ORIGIN) is not None:
            text = new_text
    assert made > 40  # (an owner spelt two ways, as "Mail" beside "mail", stops the chain)


@pytest.mark.parametrize("seed", range(4))
def test_random_edits_of_a_generated_zone(seed):
    rng = random.Random(seed)
    text = "".join(workload.big_zone_lines(400))
    lines = text.split("\n")
    made = 0
    for n in range(60):
        new = lines
        for _ in range(rng.randrange(1, 6)):
            new = edit(rng, new, n + 20)
        made += try_change(text, "\n".join(new), BIG)
    assert made > 3


def big_text(records: int = 3000) -> str:
    return "".join(workload.big_zone_lines(records))


def bump_serial(text: str) -> str:
    return text.replace("2024010101", "2024010102", 1)


def test_the_common_changes_are_made_from_the_change():
    text = big_text()
    # A new serial and a new name at the end.
    assert try_change(text, bump_serial(text) + "newhost A 10.9.9.9\n", BIG)
    # An address changed (a host with A and AAAA).
    assert try_change(text, bump_serial(text).replace("host7 A 10.0.0.7\n",
                                                      "host7 A 10.0.7.7\n"), BIG)
    # A record deleted; a whole name deleted; a record added to a name with others.
    assert try_change(text, bump_serial(text).replace("host8 AAAA 2001:db8:0:8::1\n", ""), BIG)
    assert try_change(text, bump_serial(text).replace(
        "host9 A 10.0.0.9\nhost9 AAAA 2001:db8:0:9::1\n", ""), BIG)
    assert try_change(text, bump_serial(text).replace(
        "host20 TXT", "host20 TXT other\nhost20 TXT"), BIG)
    # Lines added in the middle, many at once; a TTL changed.
    block = "".join(f"added{i} A 10.7.{i // 256}.{i % 256}\n" for i in range(300))
    middle = text.index("host500 A")
    assert try_change(text, bump_serial(text[:middle]) + block + text[middle:], BIG)
    assert try_change(text, bump_serial(text).replace("host11 A 10.0.0.11\n",
                                                      "host11 60 A 10.0.0.11\n"), BIG)
    # Only comments changed.
    assert try_change(text, text.replace("host12 A", "; a note\nhost12 A"), BIG)
    change = load_change(full(text, BIG)[0], text.encode(),
                         (bump_serial(text) + "newhost A 10.9.9.9\n").encode(), BIG)
    assert change is not None and (change.removed, change.added, change.names) == (1, 2, 2)


@pytest.mark.parametrize("new_text", [
    # Warnings or errors the full load must give.
    HAND.replace("ftp CNAME www", "ftp CNAME www\nftp A 192.0.2.99"),
    HAND.replace("mail A 192.0.2.2\nmail AAAA 2001:db8::2\n", "mail TXT gone\n"),
    HAND.replace("sip A 192.0.2.5\n", ""),
    HAND + "m2 MX 1 nowhere\n",
    HAND + "www A 192.0.2.3\n",
    HAND + "www 60 A 192.0.2.77\n",
    HAND.replace("@ SOA", "x SOA"),
    HAND.replace("@ SOA ns1 hostmaster 1 3600 600 86400 300\n", ""),
    # Not for the change path: directives, NS, delegations, continued or bracketed lines.
    HAND.replace("$TTL 300", "$TTL 301"),
    HAND + "$TTL 60\nlate A 192.0.2.1\n",
    HAND + "sub2 NS ns1\n",
    HAND.replace("ns.sub A 192.0.2.10", "ns.sub A 192.0.2.11"),
    HAND + "deep.sub A 192.0.2.1\n",
    HAND + "    A 192.0.2.1\n",
    HAND + "p A ( 192.0.2.1 )\n",
    HAND + "h HINFO a b\n",
])
def test_changes_that_must_give_messages_or_are_not_sure_are_left_to_the_full_load(new_text):
    old = load_compact(HAND.encode(), ORIGIN)[0]
    assert load_changed(old, HAND.encode(), new_text.encode(), ORIGIN, "f") is None


def test_moved_lines_keep_the_full_loads_order():
    # www's A records swap places; www's TXT comes before its A records.
    swapped = HAND.replace("www A 192.0.2.3\nwww A 192.0.2.4\n",
                           "www A 192.0.2.4\nwww A 192.0.2.3\n")
    try_change(HAND, swapped)
    txt_first = HAND.replace('www A 192.0.2.3\nwww A 192.0.2.4\nwww TXT "hello world" "x"\n',
                             'www TXT "hello world" "x"\nwww A 192.0.2.3\nwww A 192.0.2.4\n')
    assert try_change(HAND, txt_first)
    # The owner's case comes from its first line.
    assert try_change(HAND, HAND.replace("Host7 A 192.0.2.12\n", "") + "Host7 A 192.0.2.12\n")
    assert try_change(HAND, HAND.replace("Host7 ", "host7 "))
    # An owner spelt two ways is the general loader's (one spelling per RRset there).
    assert not try_change(HAND, HAND.replace("Host7 A ", "host7 A "))


def test_names_counts_and_cuts_come_through():
    # An empty non-terminal appears (x.y under a new z) and goes (a.b.c removed).
    new = HAND.replace("a.b.c A 192.0.2.11\n", "") + "q.x.y A 192.0.2.1\n"
    assert try_change(HAND, new)
    zone = load_changed(full(HAND)[0], HAND.encode(), new.encode(), ORIGIN)[0]
    assert dns.name.from_text("x.y", ORIGIN) in zone.names
    assert dns.name.from_text("b.c", ORIGIN) not in zone.names
    assert set(zone.cuts) == {dns.name.from_text("sub", ORIGIN)}


def test_a_compiled_copy_of_a_changed_zone_holds_every_record(tmp_path, monkeypatch):
    monkeypatch.setattr(zonecache, "MIN_RECORDS", 10)
    text = big_text()
    new = bump_serial(text).replace("host3 A 10.0.0.3\n", "") + "newhost A 10.9.9.9\n"
    zone = load_changed(full(text, BIG)[0], text.encode(), new.encode(), BIG)[0]
    assert zone.nodes.delta
    cache = ZoneCache(tmp_path)
    source = hashlib.sha1(new.encode()).hexdigest().encode()
    cache.put(BIG, source, zone, [])
    for t in threading.enumerate():
        if t.name == "zone-cache":
            t.join(30)
    back, warnings = cache.get(BIG, source)
    assert warnings == []
    exactly_same(back, full(new, BIG)[0])


def test_the_repository_loads_a_new_version_from_its_change(monkeypatch, caplog):
    monkeypatch.setattr(repository, "_DELTA_MIN_BYTES", 0)
    text = big_text()
    v2 = bump_serial(text).replace("host5 A 10.0.0.5\n", "host5 A 10.0.5.5\n") + \
        "newhost A 10.9.9.9\n"
    v3 = v2.replace("2024010102", "2024010103", 1) + "newhost2 A 10.9.9.10\n"
    blobs = {hashlib.sha1(t.encode()).hexdigest().encode(): t.encode() for t in (text, v2, v3)}
    ids = list(blobs)
    name = workload.BIG_ORIGIN

    def read(source: bytes) -> bytes:
        return blobs[source]

    caplog.set_level(logging.INFO, logger="gitdns.zones")
    state, _report = load_repository({name: ids[0]}, read)
    assert "as a change" not in caplog.text
    state2, report = load_repository({name: ids[1]}, read, state)
    assert report.loaded == [BIG]
    assert "as a change of serial 2024010101 (-2 +3 lines, 3 names)" in caplog.text
    exactly_same(state2.zones[BIG], full(v2, BIG)[0])
    # From there on again (the base is the changed version).
    caplog.clear()
    state3, _report = load_repository({name: ids[2]}, read, state2)
    assert "as a change of serial 2024010102" in caplog.text
    exactly_same(state3.zones[BIG], full(v3, BIG)[0])


def test_after_an_update_the_whole_file_is_loaded(monkeypatch, caplog):
    """The zone in service differs from its file once an update (or a raised serial) is
    served: the change of the files would miss it."""
    monkeypatch.setattr(repository, "_DELTA_MIN_BYTES", 0)
    import dataclasses

    text = big_text()
    v2 = bump_serial(text) + "newhost A 10.9.9.9\n"
    blobs = {b"1" * 40: text.encode(), b"2" * 40: v2.encode()}
    name = workload.BIG_ORIGIN
    state, _report = load_repository({name: b"1" * 40}, blobs.__getitem__)
    served = state.zones[BIG]
    updated = served.with_changes({dns.name.from_text("upd", BIG): None})  # a new version
    status = dataclasses.replace(state.status[BIG], zone=updated)  # as install_zone does
    state = dataclasses.replace(state, status={BIG: status})
    caplog.set_level(logging.INFO, logger="gitdns.zones")
    state2, _report = load_repository({name: b"2" * 40}, blobs.__getitem__, state)
    assert "as a change" not in caplog.text
    exactly_same(state2.zones[BIG], full(v2, BIG)[0])


def test_an_apex_that_does_not_start_with_its_soa_loads():
    """bulkload took the apex's first run for another owner's (an IndexError) when it did not
    start with the SOA; found by the random edits here."""
    text = "$TTL 300\n@ TXT x\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\nns1 A 192.0.2.1\n"
    zone, warnings = full(text)
    assert warnings == [] and zone.record_count == 4
