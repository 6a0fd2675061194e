"""Apply a zone change to the operator's master file text, so `git diff` shows only what changed.

Rules this module keeps:
- Untouched bytes stay untouched: comments, order, blank lines, directives and the layout of every
  record not in the change. Deleted records vanish whole, added ones are one line each in the
  file's style, and the SOA changes in place (its serial: the digits alone).
- The result is verified: it must parse to exactly the new zone, or ZoneEditError is raised.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.ttl
import dns.zonefile

from gitdns.diff import Record, ZoneDiff, apply_diff
from gitdns.zone import Zone
from gitdns.zonefile import ReaderSink, ZoneLoadError, parse_zone

_SOA = dns.rdatatype.SOA
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what ends a line for dnspython's tokenizer
_ENDS_TOKEN = " \t\r\n;()\""
_BLANKS = re.compile(r"[ \t]*")
_TAB = 8


class ZoneEditError(Exception):
    """The change cannot be written into the file's text faithfully; re-print the zone instead."""


# --- reading: which lines hold which records ------------------------------------------------


@dataclass
class _Entry:
    """One record line (or several, in parentheses), or one `$GENERATE` line, of the file."""

    start: int  # first line, 1-based
    offset: int  # where that line starts in the text
    end_offset: int  # just past the record's last line break (or the end of the text)
    records: list[Record]  # (owner, TTL as read from this line, rdata)
    owner_explicit: bool  # False: a blank owner field, the owner is the previous record's
    generate: bool  # a `$GENERATE` line, which stands for many records
    origin: dns.name.Name  # the `$ORIGIN` in force
    dollar_ttl: int | None  # the `$TTL` in force (None when the file has given none)


@dataclass(frozen=True)
class _Tok:
    """A token of the master file, by where it is in the text."""

    start: int
    end: int
    value: str


@dataclass
class _Fields:
    """The fields of one record's text: owner, TTL and class (each optional), type, rdata."""

    owner: _Tok | None
    ttl: _Tok | None
    rdclass: _Tok | None
    rdtype: _Tok
    rdata: list[_Tok]

    def columns(self) -> list[tuple[str, _Tok]]:
        kinds = [("owner", self.owner), ("ttl", self.ttl), ("class", self.rdclass)]
        out = [(k, t) for k, t in kinds if t is not None]
        out.append(("type", self.rdtype))
        if self.rdata:
            out.append(("rdata", self.rdata[0]))
        return sorted(out, key=lambda kt: kt[1].start)


class _Sink(ReaderSink):
    """What `dns.zonefile.Reader` needs of a transaction: here, a list for the current entry."""

    def __init__(self, origin: dns.name.Name):
        super().__init__(origin)
        self.records: list[Record] | None = None

    def add(self, name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> None:
        if self.records is not None:
            self.records.append((name, ttl, rdata))


class _EntryReader(dns.zonefile.Reader):
    """dnspython's Reader (the loader's parser), noting where each record comes from."""

    def __init__(self, text: str, origin: dns.name.Name):
        self.sink = _Sink(origin)
        tok = dns.tokenizer.Tokenizer(text, "<zone>")
        super().__init__(tok, dns.rdataclass.IN, self.sink, allow_include=False)  # type: ignore[arg-type]
        self.zone_origin = dns.name.root  # as the loader: out-of-zone names are its business
        self.found: list[tuple[int, bool, dns.name.Name, int | None, list[Record]]] = []

    def dollar_ttl(self) -> int | None:
        if self.default_ttl_known and not self.default_ttl_from_soa:
            return self.default_ttl
        return None

    def _note(self, generate: bool, read: Callable[[], None]) -> None:
        records: list[Record] = []
        assert self.current_origin is not None
        line = self.tok.line_number
        self.found.append((line, generate, self.current_origin, self.dollar_ttl(), records))
        self.sink.records = records
        try:
            read()
        finally:
            self.sink.records = None

    def _rr_line(self) -> None:
        self._note(False, super()._rr_line)

    def _generate_line(self) -> None:
        self._note(True, super()._generate_line)


@dataclass
class _File:
    """A master file's text, cut into lines and records."""

    text: str
    entries: list[_Entry]
    final_origin: dns.name.Name
    final_dollar_ttl: int | None
    line_starts: list[int] = field(default_factory=list)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.line_starts, offset)


def _line_starts(text: str) -> list[int]:
    return [0] + [m.end() for m in _LINE_BREAK.finditer(text) if m.end() < len(text)]


def _read(text: str, origin: dns.name.Name) -> _File:
    reader = _EntryReader(text, origin)
    try:
        reader.read()
    except (dns.exception.DNSException, ValueError, UnicodeError) as e:
        raise ZoneEditError(f"the zone text does not parse: {e}") from None
    starts = _line_starts(text)
    entries = []
    for line, generate, eorigin, dollar_ttl, records in reader.found:
        if not records:
            continue  # a line of blanks, or a name outside the zone
        offset = starts[line - 1]
        _toks, end = _scan(text, offset)
        explicit = text[offset] not in " \t"
        entries.append(
            _Entry(line, offset, end, records, explicit, generate, eorigin, dollar_ttl)
        )
    assert reader.current_origin is not None
    return _File(text, entries, reader.current_origin, reader.dollar_ttl(), starts)


def _scan(text: str, pos: int) -> tuple[list[_Tok], int]:
    """The tokens of the record that starts at `pos`, and where the record ends.

    The rules are dnspython's tokenizer's: `;` comments, `(` `)` joining lines, quoted strings
    and backslash escapes; a record ends at the first line break outside parentheses.
    """
    toks: list[_Tok] = []
    depth, i, n = 0, pos, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c in "\r\n":
            i += 2 if text.startswith("\r\n", i) else 1
            if depth <= 0:
                return toks, i
        elif c == ";":
            while i < n and text[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth, i = depth + 1, i + 1
        elif c == ")":
            depth, i = depth - 1, i + 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            toks.append(_Tok(i, j + 1, text[i : j + 1]))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _ENDS_TOKEN:
                j += 2 if text[j] == "\\" else 1
            toks.append(_Tok(i, j, text[i:j]))
            i = j
    return toks, n


def _fields(text: str, entry: _Entry) -> _Fields:
    """Which token of a record is which, decided as dnspython's Reader decides it."""
    toks, _end = _scan(text, entry.offset)
    i = 0
    owner = ttl = rdclass = None
    if entry.owner_explicit:
        owner, i = toks[0], 1
    if _is_ttl(toks[i].value):
        ttl, i = toks[i], i + 1
    if _is_class(toks[i].value):
        rdclass, i = toks[i], i + 1
    if ttl is None and _is_ttl(toks[i].value):
        ttl, i = toks[i], i + 1
    return _Fields(owner, ttl, rdclass, toks[i], toks[i + 1 :])


def _is_ttl(value: str) -> bool:
    try:
        dns.ttl.from_text(value)
    except dns.ttl.BadTTL:
        return False
    return True


def _is_class(value: str) -> bool:
    try:
        dns.rdataclass.from_text(value)
    except Exception:
        return False
    return True


# --- the edit -------------------------------------------------------------------------------


def edit_zone_text(
    text: str, origin: dns.name.Name, diff: ZoneDiff, *, old_zone: Zone | None = None
) -> str:
    """`text` (which parses to the diff's old zone) changed so that it parses to the new one.

    Deleted records are removed whole; records whose TTL alone changed get the new TTL in place;
    added records are written one per line after the last record of their owner (at the end of
    the file for a new owner); the SOA is edited in place. A record that loses the line it
    inherited its owner (or TTL) from gets it written out. Raises ZoneEditError when the text
    cannot be edited faithfully (a record from `$GENERATE`, a text that is not the old zone):
    the caller then writes the zone out whole.

    `old_zone`, when the caller has it (the served zone loaded from this very text), saves
    parsing the text twice; big zones load slowly.
    """
    if old_zone is None:
        try:
            old_zone, _warnings = parse_zone(text, origin)
        except ZoneLoadError as e:
            raise ZoneEditError(f"the zone text does not parse: {e}") from None
    if old_zone.soa[0] != diff.old_soa[2]:
        raise ZoneEditError(
            f"the file holds serial {old_zone.serial}, the change applies to {diff.old_serial}"
        )
    zfile = _read(text, origin)
    expected = apply_diff(old_zone, diff)
    plan = _Plan(zfile, origin, diff, expected)
    new_text, _kept, _inserted = plan.render()
    if _holds(new_text, origin, expected):
        return new_text  # the usual case: no record lost the owner or TTL it inherited
    new_text = plan.settle()
    if not _holds(new_text, origin, expected, raise_why=True):
        raise ZoneEditError("the edited text does not hold the new zone")
    return new_text


class _Plan:
    """The edits to make, refined until the edited text reads back as intended."""

    def __init__(self, zfile: _File, origin: dns.name.Name, diff: ZoneDiff, new_zone: Zone):
        self.file = zfile
        self.text = zfile.text
        self.origin = origin
        entries = zfile.entries
        self.deleted: set[int] = set()
        self.explicit_ttl: dict[int, int] = {}  # entry -> TTL to write on it
        self.explicit_owner: set[int] = set()  # entries whose blank owner is written out
        self.expected: dict[int, list[Record]] = {i: list(e.records) for i, e in enumerate(entries)}
        self.replacements: list[tuple[int, int, str]] = []  # fixed token edits (SOA fields)
        self.insertions: dict[int, list[tuple[str, Record]]] = {}  # offset -> lines

        index: dict[tuple[dns.name.Name, dns.rdata.Rdata], list[int]] = {}
        for i, e in enumerate(entries):
            for name, _ttl, rd in e.records:
                index.setdefault((name, rd), []).append(i)
        deleted = {(name, rd): ttl for name, ttl, rd in diff.deleted}
        added = {(name, rd): ttl for name, ttl, rd in diff.added}
        for key in deleted:
            where = index.get(key, [])
            if not where:
                name, rd = key
                raise ZoneEditError(
                    f"record {name} {dns.rdatatype.to_text(rd.rdtype)} {rd.to_text()} "
                    "is not in the zone text"
                )
            for i in where:
                e = entries[i]
                if e.generate:
                    name, rd = key
                    raise ZoneEditError(
                        f"record {name} {dns.rdatatype.to_text(rd.rdtype)} {rd.to_text()} comes "
                        f"from $GENERATE at line {e.start}; edit the file by hand"
                    )
                if key in added:  # the TTL alone changes
                    self._set_ttl(i, added[key])
                else:
                    self.deleted.add(i)
        # An RRset written with several TTLs (RFC 2181 5.2) takes one of them; once the change
        # touches it, every line of it says the TTL the new zone gives it.
        touched = {(name, rd.rdtype, rd.covers()) for name, _ttl, rd in diff.deleted + diff.added}
        for i, e in enumerate(entries):
            if i in self.deleted or e.generate:
                continue
            name, ttl, rd = self.expected[i][0]
            if (name, rd.rdtype, rd.covers()) in touched:
                rrset = new_zone.get(name, rd.rdtype, rd.covers())
                if rrset is not None and rrset.ttl != ttl:
                    self._set_ttl(i, rrset.ttl)
        self._edit_soa(diff)
        new_records = [(n, ttl, rd) for (n, rd), ttl in added.items() if (n, rd) not in deleted]
        self._place(new_records)

    # - what the diff asks for -

    def _set_ttl(self, i: int, ttl: int) -> None:
        name, old_ttl, rd = self.expected[i][0]
        self.expected[i] = [(name, ttl, rd)]
        if old_ttl != ttl:
            self.explicit_ttl[i] = ttl

    def _edit_soa(self, diff: ZoneDiff) -> None:
        _name, new_ttl, new = diff.new_soa
        for i, e in enumerate(self.file.entries):
            name, _ttl, old = e.records[0]
            if e.generate or name != self.origin or old.rdtype != _SOA:
                continue
            self._set_ttl(i, new_ttl)
            self.expected[i] = [(name, new_ttl, new)]
            if old == new:
                continue
            toks = _fields(self.text, e).rdata
            if len(toks) != 7:
                raise ZoneEditError(f"cannot find the SOA fields at line {e.start}")
            for tok, attr in zip(toks, ("mname", "rname", "serial", "refresh", "retry",
                                        "expire", "minimum"), strict=True):
                before, after = getattr(old, attr), getattr(new, attr)
                if before == after:
                    continue
                if isinstance(after, dns.name.Name):
                    value = _name_text(after, e.origin)
                else:
                    value = str(after)
                self.replacements.append((tok.start, tok.end, value))

    def _place(self, records: list[Record]) -> None:
        """Where each added record goes, and the line that says it."""
        entries = self.file.entries
        last: dict[dns.name.Name, int] = {}
        for i, e in enumerate(entries):
            for name, _ttl, _rd in e.records:
                if name not in last or entries[last[name]].end_offset <= e.end_offset:
                    last[name] = i
        layout_entries = [
            i for i, e in enumerate(entries)
            if not e.generate and self.file.line_of(e.end_offset - 1) == e.start
        ]
        with_class = sum(1 for i in layout_entries if _fields(self.text, entries[i]).rdclass)
        self.write_class = 2 * with_class >= len(layout_entries) > 0
        eof = len(self.text)
        # Existing owners first, in file order, then new owners at the end in name order.
        ordered = sorted(records, key=lambda r: (r[0] not in last, entries[last[r[0]]].start
                                                 if r[0] in last else 0))
        for rec in ordered:
            name = rec[0]
            if name in last:
                anchor = entries[last[name]]
                offset, eorigin, dollar_ttl = anchor.end_offset, anchor.origin, anchor.dollar_ttl
            else:
                offset, eorigin = eof, self.file.final_origin
                dollar_ttl = self.file.final_dollar_ttl
            template = self._template(offset, layout_entries)
            line = self._line(rec, eorigin, dollar_ttl, template)
            self.insertions.setdefault(offset, []).append((line, rec))

    def _template(self, offset: int, layout_entries: list[int]) -> _Entry | None:
        """The single-line record nearest before `offset`, whose layout a new line copies."""
        before = [i for i in layout_entries if self.file.entries[i].end_offset <= offset]
        return self.file.entries[before[-1]] if before else None

    def _line(
        self, rec: Record, eorigin: dns.name.Name, dollar_ttl: int | None,
        template: _Entry | None,
    ) -> str:
        name, ttl, rd = rec
        fields = [("owner", _name_text(name, eorigin))]
        if ttl != dollar_ttl:
            fields.append(("ttl", str(ttl)))
        if self.write_class:
            fields.append(("class", "IN"))
        fields.append(("type", dns.rdatatype.to_text(rd.rdtype)))
        fields.append(("rdata", rd.to_text(origin=eorigin, relativize=True)))
        columns: dict[str, int] = {}
        pad = " "
        if template is not None:
            line_start = template.offset
            first_line = self.text[line_start:template.end_offset]
            if "\t" in first_line.split(";")[0]:
                pad = "\t"
            prev_end = line_start
            present = _fields(self.text, template).columns()
            for kind, tok in present:
                # Align only where the file aligns: a gap wider than one space is layout.
                if self.text[prev_end:tok.start] not in ("", " "):
                    columns[kind] = _width(self.text[line_start:tok.start])
                prev_end = tok.end
            # A field the template lacks takes the column of the template's next field.
            order = ["owner", "ttl", "class", "type", "rdata"]
            for k in range(len(order) - 2, 0, -1):
                if order[k] not in dict(present) and order[k + 1] in columns:
                    columns[order[k]] = columns[order[k + 1]]
        out = fields[0][1]
        for kind, value in fields[1:]:
            out += pad
            col = columns.get(kind, 0)
            while _width(out) < col:
                out += pad
            out += value
        return out

    # - reading back, and writing out what inheritance needs -

    def render(self) -> tuple[str, dict[int, int], dict[int, int]]:
        """The edited text, where each kept entry starts, and where each insertion starts."""
        text = self.text
        nl = _newline(text)
        edits: list[tuple[int, int, int, str, tuple[str, int] | None]] = []
        for i, e in enumerate(self.file.entries):
            if i in self.deleted:
                edits.append((e.offset, 2, e.end_offset, "", None))
                continue
            edits.append((e.offset, 1, e.offset, "", ("entry", i)))
            if i in self.explicit_owner:
                edits.append(self._owner_edit(i))
            if i in self.explicit_ttl:
                edit = self._ttl_edit(i, self.explicit_ttl[i])
                if edit is not None:
                    edits.append(edit)
        for start, end, value in self.replacements:
            edits.append((start, 2, end, value, None))
        skip: dict[int, int] = {}  # insertions at the end of a text without a final line break
        for offset, lines in self.insertions.items():
            chunk = "".join(line + nl for line, _rec in lines)
            if offset == len(text) and text and not text.endswith(("\n", "\r")):
                chunk, skip[offset] = nl + chunk[: -len(nl)], len(nl)
            edits.append((offset, 0, offset, chunk, ("insert", offset)))
        edits.sort(key=lambda e: (e[0], e[1]))
        out: list[str] = []
        size = cur = 0
        where: dict[tuple[str, int], int] = {}
        for start, _prio, end, value, key in edits:
            if start < cur:
                raise ZoneEditError("overlapping edits (a bug in zoneedit)")
            out.append(text[cur:start])
            size += start - cur
            if key is not None:
                where[key] = size + (skip.get(start, 0) if key[0] == "insert" else 0)
            out.append(value)
            size += len(value)
            cur = end
        out.append(text[cur:])
        new_text = "".join(out)
        kept = {k[1]: v for k, v in where.items() if k[0] == "entry"}
        inserted = {k[1]: v for k, v in where.items() if k[0] == "insert"}
        return new_text, kept, inserted

    def _owner_edit(self, i: int) -> tuple[int, int, int, str, None]:
        e = self.file.entries[i]
        owner = _name_text(e.records[0][0], e.origin)
        blanks = _BLANKS.match(self.text, e.offset)
        assert blanks is not None
        if " " * len(blanks.group()) == blanks.group() and len(blanks.group()) > len(owner):
            return (e.offset, 2, e.offset + len(owner), owner, None)  # keep the columns
        return (e.offset, 2, e.offset, owner, None)

    def _ttl_edit(self, i: int, ttl: int) -> tuple[int, int, int, str, None] | None:
        fields = _fields(self.text, self.file.entries[i])
        if fields.ttl is not None:
            if dns.ttl.from_text(fields.ttl.value) == ttl:
                return None
            return (fields.ttl.start, 2, fields.ttl.end, str(ttl), None)
        after = fields.rdclass or fields.rdtype
        sep = self.text[after.start - 1] if self.text[after.start - 1] in " \t" else " "
        return (after.start, 2, after.start, f"{ttl}{sep}", None)

    def settle(self) -> str:
        """Render, read back, and write out owners and TTLs that inheritance got wrong."""
        entries = self.file.entries
        for _round in range(len(entries) + 2):
            new_text, kept, inserted = self.render()
            again = _read(new_text, self.origin)
            by_line: dict[int, _Entry] = {e.start: e for e in again.entries}
            progress = False
            # One written-out owner (or TTL) serves the blank-owner (or TTL-less) records that
            # follow it: fix the first record of each run, let the rest inherit again.
            owner_run: set[int] = set()
            ttl_run: set[int] = set()
            prev: int | None = None
            for i in sorted(kept):
                e, want = entries[i], self.expected[i]
                got = by_line.get(again.line_of(kept[i]))
                if got is None or len(got.records) != len(want):
                    raise ZoneEditError(f"the record at line {e.start} did not survive the edit")
                if e.generate:
                    if set(got.records) != set(want):
                        raise ZoneEditError(
                            f"the $GENERATE at line {e.start} reads differently after the edit; "
                            "edit the file by hand"
                        )
                    prev = i
                    continue
                (name, ttl, rd), (gname, gttl, grd) = want[0], got.records[0]
                if grd != rd:
                    raise ZoneEditError(f"the record at line {e.start} changed in the edit")
                before = self.expected[prev][-1] if prev is not None else None
                if gname != name:
                    if e.owner_explicit or i in self.explicit_owner:
                        raise ZoneEditError(f"the owner at line {e.start} changed in the edit")
                    if not (prev in owner_run and before is not None and before[0] == name):
                        self.explicit_owner.add(i)
                        progress = True
                    owner_run.add(i)
                if gttl != ttl:
                    if i in self.explicit_ttl or _fields(self.text, e).ttl is not None:
                        raise ZoneEditError(f"the TTL at line {e.start} changed in the edit")
                    if not (prev in ttl_run and before is not None and before[1] == ttl):
                        self.explicit_ttl[i] = ttl
                        progress = True
                    ttl_run.add(i)
                prev = i
            for offset, pos in inserted.items():
                line = again.line_of(pos)
                for k, (_text, rec) in enumerate(self.insertions[offset]):
                    got = by_line.get(line + k)
                    if got is None or got.records != [rec]:
                        raise ZoneEditError(f"the added record {rec[0]} does not read back")
            if not progress:
                return new_text
        raise ZoneEditError("the edit does not settle (a bug in zoneedit)")


def _holds(
    new_text: str, origin: dns.name.Name, expected: Zone, raise_why: bool = False
) -> bool:
    """Never return wrong text: the result must load, and hold exactly the new zone."""
    try:
        got, _warnings = parse_zone(new_text, origin)
    except ZoneLoadError as e:
        if raise_why:
            raise ZoneEditError(f"the edited text does not load: {e}") from None
        return False
    return _contents(got) == _contents(expected)


def _contents(zone: Zone) -> set[tuple]:
    return {(r.name, r.rdtype, r.covers, r.ttl, rd) for r in zone.rrsets() for rd in r}


def _name_text(name: dns.name.Name, origin: dns.name.Name) -> str:
    """A name as a master file writes it where `origin` is in force (`@` for the origin)."""
    if name.is_subdomain(origin):
        return name.relativize(origin).to_text()
    return name.to_text()


def _newline(text: str) -> str:
    m = _LINE_BREAK.search(text)
    return m.group(0) if m else "\n"


def _width(s: str) -> int:
    return len(s.expandtabs(_TAB))

