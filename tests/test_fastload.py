"""The fast loader must be `zonefile.parse_zone`: the same zone, warnings and errors (with their
lines) on every input, whichever part of it the hand-written scanner reads and whichever part it
leaves to dnspython.

Compared on the repository's zones, the loader's own test zones, a set of tricky lines, and
thousands of deterministic random mutations and generated files; the result is compared down to
the rdata classes, the case of names, RRset order and rdata comments.
"""

from __future__ import annotations

import random
from pathlib import Path

import dns.name
import pytest

import tests.test_zonefile as tz
from gitdns import fastload
from gitdns.fastload import parse_zone_fast
from gitdns.zone import Zone
from gitdns.zonefile import ZoneLoadError, parse_zone

ZONES = Path(__file__).parent / "zones"
ORIGIN = tz.ORIGIN
FILE = tz.FILE


def describe(zone: Zone) -> tuple:
    """Everything about a zone a loader decides, in a comparable form."""
    rrsets = []
    for rrset in zone.rrsets():
        rdatas = [(type(rd), rd.to_text(), rd.rdcomment) for rd in rrset]
        rrsets.append((rrset.name.labels, rrset.rdtype, rrset.covers, rrset.ttl, rdatas))
    nodes = [(name.labels, list(node)) for name, node in zone.nodes.items()]
    outside = sorted((name.to_text(), sorted(addrs)) for name, addrs in zone.outside.items())
    return (zone.serial, zone.record_count, rrsets, nodes, outside)


def outcome(loader, text: str | bytes, origin: str = ORIGIN, filename: str = FILE) -> tuple:
    try:
        result = loader(text, origin, filename)
    except ZoneLoadError as e:
        return ("error", [(x.filename, x.line, x.message) for x in e.errors])
    return ("zone", describe(result[0]), result[1])


def assert_same(text: str | bytes, origin: str = ORIGIN) -> tuple:
    slow, fast = outcome(parse_zone, text, origin), outcome(parse_zone_fast, text, origin)
    assert fast == slow
    if slow[0] == "zone":  # the index the editor needs leaves the text as it is
        decoded = text.decode() if isinstance(text, bytes) else text
        assert parse_zone_fast(text, origin, FILE)[2].text() == decoded
    return slow


# --- the repository's zones and the loader's own tests -------------------------------------


@pytest.mark.parametrize("path", sorted(ZONES.iterdir()), ids=lambda p: p.name)
def test_repository_zones(path: Path) -> None:
    result = assert_same(path.read_text(), path.name + ".")
    assert result[0] == "zone"


def test_the_good_zone_of_the_loader_tests() -> None:
    assert assert_same(tz.GOOD)[0] == "zone"


@pytest.mark.parametrize("comment", [False, True], ids=["plain", "trailing-comment"])
@pytest.mark.parametrize(("body", "words"), [c[1:] for c in tz.LINE_ERRORS],
                         ids=[c[0] for c in tz.LINE_ERRORS])
def test_every_error_rule_of_the_loader_tests(body: str, words: list[str], comment: bool
                                              ) -> None:
    text, line = tz.marked(tz.zone_text(body), comment)
    result = assert_same(text)
    assert result[0] == "error" and line in [e[1] for e in result[1]]


@pytest.mark.parametrize(
    "text",
    [
        tz.HEAD + "bad A 192.0.2.256",
        tz.zone_text('txt TXT ( "a"\n    "b" \n'),
        "$TTL 3600\n@ NS ns1\nns1 A 192.0.2.1\n",
        "$TTL 3600\n@ SOA ns1 hostmaster 1 7200 3600 1209600 300\nns1 A 192.0.2.1\n",
        tz.zone_text("a.other.test. A 192.0.2.1\nwww A 192.0.2.2\nb.other.test. A 192.0.2.3\n"),
        tz.zone_text("x A 192.0.2.5\nx CNAME www.example.net.\n@ MX 10 mail\n"),
        tz.zone_text('sub NS ns.sub\nns.sub A 192.0.2.53\ntxt.sub TXT "occluded"\n'),
        tz.zone_text("x 600 A 192.0.2.1\nx 60 A 192.0.2.2\n"),
        tz.HEAD,
        (tz.HEAD + 'txt TXT "caf\u00e9"\n').encode(),
        tz.HEAD.encode() + b'x TXT "\xff\xfe"\n',
        tz.HEAD.encode() + "x TXT caf\u00e9\n".encode("latin-1"),
        "$TTL 1h\n@ SOA ns1 hm 1 2h 30m 2w 5m\n@ NS ns1\nns1 1d A 192.0.2.1\n"
        "$ORIGIN sub\nwww A 192.0.2.3\n",
    ],
    ids=["syntax-last-line", "open-parenthesis", "no-soa", "no-ns", "out-of-zone",
         "rules", "occluded", "ttl-conflict", "minimal", "utf8", "not-utf8", "latin1",
         "ttl-units"],
)
def test_the_other_zones_of_the_loader_tests(text: str | bytes) -> None:
    assert_same(text)


@pytest.mark.parametrize(
    "body",
    [
        "@ MX 10 mx.example.net.\nsub NS ns.example.net.\n",
        "sub NS ns.example.net.\n@ MX 10 mail.sub\n",
        "@ MX 0 .\nnomail MX 0 .\n",
        "_x._tcp SRV 0 0 0 .\n",
        "sub NS ns.example.net.\n_s._tcp SRV 0 0 1 h.sub\n",
        "ns3 AAAA 2001:db8::3\n@ NS ns3\n",
        "sub NS ns.sub\nns.sub A 192.0.2.53\nns.sub AAAA 2001:db8::53\n",
        "a NS ns.b\nb NS ns.example.net.\nns.b A 192.0.2.54\n",
        "*.wild A 192.0.2.1\n*.wild MX 10 ns1\n",
        "x CNAME ns1\n",
        "d DNAME example.net.\n",
    ],
)
def test_the_non_errors_of_the_loader_tests(body: str) -> None:
    assert assert_same(tz.zone_text(body))[0] == "zone"


# --- lines that are nearly simple ------------------------------------------------------------

TRICKY = [
    # owners: blank (inherited), @, absolute, relative below a relative $ORIGIN, case, wildcard
    "www A 192.0.2.80\n  A 192.0.2.81\n\tA 192.0.2.82\n  ; blank owner, comment only\n",
    "@ A 192.0.2.1\n@ TXT apex\n",
    "www.example.test. A 192.0.2.1\nWWW A 192.0.2.2\nWwW.Example.TEST. AAAA 2001:db8::1\n",
    "$ORIGIN sub\nhost A 192.0.2.3\n@ A 192.0.2.4\n$ORIGIN deeper.sub.example.test.\n"
    "x A 192.0.2.5\n$ORIGIN example.test.\nback A 192.0.2.6\n",
    "*.w A 192.0.2.7\n*.w MX 10 ns1\n_sip._tcp SRV 10 60 5060 ns1\n",
    "x-y_z A 192.0.2.8\n-lead A 192.0.2.9\n",
    # TTLs: digits, units, upper-case units, in the class's other position, too big, $TTL units
    "a 1h A 192.0.2.1\nb 1H30m IN A 192.0.2.2\nc IN 2w A 192.0.2.3\nd 0 A 192.0.2.4\n",
    "e 4294967295 A 192.0.2.5\n",
    "f 4294967296 A 192.0.2.6\n",
    "$TTL 1d\ng A 192.0.2.7\n$TTL 5m30s\nh A 192.0.2.8\n",
    "i 1x A 192.0.2.9\n",
    "j 1h2 A 192.0.2.10\n",
    # classes and types in other cases and forms
    "k in a 192.0.2.11\nl In Aaaa 2001:db8::11\nm IN cname www\nwww A 192.0.2.1\n",
    "n CLASS1 A 192.0.2.12\n",
    "o TYPE1 192.0.2.13\n",
    "p CH A 192.0.2.14\n",
    "q HS TXT x\n",
    "r IN IN A 192.0.2.15\n",
    "s 300 300 A 192.0.2.16\n",
    # addresses the scanner does not take as they are
    "t A 192.0.2.01\n",
    "u A 1.2.3\n",
    "v A 1.2.3.4.5\n",
    "w A 256.1.1.1\n",
    "x2 AAAA 2001:DB8::1\ny AAAA ::ffff:192.0.2.1\nz AAAA 2001:db8:0:0:0:0:0:1\n",
    "aa AAAA 2001:db8::g\n",
    "bb A 192.0.2.1 extra\n",
    "cc A\n",
    "dd\n",
    # names in rdata, MX, SRV, PTR, NS with @ and absolute names
    "@ MX 10 @\nmx MX 65535 ns1.example.test.\nmx2 MX 65536 ns1\nmx3 MX 010 ns1\n",
    "_s._udp SRV 1 2 3 ns1\n_t._udp SRV 1 2 65536 ns1\n_u._udp SRV 1 2 ns1\n",
    "ptr PTR @\nptr2 PTR www.example.net.\nns-here NS ns1\n",
    "alias CNAME @\n",
    # comments, empty comments, semicolons and quotes inside them
    "c1 A 192.0.2.1 ; one\nc2 A 192.0.2.2 ;\nc3 A 192.0.2.3;tight\nc4 A 192.0.2.4 ; \"q\" (p)\n",
    # TXT: several strings, bare words, empty, long, escapes, quotes next to words
    'txt TXT "a b" "c;d" e\ntxt2 TXT ""\ntxt3 TXT "x""y"\ntxt4 TXT a"b"\ntxt5 TXT "a"b\n',
    'txt6 TXT "with \\"quotes\\"" "\\065\\066"\ntxt7 TXT ( "multi"\n   "line" )\n',
    'txt8 TXT "' + "x" * 255 + '"\ntxt9 TXT "' + "x" * 256 + '"\n',
    "txt10 TXT " + "y" * 256 + "\n",
    'txt11 TXT "tab\there" "caf\u00e9"\n',
    'txt12 TXT "unterminated\nnext A 192.0.2.1\n',
    # escapes and parentheses anywhere
    "a\\.b A 192.0.2.1\n\\065 A 192.0.2.2\nparen ( A 192.0.2.3 )\nsplit A (\n 192.0.2.4 )\n",
    "unbalanced A 192.0.2.5 )\n",
    # long names and labels
    "a" * 63 + " A 192.0.2.1\n",
    "a" * 64 + " A 192.0.2.1\n",
    ".".join(["b" * 60] * 4) + " A 192.0.2.2\n",
    ".".join(["c" * 50] * 4) + " A 192.0.2.3\n",
    # directives the scanner leaves to dnspython, and ones it reads
    "$GENERATE 1-3 g$ A 192.0.2.$\nafter A 192.0.2.9\n",
    "$GENERATE 1-2 h$ 600 A 192.0.2.$\n  A 192.0.2.10\n",
    "$INCLUDE other\n",
    "$FOO bar\n",
    "$TTL\n",
    "$TTL 1h extra\n",
    "$ORIGIN\n",
    "$ORIGIN a\\.b\nx A 192.0.2.1\n",
    "$ttl 60\nlower A 192.0.2.1\n$origin sub\nlow A 192.0.2.2\n",
    "  $TTL 5\n",
    # out of the zone: addresses of name servers kept, the rest errors
    "@ NS ns.other.test.\nns.other.test. A 192.0.2.1\nns.other.test. AAAA 2001:db8::1\n",
    "elsewhere.test. TXT out\n",
    # TTL conflicts and duplicates (the first TTL stays)
    "dup A 192.0.2.1\ndup A 192.0.2.1\ndup 60 A 192.0.2.1\ndup 60 A 192.0.2.2\n",
    "cn CNAME a\ncn CNAME a\ncn 60 CNAME a\n",
    # odd blanks: only space and tab separate fields
    "vt\x0bA 192.0.2.1\n",
    "ff A\x0c192.0.2.1\n",
    "nb A 192.0.2.1 ; \x0b in a comment is fine\n",
    "u2028 TXT a\u2028b\n",
]


@pytest.mark.parametrize("body", TRICKY, ids=range(len(TRICKY)))
def test_tricky_lines(body: str) -> None:
    assert_same(tz.zone_text(body))


@pytest.mark.parametrize("body", TRICKY, ids=range(len(TRICKY)))
def test_tricky_lines_with_crlf(body: str) -> None:
    assert_same(tz.zone_text(body).replace("\n", "\r\n"))


@pytest.mark.parametrize(
    "text",
    [
        tz.zone_text("a A 192.0.2.1").replace("\n", "\r"),  # bare CR line ends
        tz.zone_text('a TXT "x\ry"\nb A 192.0.2.2\n').replace("\n", "\r\n"),
        tz.zone_text('a TXT "x\ry"\nb A 192.0.2.2\n'),  # a CR inside quotes is no line end
        tz.HEAD + "last A 192.0.2.1",  # no final line break
        tz.HEAD + "last A 192.0.2.1\r\n",
        tz.zone_text("$UNICODE 2008\n"),
        # IDNA 2003 and 2008 differ on sharp s: the codec holds for every statement after
        tz.zone_text("\u00e0 A 192.0.2.1\n$UNICODE 2003\nstra\u00dfe A 192.0.2.1\n"
                     "$UNICODE 2008\nstra\u00dfe TXT 2008\n  A 192.0.2.2\n"
                     "stra\u00dfe A 192.0.2.3\n"),
        "$TTL 60\n" + tz.HEAD.replace("$TTL 3600\n", ""),
        # no $TTL: the SOA's minimum is the default, and the last TTL written counts too
        "@ SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\nx 60 A 192.0.2.2\ny A 192.0.2.3\n",
        "@ 100 SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\n",
        "x 60 A 192.0.2.2\n@ SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\n",
        "x A 192.0.2.2\n@ 1 SOA ns1 hm 1 2 3 4 300\n@ NS ns1\nns1 A 192.0.2.1\n",
        "  A 192.0.2.9\n" + tz.HEAD,  # a blank owner before any owner: the origin
        "",
        "\n\n",
    ],
)
def test_whole_file_cases(text: str) -> None:
    assert_same(text)


def test_simple_lines_are_read_by_the_scanner_itself() -> None:
    """Only what the scanner is not sure of goes to dnspython: here, the SOA and $GENERATE."""
    text = tz.HEAD.replace("@ IN SOA ns1 hostmaster (\n        2024010101 ; serial\n"
                           "        7200 3600 1209600 300 )\n",
                           "@ IN SOA ns1 hostmaster 2024010101 7200 3600 1209600 300\n")
    text += "".join(generated_lines(random.Random(5), 2000, valid=True))
    text += "$GENERATE 1-3 gen$ A 192.0.2.$\n"
    loader = fastload._Loader(text, dns.name.from_text(ORIGIN), FILE)
    calls: list[int] = []
    fallback = loader._fallback
    loader._fallback = lambda off, line: calls.append(line) or fallback(off, line)  # type: ignore
    loader.read()
    assert [text.splitlines()[n - 1].split()[0] for n in calls] == ["@", "$GENERATE"]
    assert_same(text)


# --- generated and mutated files ---------------------------------------------------------------

OWNERS = ["www", "  ", "\t", "@", "mail", "WWW", "x.y", "host.example.test.", "other.test.", "*.w",
          "sub", "a-b", "_srv._tcp", "ns1"]
TTLS = ["", "", "300 ", "1h ", "2W ", "0 ", "86400 "]
CLASSES = ["", "", "IN ", "in "]
RDATA = {
    "A": ["192.0.2.{n}", "10.0.{n}.1"],
    "AAAA": ["2001:db8::{n}", "::ffff:192.0.2.{n}"],
    "NS": ["ns1", "ns{n}.example.net.", "@"],
    "CNAME": ["www", "alias{n}.example.net."],
    "MX": ["10 mail", "{n} mx.example.net.", "0 ."],
    "TXT": ['"t{n}"', 'word{n}', '"a b" "c"'],
    "PTR": ["www.example.test.", "p{n}"],
    "SRV": ["0 5 {n} www", "1 1 1 ."],
}
BROKEN = ["192.0.2.{n}00", "1.2.3", '"open', "(", "\\065", "65536 x", "", "a b c d e"]


def generated_lines(rnd: random.Random, count: int, valid: bool = False) -> list[str]:
    """Record lines of every simple form (and, unless `valid`, some broken ones)."""
    out = []
    for k in range(count):
        rdtype = rnd.choice(list(RDATA))
        owner = rnd.choice(OWNERS[:1] + OWNERS[3:] if valid else OWNERS)
        if valid and owner.startswith(("host", "other", "www", "mail")):
            owner = f"{owner}{k}" if "." not in owner else f"h{k}.{owner}"
        data = rnd.choice(RDATA[rdtype]).format(n=rnd.randint(0, 255))
        if not valid and rnd.random() < 0.05:
            data = rnd.choice(BROKEN).format(n=rnd.randint(0, 255))
        ttl = rnd.choice(TTLS)
        if valid and rdtype == "CNAME":
            rdtype, data = "A", f"192.0.2.{k % 256}"
        if valid and rdtype in ("NS", "MX", "SRV"):
            rdtype, data = "TXT", f"t{k}"
        comment = rnd.choice(["", "", " ; note", ";"])
        sep = rnd.choice([" ", "\t", "  "])
        out.append(f"{owner}{sep}{ttl}{rnd.choice(CLASSES)}{rdtype}{sep}{data}{comment}\n")
    return out


@pytest.mark.parametrize("seed", range(40))
def test_generated_files(seed: int) -> None:
    rnd = random.Random(seed)
    body = "".join(generated_lines(rnd, 60))
    if seed % 3 == 0:
        body = body.replace("\n", "\r\n")
    assert_same(tz.zone_text(body))


def _corpus() -> list[tuple[str, str]]:
    texts = [(p.read_text(), p.name + ".") for p in sorted(ZONES.iterdir())]
    texts.append((tz.GOOD, ORIGIN))
    texts += [(tz.marked(tz.zone_text(c[1]))[0], ORIGIN) for c in tz.LINE_ERRORS]
    texts += [(tz.zone_text(body), ORIGIN) for body in TRICKY]
    rnd = random.Random(99)
    texts += [(tz.zone_text("".join(generated_lines(rnd, 40))), ORIGIN) for _ in range(10)]
    # big zone files are long; their mutations are made on a window of lines
    return [(text if text.count("\n") < 80 else "\n".join(text.split("\n")[:80]) + "\n", origin)
            for text, origin in texts]


PIECES = ["(", ")", ";", '"', "\\", " ", "\t", "\n", "\r\n", "\r", "@", ".", "$TTL 5\n",
          "$ORIGIN sub\n", "$ORIGIN other.test.\n", "IN", "CH", "1h", "300", "A", "AAAA", "TXT",
          "MX", "NS", "CNAME", "x", "\\065", "\x0b", "1.2.3.4", "::1", '"a b"', "10",
          "$GENERATE 1-3 g$ A 10.0.0.$\n", "99999999999", "*", "-", "_", "\u00e9", "0", "$"]


def mutate(text: str, rnd: random.Random) -> str:
    for _ in range(rnd.randint(1, 3)):
        op = rnd.random()
        i = rnd.randrange(len(text) + 1)
        if op < 0.45:
            text = text[:i] + rnd.choice(PIECES) + text[i:]
        elif op < 0.75:
            text = text[:i] + text[min(len(text), i + rnd.randint(1, 8)) :]
        else:
            lines = text.split("\n")
            a, b = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@pytest.mark.parametrize("seed", range(20))
def test_random_mutations(seed: int) -> None:
    """150 mutations per seed (3000 in all), each loaded both ways."""
    corpus = _corpus()
    rnd = random.Random(seed)
    for _ in range(150):
        text, origin = rnd.choice(corpus)
        mutated = mutate(text, rnd)
        slow = outcome(parse_zone, mutated, origin)
        fast = outcome(parse_zone_fast, mutated, origin)
        assert fast == slow, mutated
