"""Master files to zones, fast: the zone, warnings and errors of `zonefile.parse_zone`, and a
`ZoneText` (the file's text indexed by record) for editing it later without reading it again.

Rules this module keeps:
- Same result as `zonefile.parse_zone`: same RRsets (first TTL of an RRset kept), same warnings,
  same `ZoneLoadError`s with the same file:line; the zone checks are `zonefile.check_records`.
- A line is read here only when this scanner is sure of it; anything else is dnspython's.

Why hand-written: dnspython's tokenizer reads one character at a time; `parse_zone` spends about
80 us a record (98 s for a 1.2M-record zone, which BIND loads in 4 s). Nearly every line of a big
zone is one simple record, which `str.split` and a few regular expressions read in a few
microseconds: an optional owner (or blanks: the previous owner), optional TTL (digits or units
like 1h30m), optional class IN, a type among A, AAAA, NS, CNAME, MX, TXT (plain strings), PTR and
SRV, and a comment; `$ORIGIN` and `$TTL`. Rdata of those types are built directly (for A, NS,
MX...: the object dnspython's constructor makes, without re-validating what the regular
expressions just checked), names through a cache (owners and targets repeat). What remains of
the cost is dnspython's objects (hashing an rdata into its RRset alone is 2.5 us) and `Zone`'s
index, which this module does not change.

What goes to dnspython: everything else, one statement at a time (the line and, through
parentheses, the lines it continues on): parentheses, backslash escapes, quotes other than plain
TXT strings, `$GENERATE`, `$INCLUDE`, `$UNICODE`, other types (SOA too) and classes, names that
are not plain letters, digits, `-`, `_` and `*`, addresses not in canonical form, TTLs out of
range, and every line that does not parse. Its `Reader` gets this scanner's state (origin, last
owner, TTLs) before the statement and hands it back after, so what it reads and how it fails
(message and line) are exactly what it would have been in one pass. A file with bare CR line
ends or `$UNICODE` is read by dnspython alone, statement by statement.

The zone checks run `zonefile.check_records` on the RRsets its rules can speak about (names with
SOA, NS, CNAME, MX or SRV data, names below a delegation, and the targets of NS, MX and SRV
records): on the rest of the zone every rule is silent, so the result is the same, without
hashing a million `dns.name.Name`s in Python. A new rule in `check_records` that looks at other
names must be added to `_relevant_names`.
"""

from __future__ import annotations

import gc
import re
from array import array
from collections.abc import Callable

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.rrset
import dns.tokenizer
import dns.ttl

from gitdns import zonefile
from gitdns.zone import Zone
from gitdns.zoneedit import _LINE_BREAK, _scan
from gitdns.zonefile import ZoneError, ZoneLoadError
from gitdns.zonetext import (
    F_CLASS,
    F_GEN,
    F_KNOWN,
    F_ONELINE,
    F_OWNER,
    F_TTL,
    NameKey,
    ZoneText,
    name_key,
    written,
)

__all__ = ["parse_zone_fast"]

IN = dns.rdataclass.IN
A, AAAA, NS, CNAME, MX, TXT, PTR, SRV, SOA, DNAME = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.CNAME,
    dns.rdatatype.MX, dns.rdatatype.TXT, dns.rdatatype.PTR, dns.rdatatype.SRV,
    dns.rdatatype.SOA, dns.rdatatype.DNAME,
)
_FAST_TYPES = {"A": A, "AAAA": AAAA, "NS": NS, "CNAME": CNAME, "MX": MX, "TXT": TXT, "PTR": PTR,
               "SRV": SRV}
_SINGLETONS = {SOA, CNAME, DNAME}  # as zonefile._RecordSink: a second one is an error
# Types whose RRset the loader may fill without `Rdataset.add` (not singletons, no covers).
_PLAIN_ADD = {A, AAAA, NS, MX, TXT, PTR, SRV}
_KEY_TYPES = {SOA, NS, CNAME, MX, SRV}  # the types the zone checks speak about

_SIMPLE_NAME = re.compile(r"(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?").fullmatch
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}").fullmatch  # dns.ipv4's canonical form
_TTL_UNITS = re.compile(r"(?:[0-9]+[wdhmsWDHMS])+").fullmatch
_UNIT = re.compile(r"([0-9]+)([wdhmsWDHMS])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
# Characters str.split() takes for blanks and dnspython's tokenizer does not (it knows only
# space and tab): a line with one of them in its fields goes to dnspython.
_ODD_BLANKS = re.compile("[\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
                         "\u205f\u3000]").search
_TOKEN = re.compile(r"[^ \t]+")
_DIGITS = "0123456789"
_UNICODE_DIRECTIVE = re.compile(r"\$unicode", re.IGNORECASE).search

_new = object.__new__
_set = object.__setattr__
_Name = dns.name.Name
_RRset = dns.rrset.RRset
_A = dns.rdtypes.IN.A.A
_NS = dns.rdtypes.ANY.NS.NS
_CNAME = dns.rdtypes.ANY.CNAME.CNAME
_PTR = dns.rdtypes.ANY.PTR.PTR
_MX = dns.rdtypes.ANY.MX.MX
_NAME_CACHE_LIMIT = 1 << 16
_TARGET_CLASSES = {NS: _NS, CNAME: _CNAME, PTR: _PTR}


def parse_zone_fast(
    text: str | bytes, origin: dns.name.Name | str, filename: str = "<zone>"
) -> tuple[Zone, list[str], ZoneText]:
    """What `zonefile.parse_zone` returns (zone and warnings, or ZoneLoadError), and the file's
    text indexed for `ZoneText.apply`."""
    if isinstance(origin, str):
        origin = dns.name.from_text(origin)
    text = zonefile._decode(text, filename)
    # Millions of new objects and no cycles among them: the cyclic collector would walk the
    # growing heap again and again (a third of the time); it runs once, after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        loader = _Loader(text, origin, filename)
        loader.read()
        errors, warnings = loader.check()
        if errors:
            raise ZoneLoadError(errors)
        outside: dict[dns.name.Name, list[str]] = {}
        for name, _line, rdata in loader.out_of_zone:
            outside.setdefault(name, []).append(rdata.address)
        rrsets = list(loader.rrsets.values())
        del loader.rrsets  # a big dict, not to be held while Zone builds its own
        zone = Zone(origin, rrsets, outside)
        del rrsets
        return zone, warnings, loader.zone_text(zone)
    finally:
        if collecting:
            gc.enable()


def _ttl_value(token: str) -> int | None:
    """The TTL a token starting with a digit says (as dns.ttl.from_text), or None."""
    if token.isdigit():
        if not token.isascii():
            return None
        value = int(token)
    elif _TTL_UNITS(token):
        value = sum(int(n) * _UNIT_SECONDS[u.lower()] for n, u in _UNIT.findall(token))
    else:
        return None
    return value if value <= dns.ttl.MAX_TTL else None


def _txt_strings(line: str, i: int) -> tuple[list[bytes], str | None] | None:
    """The strings of a TXT record's rdata from `line[i:]` and its comment, when they are plain
    (quoted strings without escapes, or bare words); None when dnspython must read it."""
    strings: list[bytes] = []
    n = len(line)
    comment = None
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        c = line[i]
        if c == ";":
            comment = line[i + 1 :]
            break
        if c == '"':
            j = line.find('"', i + 1)
            if j < 0:
                return None
            s = line[i + 1 : j]
            if "\\" in s:
                return None
            i = j + 1
            if i < n and line[i] not in ' \t";':
                return None  # `"a"b`: the tokenizer's own rules, left to it
        elif c in "()\\":
            return None
        else:
            j = i
            while j < n and line[j] not in ' \t;"()\\':
                j += 1
            if j < n and line[j] not in " \t;":
                return None
            s = line[i:j]
            if _ODD_BLANKS(s):
                return None
            i = j
        b = s.encode()
        if len(b) > 255:
            return None
        strings.append(b)
    if not strings:
        return None
    return strings, comment


class _FallbackSink(zonefile.ReaderSink):
    """The transaction dnspython's Reader writes to, passing records to the loader."""

    def __init__(self, loader: _Loader):
        super().__init__(loader.origin)
        self.loader = loader
        self.line = 0  # set by _Reader at each statement
        self.generating = False

    def add(self, name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> None:
        self.loader.add_fallback(name, ttl, rdata, self.line, self.generating)


class _Reader(zonefile._LineReader):
    """The loader's Reader (errors at the statement's first line), marking `$GENERATE`s."""

    def _generate_line(self) -> None:
        self.txn.generating = True
        try:
            super()._generate_line()
        finally:
            self.txn.generating = False


class _Loader:
    """One pass over a master file: the records, the facts the checks need, the text's index."""

    def __init__(self, text: str, origin: dns.name.Name, filename: str):
        self.text = text
        self.origin = origin
        self.filename = filename
        self.zkey = name_key(origin)
        self.zlen = len(self.zkey)
        # dnspython Reader state, kept here between statements
        self._set_current_origin(origin)
        self.last_name, self.last_key, self.last_in = origin, self.zkey, True
        self.last_ttl, self.last_ttl_known = 0, False
        self.default_ttl, self.default_ttl_known, self.default_from_soa = 0, False, False
        # what the checks need (as zonefile._RecordSink has it, keyed by NameKey)
        self.rrsets: dict[tuple[NameKey, int, int], dns.rrset.RRset] = {}
        self.out_of_zone: list[tuple[dns.name.Name, int, object]] = []
        self.ttl_conflicts: list[tuple[dns.name.Name, int, int]] = []
        self.singleton_dupes: list[tuple[dns.name.Name, int, int]] = []
        self.key_names: set[NameKey] = set()  # names with SOA, NS, CNAME, MX or SRV data
        self.deep_names: list[NameKey] = []  # in-zone names two or more labels below the apex
        # the text's index: one entry per record statement, in file order
        self.starts = array("q")
        self.lines = array("l")
        self.ttls = array("L")
        self.flags = bytearray()
        self.owners: list[dns.name.Name] = []
        self.rdatas: list[object] = []
        self.generated: dict[int, list[tuple[dns.name.Name, int, object]]] = {}
        self.by_owner: dict[NameKey, int | list[int]] = {}
        self.origin_events: list[tuple[int, dns.name.Name]] = []
        self.ttl_events: list[tuple[int, tuple[int, bool, bool]]] = []
        self.ttl_marks: list[tuple[int, int]] = []  # record-less statements that set a TTL
        self.soa_event: int | None = None
        self.idna_codec: dns.name.IDNACodec = dns.name.IDNA_DEFAULT
        self.idna_events: list[tuple[int, dns.name.IDNACodec]] = []
        self._reader: _Reader | None = None
        self._chunk: tuple[int, int, str] = (0, 1, "")
        self._chunk_starts: list[int] | None = None
        self._next_line = 1

    # -- state -----------------------------------------------------------------------------

    def _set_current_origin(self, origin: dns.name.Name) -> None:
        self.cur_origin = origin
        self.cur_labels = origin.labels
        self.okey = name_key(origin)
        self.o_in = self._in_zone(self.okey)
        self.owire = sum(len(label) + 1 for label in origin.labels)
        self.cache: dict[str, tuple[dns.name.Name, NameKey, bool] | None] = {}

    def _in_zone(self, key: NameKey) -> bool:
        zlen = self.zlen
        return len(key) >= zlen and key[len(key) - zlen :] == self.zkey

    def _resolve(self, tok: str) -> tuple[dns.name.Name, NameKey, bool] | None:
        """(name, key, in zone) of a name token under the current origin; None if the token is
        not a plain name (dnspython reads those)."""
        if tok == "@":
            hit = (self.cur_origin, self.okey, self.o_in)
        elif not _SIMPLE_NAME(tok):
            return None
        else:
            lower = tok.lower()
            if tok[-1] == ".":
                if len(tok) + 1 > 255:
                    return None
                labels = tuple(tok.encode().split(b"."))
                key = labels if lower == tok else tuple(lower.encode().split(b"."))
                inz = self._in_zone(key)
            else:
                if len(tok) + 1 + self.owire > 255:
                    return None
                own = tuple(tok.encode().split(b"."))
                labels = own + self.cur_labels
                if lower == tok and self.okey is self.cur_labels:
                    key = labels
                else:
                    key = (own if lower == tok else tuple(lower.encode().split(b"."))) + self.okey
                inz = self.o_in or self._in_zone(key)
            name = _new(_Name)
            _set(name, "labels", labels)
            hit = (name, key, inz)
        cache = self.cache
        if len(cache) >= _NAME_CACHE_LIMIT:
            cache.clear()
        cache[tok] = hit
        return hit

    # -- records -----------------------------------------------------------------------------

    def _add(self, name: dns.name.Name, key: NameKey, inz: bool, ttl: int, rd: dns.rdata.Rdata,
             line: int) -> None:
        """zonefile._RecordSink.add, keyed by NameKey."""
        if not inz:
            self.out_of_zone.append((name, line, rd))
            return
        rdtype = rd.rdtype
        covers = rd.covers() if rdtype not in _PLAIN_ADD else 0
        rkey = (key, rdtype, covers)
        rrset = self.rrsets.get(rkey)
        if rrset is None:
            rrset = _RRset(name, IN, rdtype, covers)
            self.rrsets[rkey] = rrset
            if rdtype in _KEY_TYPES:
                self.key_names.add(key)
            if rdtype in _PLAIN_ADD:
                rrset.ttl = ttl
                rrset.items[rd] = None
            else:
                rrset.add(rd, ttl)
            return
        if rdtype in _SINGLETONS and rd not in rrset:
            self.singleton_dupes.append((name, rdtype, line))
            return
        if rrset.ttl != ttl:
            self.ttl_conflicts.append((name, rdtype, line))
            ttl = rrset.ttl
        if rdtype in _PLAIN_ADD:
            rrset.items[rd] = None  # keeps the first equal rdata, as Set.add does
        else:
            rrset.add(rd, ttl)

    def _entry(self, offset: int, line: int, flags: int, ttl: int, owner: dns.name.Name,
               key: NameKey, rd: dns.rdata.Rdata | None) -> int:
        i = len(self.flags)
        self.starts.append(offset)
        self.lines.append(line)
        self.ttls.append(ttl)
        self.flags.append(flags)
        self.owners.append(owner)
        self.rdatas.append(rd)
        self._index(key, i)
        return i

    def _index(self, key: NameKey, i: int) -> None:
        by_owner = self.by_owner
        have = by_owner.get(key)
        if have is None:
            by_owner[key] = i
            if len(key) - self.zlen >= 2 and self._in_zone(key):
                self.deep_names.append(key)
        elif type(have) is int:
            if have != i:
                by_owner[key] = [have, i]
        elif have[-1] != i:
            have.append(i)

    # -- reading -----------------------------------------------------------------------------

    def read(self) -> None:
        text = self.text
        if "\r" in text and text.count("\r") != text.count("\r\n") or _UNICODE_DIRECTIVE(text):
            self._read_slowly()
        else:
            self._read_lines("\r" in text)

    def _read_slowly(self) -> None:
        """Every statement through dnspython (bare CR line ends, `$UNICODE`)."""
        text, pos, line = self.text, 0, 1
        while pos < len(text):
            pos = self._fallback(pos, line)
            line = self._next_line  # as dnspython counts (a CR inside quotes is no line break)

    def _read_lines(self, crlf: bool) -> None:
        """The scanner: one line at a time, the common record forms inline (this loop is the
        load time); the rest through `_record`, `_directive` and `_fallback`."""
        text = self.text
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the text ends with a line break
        odd = _ODD_BLANKS(text) is not None
        fast_types, digits, ipv4 = _FAST_TYPES, _DIGITS, _IPV4
        resolve, record = self._resolve, self._record
        rrsets = self.rrsets
        rrsets_get = rrsets.get
        by_owner = self.by_owner
        by_owner_get = by_owner.get
        starts, lines_a, ttls, flags_a = self.starts, self.lines, self.ttls, self.flags
        owners, rdatas = self.owners, self.rdatas
        ttl_conflicts, out_of_zone = self.ttl_conflicts, self.out_of_zone
        zlen = self.zlen
        new, set_, A_cls, RRset = _new, _set, _A, _RRset
        target_classes, key_types = _TARGET_CLASSES, _KEY_TYPES
        entry_flags = F_KNOWN | F_ONELINE
        n_lines = len(lines)
        i = off = 0
        while i < n_lines:
            raw = lines[i]
            lineno = i + 1
            line = raw[:-1] if crlf and raw and raw[-1] == "\r" else raw
            if not line or line[0] == ";":
                i += 1
                off += len(raw) + 1
                continue
            semi = line.find(";")
            quote = line.find('"')
            txt_at = -1
            if quote >= 0 and (semi < 0 or quote < semi):
                code = line[:quote]
                txt_at = quote
            else:
                code = line if semi < 0 else line[:semi]
            if "(" in code or ")" in code or "\\" in code or (odd and _ODD_BLANKS(code)):
                end = self._fallback(off, lineno)
                i += text.count("\n", off, end) + (0 if text.endswith("\n", off, end) else 1)
                off = end
                continue
            c0 = line[0]
            if c0 == "$":
                if txt_at < 0 and self._directive(code.split(), off):
                    i += 1
                    off += len(raw) + 1
                    continue
                end = self._fallback(off, lineno)
                i += text.count("\n", off, end) + (0 if text.endswith("\n", off, end) else 1)
                off = end
                continue
            rec = None
            if txt_at < 0:
                # The common forms, inline: [owner] [TTL] [IN] A|NS|PTR|CNAME|MX rdata
                toks = code.split()
                n = len(toks)
                if c0 == " " or c0 == "\t":
                    if n == 0:
                        i += 1  # blanks (and a comment): no record, no state change
                        off += len(raw) + 1
                        continue
                    name, key, inz = self.last_name, self.last_key, self.last_in
                    j = 0
                    fl = entry_flags
                else:
                    tok = toks[0]
                    hit = self.cache.get(tok)
                    if hit is None:
                        hit = resolve(tok)
                    name, key, inz = hit if hit is not None else (None, None, False)
                    j = 1
                    fl = entry_flags | F_OWNER
                if name is not None and n - j >= 2:
                    t = toks[j]
                    ttl = -1
                    if t[0] in digits:
                        ttl = int(t) if t.isdigit() and t.isascii() else _ttl_value(t)
                        j += 1
                        fl |= F_TTL
                        t = toks[j] if j < n else ""
                    if len(t) == 2 and (t == "IN" or t == "in" or t.upper() == "IN"):
                        j += 1
                        fl |= F_CLASS
                        t = toks[j] if j < n else ""
                        if ttl == -1 and t and t[0] in digits:
                            ttl = int(t) if t.isdigit() and t.isascii() else _ttl_value(t)
                            j += 1
                            fl |= F_TTL
                            t = toks[j] if j < n else ""
                    rd = None
                    if ttl is not None and (ttl <= 0xFFFFFFFF) and j + 2 == n and t.isascii():
                        rdtype = fast_types.get(t) or fast_types.get(t.upper())
                        arg = toks[j + 1]
                        if rdtype == A:
                            if ipv4(arg):
                                rd = new(A_cls)
                                set_(rd, "rdclass", IN)
                                set_(rd, "rdtype", A)
                                set_(rd, "rdcomment", None)
                                set_(rd, "address", arg)
                        elif rdtype in target_classes and rdtype != CNAME:
                            hit = self.cache.get(arg) or resolve(arg)
                            if hit is not None:
                                rd = new(target_classes[rdtype])
                                set_(rd, "rdclass", IN)
                                set_(rd, "rdtype", rdtype)
                                set_(rd, "rdcomment", None)
                                set_(rd, "target", hit[0])
                    if rd is not None and ttl is not None:
                        if ttl == -1:
                            if self.last_ttl_known and (
                                    not self.default_ttl_known or self.default_from_soa):
                                ttl = self.last_ttl
                            elif self.default_ttl_known:
                                ttl = self.default_ttl
                            else:
                                rd = None  # "Missing default TTL value": dnspython says it
                        else:
                            self.last_ttl, self.last_ttl_known = ttl, True
                    if rd is not None:
                        if semi >= 0:
                            set_(rd, "rdcomment", line[semi + 1 :])
                        if fl & F_OWNER:
                            self.last_name, self.last_key, self.last_in = name, key, inz
                        if inz:
                            rkey = (key, rdtype, 0)
                            rrset = rrsets_get(rkey)
                            if rrset is None:
                                rrset = RRset(name, IN, rdtype)
                                rrsets[rkey] = rrset
                                if rdtype in key_types:
                                    self.key_names.add(key)
                                rrset.ttl = ttl
                            elif rrset.ttl != ttl:
                                ttl_conflicts.append((name, rdtype, lineno))
                            rrset.items[rd] = None
                        else:
                            out_of_zone.append((name, lineno, rd))
                        e = len(flags_a)
                        starts.append(off)
                        lines_a.append(lineno)
                        ttls.append(ttl)
                        flags_a.append(fl)
                        owners.append(name)
                        rdatas.append(rd)
                        have = by_owner_get(key)
                        if have is None:
                            by_owner[key] = e
                            if len(key) - zlen >= 2 and inz:
                                self.deep_names.append(key)
                        elif type(have) is int:
                            if have != e:
                                by_owner[key] = [have, e]
                        elif have[-1] != e:
                            have.append(e)
                        i += 1
                        off += len(raw) + 1
                        continue
            rec = record(line, code, txt_at, semi, c0, resolve, fast_types, digits, ipv4)
            if rec is None:
                end = self._fallback(off, lineno)
                i += text.count("\n", off, end) + (0 if text.endswith("\n", off, end) else 1)
                off = end
                continue
            name, key, inz, ttl, fl, rd = rec
            self._add(name, key, inz, ttl, rd, lineno)
            self._entry(off, lineno, fl, ttl, name, key, rd)
            i += 1
            off += len(raw) + 1

    def _record(
        self, line: str, code: str, txt_at: int, semi: int, c0: str, resolve: Callable,
        fast_types: dict[str, int], digits: str, ipv4: Callable,
    ) -> tuple[dns.name.Name, NameKey, bool, int, int, dns.rdata.Rdata] | None:
        """One simple record line read, with the reader's state moved on; None if it is not
        simple (or is blank)."""
        if txt_at >= 0:
            spans = [m.span() for m in _TOKEN.finditer(code)]
            toks = [code[a:b] for a, b in spans]
        else:
            toks = code.split()
            spans = None
        n = len(toks)
        if n == 0:
            return None
        if c0 == " " or c0 == "\t":
            name, key, inz = self.last_name, self.last_key, self.last_in
            j = 0
            flags = F_KNOWN | F_ONELINE
        else:
            hit = self.cache.get(toks[0])
            if hit is None:
                hit = resolve(toks[0])
                if hit is None:
                    return None
            name, key, inz = hit
            j = 1
            flags = F_KNOWN | F_ONELINE | F_OWNER
        if j >= n:
            return None
        ttl = None
        t = toks[j]
        if t[0] in digits:
            ttl = _ttl_value(t)
            if ttl is None:
                return None
            j += 1
            flags |= F_TTL
            if j >= n:
                return None
            t = toks[j]
        if len(t) == 2 and t.upper() == "IN":
            j += 1
            flags |= F_CLASS
            if j >= n:
                return None
            t = toks[j]
            if ttl is None and t[0] in digits:
                ttl = _ttl_value(t)
                if ttl is None:
                    return None
                j += 1
                flags |= F_TTL
                if j >= n:
                    return None
                t = toks[j]
        rdtype = fast_types.get(t)
        if rdtype is None:
            rdtype = fast_types.get(t.upper())
            if rdtype is None:
                return None
        j += 1
        comment = line[semi + 1 :] if semi >= 0 else None
        if txt_at >= 0:
            if rdtype != TXT or spans is None:
                return None
            got = _txt_strings(line, spans[j - 1][1])
            if got is None:
                return None
            strings, comment = got
            rd = self._txt(strings)
        else:
            rest = toks[j:]
            rd = self._rdata(rdtype, rest, ipv4)
            if rd is None:
                return None
        if comment is not None:
            _set(rd, "rdcomment", comment)
        if ttl is None:
            if self.last_ttl_known and (not self.default_ttl_known or self.default_from_soa):
                ttl = self.last_ttl
            elif self.default_ttl_known:
                ttl = self.default_ttl
            else:
                return None  # "Missing default TTL value": dnspython says it
        else:
            self.last_ttl, self.last_ttl_known = ttl, True
        if flags & F_OWNER:
            self.last_name, self.last_key, self.last_in = name, key, inz
        return name, key, inz, ttl, flags, rd

    def _name(self, tok: str) -> dns.name.Name | None:
        hit = self.cache.get(tok)
        if hit is None:
            hit = self._resolve(tok)
            if hit is None:
                return None
        return hit[0]

    def _rdata(self, rdtype: int, rest: list[str], ipv4: Callable) -> dns.rdata.Rdata | None:
        n = len(rest)
        if rdtype == A:
            if n != 1 or not ipv4(rest[0]):
                return None
            rd = _new(_A)
            _set(rd, "rdclass", IN)
            _set(rd, "rdtype", A)
            _set(rd, "rdcomment", None)
            _set(rd, "address", rest[0])
            return rd
        if rdtype in _TARGET_CLASSES:
            if n != 1:
                return None
            target = self._name(rest[0])
            if target is None:
                return None
            rd = _new(_TARGET_CLASSES[rdtype])
            _set(rd, "rdclass", IN)
            _set(rd, "rdtype", rdtype)
            _set(rd, "rdcomment", None)
            _set(rd, "target", target)
            return rd
        if rdtype == MX:
            if n != 2 or not (rest[0].isdigit() and rest[0].isascii()):
                return None
            pref = int(rest[0])
            exchange = self._name(rest[1])
            if pref > 65535 or exchange is None:
                return None
            rd = _new(_MX)
            _set(rd, "rdclass", IN)
            _set(rd, "rdtype", MX)
            _set(rd, "rdcomment", None)
            _set(rd, "preference", pref)
            _set(rd, "exchange", exchange)
            return rd
        if rdtype == AAAA:
            if n != 1:
                return None
            try:
                return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, rest[0])
            except Exception:
                return None  # dnspython says why
        if rdtype == TXT:
            if n == 0:
                return None
            strings = []
            for tok in rest:
                if '"' in tok:
                    return None
                b = tok.encode()
                if len(b) > 255:
                    return None
                strings.append(b)
            return self._txt(strings)
        if rdtype == SRV:
            if n != 4:
                return None
            nums = []
            for tok in rest[:3]:
                if not (tok.isdigit() and tok.isascii()) or int(tok) > 65535:
                    return None
                nums.append(int(tok))
            target = self._name(rest[3])
            if target is None:
                return None
            return dns.rdtypes.IN.SRV.SRV(IN, SRV, nums[0], nums[1], nums[2], target)
        return None

    @staticmethod
    def _txt(strings: list[bytes]) -> dns.rdata.Rdata:
        rd = _new(dns.rdtypes.ANY.TXT.TXT)
        _set(rd, "rdclass", IN)
        _set(rd, "rdtype", TXT)
        _set(rd, "rdcomment", None)
        _set(rd, "strings", tuple(strings))
        return rd

    def _directive(self, toks: list[str], off: int) -> bool:
        """`$TTL` and `$ORIGIN` with a plain argument; False for anything dnspython must read."""
        if len(toks) != 2:
            return False
        what = toks[0].upper()
        if what == "$TTL":
            if toks[1][0] not in _DIGITS:
                return False
            ttl = _ttl_value(toks[1])
            if ttl is None:
                return False
            self.default_ttl, self.default_ttl_known, self.default_from_soa = ttl, True, False
            self.ttl_events.append((off, (ttl, True, False)))
            return True
        if what == "$ORIGIN":
            hit = self.cache.get(toks[1]) or self._resolve(toks[1])
            if hit is None:
                return False
            self._set_current_origin(hit[0])
            self.origin_events.append((off, hit[0]))
            return True
        return False

    # -- dnspython, for what the scanner leaves -----------------------------------------------

    def _fallback(self, off: int, lineno: int) -> int:
        """dnspython reads the statement that starts at `off` (line `lineno`) with the loader's
        state; returns where it ends."""
        text = self.text
        _toks, end = _scan(text, off)
        chunk = text[off:end]
        reader = self._reader
        if reader is None:
            sink = _FallbackSink(self)
            tok = dns.tokenizer.Tokenizer("", self.filename)
            reader = self._reader = _Reader(
                tok, IN, sink, allow_include=False)  # type: ignore[arg-type]
            reader.zone_origin = dns.name.root
        tok = dns.tokenizer.Tokenizer(chunk, self.filename, self.idna_codec)
        tok.line_number = lineno
        reader.tok = tok
        reader.current_origin = self.cur_origin
        reader.last_name = self.last_name
        reader.last_ttl, reader.last_ttl_known = self.last_ttl, self.last_ttl_known
        reader.default_ttl = self.default_ttl
        reader.default_ttl_known = self.default_ttl_known
        reader.default_ttl_from_soa = self.default_from_soa
        self._chunk = (off, lineno, chunk)
        self._chunk_starts = None
        ttl_before = (self.last_ttl, self.last_ttl_known)
        entries_before = len(self.flags)
        try:
            reader.read()
        except zonefile._RecordError as e:
            lines = text.splitlines()
            record = lines[e.line - 1].strip() if 0 < e.line <= len(lines) else ""
            raise ZoneLoadError(
                [ZoneError(self.filename, e.line, f"{e} in `{record}`")]) from None
        except dns.exception.SyntaxError as e:
            msg = str(e)
            prefix = f"{self.filename}:"
            line: int | None = None
            if msg.startswith(prefix):
                num, _, detail = msg[len(prefix) :].partition(":")
                if num.isdigit():
                    line, msg = int(num), detail.strip()
            raise ZoneLoadError([ZoneError(self.filename, line, msg)]) from None
        except (dns.exception.DNSException, ValueError, UnicodeError) as e:
            raise ZoneLoadError(
                [ZoneError(self.filename, tok.line_number, f"{type(e).__name__}: {e}")]
            ) from None
        assert reader.current_origin is not None
        if tok.idna_codec is not self.idna_codec:  # `$UNICODE`: the tokenizer's, carried on
            self.idna_codec = tok.idna_codec
            self.idna_events.append((off, tok.idna_codec))
        if reader.current_origin is not self.cur_origin:
            self._set_current_origin(reader.current_origin)
            self.origin_events.append((off, reader.current_origin))
        if reader.last_name is not self.last_name:
            self.last_name = reader.last_name
            self.last_key = name_key(self.last_name)
            self.last_in = self._in_zone(self.last_key)
        state = (reader.default_ttl, reader.default_ttl_known, reader.default_ttl_from_soa)
        if state != (self.default_ttl, self.default_ttl_known, self.default_from_soa):
            self.default_ttl, self.default_ttl_known, self.default_from_soa = state
            if state[2] and self.soa_event is None:
                self.soa_event = len(self.ttl_events)
            self.ttl_events.append((off, state))
        self.last_ttl, self.last_ttl_known = reader.last_ttl, reader.last_ttl_known
        if len(self.flags) == entries_before and (self.last_ttl, self.last_ttl_known) != ttl_before:
            self.ttl_marks.append((off, self.last_ttl))  # e.g. a $GENERATE of no records
        for e in range(entries_before, len(self.flags)):  # how dnspython's statements are written
            self.flags[e] = written(text[self.starts[e] : end], self.flags[e])
        self._next_line = tok.line_number
        return end

    def add_fallback(self, name: dns.name.Name, ttl: int, rd: dns.rdata.Rdata, line: int,
                     generate: bool) -> None:
        key = name_key(name)
        inz = self._in_zone(key)
        self._add(name, key, inz, ttl, rd, line)
        n = len(self.flags)
        if n and self.lines[n - 1] == line and self.flags[n - 1] & F_GEN and generate:
            self.generated[n - 1].append((name, ttl, rd))
            self.owners[n - 1] = name
            self._index(key, n - 1)
            return
        offset = self._line_offset(line)
        flags = F_OWNER if self.text[offset] not in " \t" else 0
        if generate:
            flags |= F_GEN
        i = self._entry(offset, line, flags, ttl, name, key, None if generate else rd)
        if generate:
            self.generated[i] = [(name, ttl, rd)]

    def _line_offset(self, line: int) -> int:
        off, first, chunk = self._chunk
        if line == first:
            return off
        if self._chunk_starts is None:
            self._chunk_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(chunk)]
        return off + self._chunk_starts[line - first]

    # -- the checks ------------------------------------------------------------------------------

    def _relevant_names(self) -> set[NameKey]:
        """The names `check_records` can say something about (see the module's docstring)."""
        relevant = set(self.key_names)
        cuts = {k for k in relevant if (k, NS, 0) in self.rrsets and k != self.zkey}
        if cuts:
            zlen = self.zlen
            for key in self.deep_names:
                for i in range(1, len(key) - zlen):
                    if key[i:] in cuts:
                        relevant.add(key)
                        break
        rrsets = self.rrsets
        for key in list(relevant):
            for rdtype in (NS, MX, SRV):
                rrset = rrsets.get((key, rdtype, 0))
                for rd in rrset or ():
                    target = rd.exchange if rdtype == MX else rd.target
                    tkey = name_key(target)
                    if self._in_zone(tkey):
                        relevant.add(tkey)
        return relevant

    def check(self) -> tuple[list[ZoneError], list[str]]:
        relevant = self._relevant_names()
        rrsets: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
        lines: dict[tuple[dns.name.Name, int, int], int] = {}
        record_lines: dict[tuple[dns.name.Name, object], int] = {}
        for (key, rdtype, covers), rrset in self.rrsets.items():
            if key not in relevant:
                continue
            rkey = (rrset.name, rdtype, covers)
            rrsets[rkey] = rrset
            first = True
            for i in self._entries_of(key):
                flags = self.flags[i]
                records = (self.generated[i] if flags & F_GEN
                           else [(self.owners[i], 0, self.rdatas[i])])
                for name, _ttl, rd in records:
                    if rd.rdtype != rdtype or rd.covers() != covers or name_key(name) != key:
                        continue
                    if first:
                        lines[rkey] = self.lines[i]
                        first = False
                    if rdtype in (NS, MX, SRV):
                        record_lines.setdefault((name, rd), self.lines[i])
        return zonefile.check_records(
            self.origin, rrsets, self.filename, lines, self.out_of_zone, self.ttl_conflicts,
            record_lines, self.singleton_dupes,
        )

    def _entries_of(self, key: NameKey) -> list[int]:
        have = self.by_owner.get(key)
        if have is None:
            return []
        return [have] if type(have) is int else have

    def zone_text(self, zone: Zone) -> ZoneText:
        del self.lines  # line numbers of a text about to change: ZoneText counts them itself
        return ZoneText(
            self.text, self.origin, zone.soa[0], self.starts, self.ttls, self.flags,
            self.owners, self.rdatas, self.generated, self.by_owner, self.origin_events,
            self.ttl_events, self.ttl_marks, self.soa_event, self.idna_events,
        )
