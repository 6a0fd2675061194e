"""The operator's master file, indexed by record, edited by a zone change in time proportional to
the change: what `zoneedit.edit_zone_text` does, without reading the whole text again.

Rules this module keeps:
- `ZoneText.apply(diff)` makes exactly the text `edit_zone_text` makes (the same bytes, the same
  ZoneEditError, the text left as it was), and reads again only the part the change can reach.
- The original text is never copied while editing: edited and added records are small overlays.

Why: `edit_zone_text` reads the whole file to find the records a change touches, and reads the
edited file again to check it: 1.8 s for a 10k-record file, minutes for a million records. Here
the fast loader (`fastload.parse_zone_fast`) leaves, for each record statement ("entry") of the
file, where it starts, what dnspython reads from it (owner, TTL, rdata) and how it is written
(owner, TTL and class given or not; one line or more), with an index from owner to entries and
the places where `$ORIGIN` and `$TTL` change. An edit finds its records through the index and
writes its new lines in the style of the nearest record line, by `edit_zone_text`'s rules (its
helpers are reused). The check that the edited text reads as the new zone (`edit_zone_text`
reads all of it) reads windows: from each edited place, dnspython's Reader reads the edited
statements from the state it has there in the old text, until its state (last owner, TTLs) is
again the old text's: from there on the text reads as it did. The rules for owners and TTLs
that lose the line they inherited from (settle) run on those windows, round by round.

An edit's cost does not depend on the file's size (0.5 ms for one record, on 10k records as on
1.2M), with one exception: in a file without `$TTL`, where records without a TTL take the last
one written, that TTL is looked for backwards from the edited place.

Where `edit_zone_text` also verifies that the new zone passes the loader's checks (CNAME and
other data, glue...), `apply` does not: that needs the whole zone; callers apply diffs of zones
they have checked, as the update path does with `zonefile.check_changes`.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.ttl
import dns.zonefile

from gitdns.diff import Record, ZoneDiff
from gitdns.zoneedit import (
    _BLANKS,
    _LINE_BREAK,
    ZoneEditError,
    _Fields,
    _fields,
    _is_ttl,
    _name_text,
    _scan,
    _width,
)
from gitdns.zonefile import ReaderSink

NameKey = tuple[bytes, ...]  # a name's lower-cased labels: a cheap dict key (Names hash slowly)
RRsetKey = tuple[NameKey, int, int]  # owner, type, covered type

# Flags of an entry (a record statement: one line, several in parentheses, or a $GENERATE).
F_OWNER = 1  # the owner is written (not blanks: the previous statement's owner)
F_TTL = 2  # a TTL is written
F_CLASS = 4  # a class is written
F_ONELINE = 8  # the statement is one line
F_GEN = 16  # a $GENERATE
F_DEAD = 32  # deleted by an earlier edit
F_KNOWN = 64  # F_TTL, F_CLASS and F_ONELINE are set (else worked out from the text on demand)

_SOA = dns.rdatatype.SOA
_END = -1  # anchor of the records added at the end of the file
_SOA_FIELDS = ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum")
assert array("I").itemsize >= 4  # TTLs are 32-bit


def written(text: str, flags: int) -> int:
    """`flags` (F_OWNER, F_GEN) of an entry whose text is `text`, with how it is written:
    F_ONELINE, F_TTL, F_CLASS (as zoneedit._fields reads them), and F_KNOWN."""
    if not _LINE_BREAK.search(text.rstrip("\r\n")):
        flags |= F_ONELINE
    if flags & F_GEN:
        toks, _end = _scan(text, 0)
        if len(toks) > 3 and _is_ttl(toks[3].value):
            flags |= F_TTL  # `$GENERATE range lhs ttl ...` sets the Reader's last TTL
    else:
        fields = _fields(text, _Where(bool(flags & F_OWNER)))
        if fields.ttl is not None:
            flags |= F_TTL
        if fields.rdclass is not None:
            flags |= F_CLASS
    return flags | F_KNOWN


# flags byte -> 1 for a one-line record (not $GENERATE, not deleted), and one with a class
_LAYOUT = bytes(int(f & F_ONELINE != 0 and not f & (F_GEN | F_DEAD)) for f in range(256))
_LAYOUT_CLASS = bytes(int(_LAYOUT[f] == 1 and f & F_CLASS != 0) for f in range(256))


def layout_counts(flags: bytearray) -> list[int]:
    """[one-line records, of them with a class] among entries whose flags are known."""
    return [flags.translate(_LAYOUT).count(1), flags.translate(_LAYOUT_CLASS).count(1)]


def name_key(name: dns.name.Name) -> NameKey:
    """The index key of a name (equal for names dnspython finds equal)."""
    labels = name.labels
    lower = tuple(label.lower() for label in labels)
    return labels if lower == labels else lower


@dataclass(frozen=True)
class _State:
    """What dnspython's Reader carries from one statement to the next."""

    origin: dns.name.Name
    last_name: dns.name.Name
    last_ttl: int
    last_ttl_known: bool
    default_ttl: int
    default_known: bool
    from_soa: bool
    idna_codec: dns.name.IDNACodec = dns.name.IDNA_DEFAULT  # the tokenizer's ($UNICODE)

    def canonical(self) -> tuple:
        """The part of the state that decides how later statements read (the origin and the
        defaults follow from the text itself, which is the same after an edited place)."""
        if self.default_known and not self.from_soa:
            ttl: tuple = ("default", self.default_ttl)  # last_ttl never matters again
        elif self.last_ttl_known:
            ttl = ("last", self.last_ttl)
        else:
            ttl = ("none", self.default_known, self.default_ttl, self.from_soa)
        return (name_key(self.last_name), ttl)


class _Where:
    """What zoneedit._fields needs of an entry, for an entry's own text."""

    __slots__ = ("offset", "owner_explicit")

    def __init__(self, owner_explicit: bool):
        self.offset = 0
        self.owner_explicit = owner_explicit


class _Sink(ReaderSink):
    """The transaction dnspython's Reader writes to: the records of what it just read."""

    def __init__(self, origin: dns.name.Name):
        super().__init__(origin)
        self.records: list[Record] = []

    def add(self, name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> None:
        self.records.append((name, ttl, rdata))


class _ReadFailed(Exception):
    """A piece of the edited text does not read."""


class _Window:
    """dnspython's Reader (as zoneedit runs it) over consecutive pieces of a text."""

    def __init__(self, origin: dns.name.Name, state: _State):
        self.sink = _Sink(origin)
        tok = dns.tokenizer.Tokenizer("", "<zone>")
        self.reader = dns.zonefile.Reader(
            tok, dns.rdataclass.IN, self.sink, allow_include=False)  # type: ignore[arg-type]
        self.reader.zone_origin = dns.name.root  # every name is read, as zoneedit reads them
        self.set_state(state)

    def set_state(self, state: _State) -> None:
        self.idna_codec = state.idna_codec
        r = self.reader
        r.current_origin, r.last_name = state.origin, state.last_name
        r.last_ttl, r.last_ttl_known = state.last_ttl, state.last_ttl_known
        r.default_ttl, r.default_ttl_known = state.default_ttl, state.default_known
        r.default_ttl_from_soa = state.from_soa

    def state(self) -> _State:
        r = self.reader
        assert r.current_origin is not None and r.last_name is not None
        return _State(r.current_origin, r.last_name, r.last_ttl, r.last_ttl_known,
                      r.default_ttl, r.default_ttl_known, r.default_ttl_from_soa,
                      self.idna_codec)

    def read(self, text: str, line: int = 1) -> list[Record]:
        """The records of `text` (read from line `line`); _ReadFailed with dnspython's words."""
        self.sink.records = []
        tok = dns.tokenizer.Tokenizer(text, "<zone>", self.idna_codec)
        tok.line_number = line
        self.reader.tok = tok
        try:
            self.reader.read()
        except (dns.exception.DNSException, ValueError, UnicodeError) as e:
            raise _ReadFailed(str(e)) from None
        self.idna_codec = tok.idna_codec
        return self.sink.records


Piece = tuple[str, int]  # ("head", 0), ("entry", e), ("pre", e), ("gap", i)


class ZoneText:
    """A master file's text with its record statements indexed; `apply` edits it by a ZoneDiff.

    Built by `fastload.parse_zone_fast` while it reads the file. Entries are numbered: those of
    the file as read first, in file order; then those `apply` adds, each placed after an entry
    of the file (`_after`) or at the end (`_eof`), in order.
    """

    def __init__(
        self, text: str, origin: dns.name.Name, soa: dns.rdata.Rdata, starts: array,
        ttls: array, flags: bytearray, owners: list, rdatas: list,
        generated: dict[int, list[Record]], by_owner: dict[NameKey, int | list[int]],
        origin_events: list[tuple[int, dns.name.Name]],
        ttl_events: list[tuple[int, tuple[int, bool, bool]]], ttl_marks: list[tuple[int, int]],
        soa_event: int | None, idna_events: list[tuple[int, dns.name.IDNACodec]],
    ):
        self._base = text
        self._origin = origin
        self._zkey = name_key(origin)
        self._soa = soa
        self._n0 = len(flags)
        self._start = starts  # where each entry of the file starts in the text as read
        self._ttl = array("I", ttls)  # per entry, the TTL dnspython reads
        self._flags = flags
        self._owner = owners  # per entry, the owner read (a $GENERATE: its last one)
        self._rd = rdatas  # per entry, the rdata read (a $GENERATE: None, see _gen)
        self._gen = generated  # $GENERATE entry -> its records
        self._by_owner = by_owner  # NameKey -> the entries with a record of that owner
        self._layout_counts = layout_counts(flags)  # one-line records, of them with a class
        self._origin_events = origin_events  # (offset of `$ORIGIN` ..., origin from there)
        self._origin_at = [off for off, _o in origin_events]
        self._ttl_events = ttl_events  # (offset, (default TTL, known, from the SOA))
        self._ttl_at = [off for off, _s in ttl_events]
        self._ttl_marks = ttl_marks  # (offset, TTL) of record-less statements that set one
        self._soa_event = soa_event  # the ttl event of a default TTL taken from the SOA
        self._idna_events = idna_events  # (offset of `$UNICODE`, the codec names read with)
        self._idna_at = [off for off, _c in idna_events]
        self._text: dict[int, str] = {}  # entry -> its text, where not the original
        self._pre: dict[int, str] = {}  # added entry -> a blank line written before it
        self._after: dict[int, list[int]] = {}  # entry of the file -> entries added after it
        self._eof: list[int] = []  # entries added at the end of the file
        self._root: dict[int, int] = {}  # added entry -> entry of the file it follows (or _n0)
        self._dirty: set[int] = set()  # entries of the file whose place in the text changed

    @property
    def serial(self) -> int:
        """The SOA serial the text holds."""
        return self._soa.serial

    # -- the text ----------------------------------------------------------------------------------

    def text(self) -> str:
        """The whole text as it stands (joined: O(file))."""
        return self._render()[0]

    def _render(self, mark: int | None = None) -> tuple[str, int]:
        """The text, and where entry `mark` starts in it (-1 if no mark)."""
        base, start = self._base, self._start
        slots = set(self._dirty)
        if mark is not None:
            slots.add(mark if mark < self._n0 else self._root[mark])
        out: list[str] = []
        size = cur = 0
        at = -1
        for i in sorted(s for s in slots if s < self._n0):
            chunk = base[cur : start[i]]
            out.append(chunk)
            size += len(chunk)
            for e in [i, *self._after.get(i, ())]:
                pre = self._pre.get(e, "")
                out.append(pre)
                size += len(pre)
                if e == mark:
                    at = size
                t = self._etext(e)
                out.append(t)
                size += len(t)
            cur = self._end(i)
        out.append(base[cur:])
        size += len(base) - cur
        for e in self._eof:
            pre = self._pre.get(e, "")
            out.append(pre)
            size += len(pre)
            if e == mark:
                at = size
            t = self._etext(e)
            out.append(t)
            size += len(t)
        return "".join(out), at

    def _line_of(self, e: int) -> int:
        """The line entry `e` starts on (error messages only: O(file))."""
        text, at = self._render(e)
        return len(_LINE_BREAK.findall(text, 0, at)) + 1

    def _end(self, i: int) -> int:
        """Where entry `i` of the file ends in the original text (after its line break)."""
        base, s = self._base, self._start[i]
        if self._flags[i] & F_ONELINE:
            m = _LINE_BREAK.search(base, s)
            return m.end() if m else len(base)
        return _scan(base, s)[1]

    def _etext(self, e: int) -> str:
        if self._flags[e] & F_DEAD:
            return ""
        t = self._text.get(e)
        if t is not None:
            return t
        return self._base[self._start[e] : self._end(e)]

    def _gap(self, i: int) -> str:
        """Comments, blank lines and directives between entry `i` of the file and the next."""
        nxt = self._start[i + 1] if i + 1 < self._n0 else len(self._base)
        return self._base[self._end(i) : nxt]

    def _piece_text(self, piece: Piece) -> str:
        kind, x = piece
        if kind == "entry":
            return self._etext(x)
        if kind == "gap":
            return self._gap(x)
        if kind == "pre":
            return self._pre[x]
        return self._base[: self._start[0]] if self._n0 else self._base

    def _pieces(self, e: int | None = None) -> Iterator[Piece]:
        """The pieces of the text in order, from entry `e` (None: from the start)."""
        n0 = self._n0
        if e is None:
            yield ("head", 0)
            i = 0
        elif e >= n0:
            r = self._root[e]
            lst = self._list_of(e)
            for x in lst[lst.index(e) :]:
                if x != e and x in self._pre:
                    yield ("pre", x)
                yield ("entry", x)
            if r == n0:
                return
            yield ("gap", r)
            i = r + 1
        else:
            i = e
        while i < n0:
            yield ("entry", i)
            for x in self._after.get(i, ()):
                if x in self._pre:
                    yield ("pre", x)
                yield ("entry", x)
            yield ("gap", i)
            i += 1
        for x in self._eof if e is None or e < n0 or self._root[e] != n0 else ():
            if x in self._pre:
                yield ("pre", x)
            yield ("entry", x)

    def _reversed_pieces(self) -> Iterator[Piece]:
        for x in reversed(self._eof):
            yield ("entry", x)
            if x in self._pre:
                yield ("pre", x)
        for i in range(self._n0 - 1, -1, -1):
            yield ("gap", i)
            for x in reversed(self._after.get(i, ())):
                yield ("entry", x)
                if x in self._pre:
                    yield ("pre", x)
            yield ("entry", i)
        yield ("head", 0)

    def _last_piece(self) -> Piece | None:
        """The last piece with text."""
        return next((p for p in self._reversed_pieces() if self._piece_text(p)), None)

    def _newline(self) -> str:
        """The text's first line break: the one added lines end with (zoneedit._newline)."""
        for piece in self._pieces():
            m = _LINE_BREAK.search(self._piece_text(piece))
            if m:
                return m.group(0)
        return "\n"

    # -- what an entry holds and how it is written ---------------------------------------------

    def _records(self, e: int) -> list[Record]:
        if self._flags[e] & F_GEN:
            return self._gen[e]
        return [(self._owner[e], self._ttl[e], self._rd[e])]

    def _keys(self, e: int) -> set[NameKey]:
        return {name_key(n) for n, _t, _r in self._records(e)}

    def _known(self, e: int) -> int:
        """The entry's flags, with how it is written worked out if they are not yet."""
        f = self._flags[e]
        if not f & F_KNOWN:
            f = self._flags[e] = written(self._etext(e), f)
        return f

    def _fields(self, e: int, t: str | None = None) -> _Fields:
        return _fields(self._etext(e) if t is None else t, _Where(bool(self._flags[e] & F_OWNER)))

    def _is_layout(self, e: int) -> bool:
        """A one-line record (not a $GENERATE): one whose layout an added line may copy."""
        f = self._known(e)
        return bool(f & F_ONELINE) and not f & F_GEN

    def _layout(self) -> list[int]:
        """[one-line records (not $GENERATE), of them with a class]: zoneedit's write_class."""
        return self._layout_counts

    # -- order -------------------------------------------------------------------------------------

    def _list_of(self, e: int) -> list[int]:
        r = self._root[e]
        return self._eof if r == self._n0 else self._after[r]

    def _pos(self, e: int) -> tuple[int, int]:
        """Sort key of an entry in text order."""
        if e < self._n0:
            return (e, 0)
        return (self._root[e], self._list_of(e).index(e) + 1)

    def _entries(self, key: NameKey) -> list[int]:
        have = self._by_owner.get(key)
        if have is None:
            return []
        return [have] if type(have) is int else list(have)

    def _index_add(self, key: NameKey, e: int) -> None:
        have = self._by_owner.get(key)
        if have is None:
            self._by_owner[key] = e
        elif type(have) is int:
            if have != e:
                self._by_owner[key] = [have, e]
        elif e not in have:
            have.append(e)

    def _index_remove(self, key: NameKey, e: int) -> None:
        have = self._by_owner.get(key)
        if have is None:
            return
        if type(have) is int:
            if have == e:
                del self._by_owner[key]
            return
        if e in have:
            have.remove(e)
        if len(have) == 1:
            self._by_owner[key] = have[0]
        elif not have:
            del self._by_owner[key]

    def _backward(self, e: int | None) -> Iterator[int]:
        """The entries before `e` (None: before the end), nearest first, deleted ones left out."""
        flags, n0 = self._flags, self._n0
        if e is None:
            head: list[int] = list(reversed(self._eof))
            i = n0 - 1
        elif e >= n0:
            r = self._root[e]
            lst = self._list_of(e)
            head = list(reversed(lst[: lst.index(e)]))
            if r < n0:
                head.append(r)
                i = r - 1
            else:
                i = n0 - 1
        else:
            head, i = [], e - 1
        for x in head:
            if not flags[x] & F_DEAD:
                yield x
        while i >= 0:
            for x in reversed(self._after.get(i, ())):
                if not flags[x] & F_DEAD:
                    yield x
            if not flags[i] & F_DEAD:
                yield i
            i -= 1

    # -- what is in force where ----------------------------------------------------------------

    def _context(self, e: int | None) -> int:
        """An offset of the original text with the same directives before it as entry `e`."""
        if e is None:
            return len(self._base) + 1
        if e < self._n0:
            return self._start[e]
        r = self._root[e]
        return self._end(r) if r < self._n0 else len(self._base) + 1

    def _origin_in_force(self, e: int | None) -> dns.name.Name:
        k = bisect.bisect_left(self._origin_at, self._context(e))
        return self._origin_events[k - 1][1] if k else self._origin

    def _ttl_in_force(self, e: int | None) -> tuple[int, bool, bool]:
        k = bisect.bisect_left(self._ttl_at, self._context(e))
        return self._ttl_events[k - 1][1] if k else (0, False, False)

    def _dollar_ttl(self, e: int | None) -> int | None:
        """zoneedit's dollar_ttl at `e`: the `$TTL` in force (None: none, or taken from the
        SOA)."""
        ttl, known, from_soa = self._ttl_in_force(e)
        return ttl if known and not from_soa else None

    def _state_before(self, e: int | None) -> _State:
        """The Reader's state just before entry `e` (None: at the end of the text)."""
        default, known, from_soa = self._ttl_in_force(e)
        back = self._backward(e)
        prev = next(back, None)
        last_name = self._origin if prev is None else self._owner[prev]
        last_ttl, last_known = 0, False
        if not known or from_soa:  # else the last TTL written never counts
            last_ttl, last_known = self._last_ttl(e, prev, back)
        k = bisect.bisect_left(self._idna_at, self._context(e))
        codec = self._idna_events[k - 1][1] if k else dns.name.IDNA_DEFAULT
        return _State(self._origin_in_force(e), last_name, last_ttl, last_known, default, known,
                      from_soa, codec)

    def _last_ttl(self, e: int | None, prev: int | None, back: Iterator[int]) -> tuple[int, bool]:
        """The last TTL written before `e` (the Reader's last_ttl), and whether there is one."""
        marks = self._ttl_marks
        mark = None
        if marks:
            k = bisect.bisect_left(marks, (self._context(e), -1))
            mark = marks[k - 1] if k else None
        x = prev
        while x is not None:
            if self._known(x) & F_TTL:
                at = self._start[x] if x < self._n0 else self._context(x)
                if mark is not None and mark[0] >= at:
                    return mark[1], True
                return self._ttl[x], True
            x = next(back, None)
        return (mark[1], True) if mark is not None else (0, False)

    # -- the edit ----------------------------------------------------------------------------------

    def apply(self, diff: ZoneDiff) -> None:
        """Edit the text by `diff` as `zoneedit.edit_zone_text` would; where it would refuse,
        the same ZoneEditError, and the text is left as it was."""
        if self._soa != diff.old_soa[2]:
            raise ZoneEditError(
                f"the file holds serial {self._soa.serial}, the change applies to "
                f"{diff.old_serial}"
            )
        plan = _Plan(self, diff)
        plan.make()
        plan.commit()


NewPiece = tuple[str, object, str]  # ("old", entry, text), ("new", record, text), ("gap", ...)


class _Plan:
    """The edits of one diff, by zoneedit._Plan's rules, checked on the windows they reach."""

    def __init__(self, zt: ZoneText, diff: ZoneDiff):
        self.zt = zt
        self.diff = diff
        self.deleted: set[int] = set()
        self.explicit_ttl: dict[int, int] = {}
        self.explicit_owner: set[int] = set()
        self.expected: dict[int, list[Record]] = {}
        self.replacements: dict[int, list[tuple[int, int, str]]] = {}
        self.insertions: dict[int, list[tuple[str, Record]]] = {}  # anchor (or _END) -> lines
        self.write_class = False
        self.nl = "\n"
        # A text without a final line break: the anchors whose lines are the first and the
        # last at its end, and who takes the line break written before them.
        self.end_first: int | None = None
        self.end_last: int | None = None
        self.end_entry: int | None = None  # an entry whose text gets the line break...
        self.pre_of: dict[int, str] = {}  # ...or the anchor whose first line gets it before it
        self.reads: dict[int, list[Record]] = {}
        self.added_reads: list[tuple[Record, list[Record]]] = []

    def want(self, e: int) -> list[Record]:
        got = self.expected.get(e)
        return got if got is not None else self.zt._records(e)

    # - what the diff asks for -

    def make(self) -> None:
        zt, diff = self.zt, self.diff
        deleted = {(name, rd): ttl for name, ttl, rd in diff.deleted}
        added = {(name, rd): ttl for name, ttl, rd in diff.added}
        for key in deleted:
            name, rd = key
            k = name_key(name)
            where = [e for e in zt._entries(k)
                     if any(name_key(n) == k and r == rd for n, _t, r in zt._records(e))]
            if not where:
                raise ZoneEditError(
                    f"record {name} {dns.rdatatype.to_text(rd.rdtype)} {rd.to_text()} "
                    "is not in the zone text"
                )
            for e in sorted(where, key=zt._pos):
                if zt._flags[e] & F_GEN:
                    raise ZoneEditError(
                        f"record {name} {dns.rdatatype.to_text(rd.rdtype)} {rd.to_text()} comes "
                        f"from $GENERATE at line {zt._line_of(e)}; edit the file by hand"
                    )
                if key in added:  # the TTL alone changes
                    self._set_ttl(e, added[key])
                else:
                    self.deleted.add(e)
        # Every line of a touched RRset says the TTL the new zone gives it. The diff's records
        # are grouped by RRset once: a fold of a thousand updates touches a thousand RRsets.
        self.by_rrset: dict[RRsetKey, tuple[list[Record], list[Record]]] = {}
        for which, records in ((0, diff.deleted), (1, diff.added)):
            for record in records:
                rd = record[2]
                t = (name_key(record[0]), rd.rdtype, rd.covers())
                self.by_rrset.setdefault(t, ([], []))[which].append(record)
        self.touched = set(self.by_rrset)
        self.new_rrsets = {t: self._new_rrset(t) for t in self.touched}
        for t in self.touched:
            k, rdtype, covers = t
            new = self.new_rrsets[t]
            for e in zt._entries(k):
                if e in self.deleted or zt._flags[e] & F_GEN:
                    continue
                name, ttl, rd = self.want(e)[0]
                if (rd.rdtype, rd.covers()) == (rdtype, covers) and new is not None \
                        and new[0] != ttl:
                    self._set_ttl(e, new[0])
        self._edit_soa()
        self._place([(n, ttl, rd) for (n, rd), ttl in added.items() if (n, rd) not in deleted])
        self._check()

    def _set_ttl(self, e: int, ttl: int) -> None:
        name, old_ttl, rd = self.want(e)[0]
        self.expected[e] = [(name, ttl, rd)]
        if old_ttl != ttl:
            self.explicit_ttl[e] = ttl

    def _old_rrset(self, t: RRsetKey) -> tuple[int, list] | None:
        """(TTL, rdatas) of an RRset of the zone the text holds (the first TTL written wins)."""
        zt = self.zt
        return _rrset_of(t, ((zt._pos(e), zt._records(e)) for e in zt._entries(t[0])))

    def _new_rrset(self, t: RRsetKey) -> tuple[int, list] | None:
        """The RRset `diff.apply_diff` makes: deletions, then additions (the least TTL)."""
        rdtype = t[1]
        old = self._old_rrset(t)
        ttl, items = (old[0], list(old[1])) if old else (0, [])
        deleted, added = self.by_rrset.get(t, ((), ()))
        for _n, _t, rd in deleted:
            if rd in items:
                items.remove(rd)
        for _n, add_ttl, rd in added:
            if not items or add_ttl < ttl:
                ttl = add_ttl
            if dns.rdatatype.is_singleton(rdtype) and items:
                items = []
            if rd not in items:
                items.append(rd)
        return (ttl, items) if items else None

    def _edit_soa(self) -> None:
        zt = self.zt
        _name, new_ttl, new = self.diff.new_soa
        for e in sorted(zt._entries(zt._zkey), key=zt._pos):
            if zt._flags[e] & F_GEN:
                continue
            name, _ttl, old = zt._records(e)[0]
            if old.rdtype != _SOA:
                continue
            self._set_ttl(e, new_ttl)
            self.expected[e] = [(name, new_ttl, new)]
            if old == new:
                continue
            toks = zt._fields(e).rdata
            if len(toks) != 7:
                raise ZoneEditError(f"cannot find the SOA fields at line {zt._line_of(e)}")
            origin = zt._origin_in_force(e)
            for tok, attr in zip(toks, _SOA_FIELDS, strict=True):
                before, after = getattr(old, attr), getattr(new, attr)
                if before == after:
                    continue
                if isinstance(after, dns.name.Name):
                    value = _name_text(after, origin)
                else:
                    value = str(after)
                self.replacements.setdefault(e, []).append((tok.start, tok.end, value))

    def _place(self, records: list[Record]) -> None:
        """Where each added record goes, and the line that says it (zoneedit._Plan._place)."""
        if not records:
            return
        zt = self.zt
        last: dict[NameKey, int] = {}
        for name, _ttl, _rd in records:
            k = name_key(name)
            if k not in last:
                entries = zt._entries(k)
                if entries:
                    last[k] = max(entries, key=zt._pos)
        total, with_class = zt._layout()
        self.write_class = 2 * with_class >= total > 0
        self.nl = zt._newline()

        def order(rec: Record) -> tuple:
            k = name_key(rec[0])
            return (k not in last, zt._pos(last[k]) if k in last else (0, 0))

        templates: dict[int, int | None] = {}
        for rec in sorted(records, key=order):
            anchor = last.get(name_key(rec[0]), _END)
            where = None if anchor == _END else anchor
            if anchor not in templates:
                if where is not None and zt._is_layout(where):
                    templates[anchor] = where
                else:
                    templates[anchor] = next(
                        (x for x in zt._backward(where) if zt._is_layout(x)), None)
            line = self._line(rec, zt._origin_in_force(where), zt._dollar_ttl(where),
                              templates[anchor])
            self.insertions.setdefault(anchor, []).append((line, rec))

    def _line(
        self, rec: Record, eorigin: dns.name.Name, dollar_ttl: int | None, template: int | None
    ) -> str:
        """zoneedit._Plan._line, on the template entry's own text."""
        zt = self.zt
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
            t = zt._etext(template)
            if "\t" in t.split(";")[0]:
                pad = "\t"
            prev_end = 0
            present = zt._fields(template, t).columns()
            for kind, tok in present:
                # Align only where the file aligns: a gap wider than one space is layout.
                if t[prev_end : tok.start] not in ("", " "):
                    columns[kind] = _width(t[: tok.start])
                prev_end = tok.end
            kinds = ["owner", "ttl", "class", "type", "rdata"]
            for k in range(len(kinds) - 2, 0, -1):
                if kinds[k] not in dict(present) and kinds[k + 1] in columns:
                    columns[kinds[k]] = columns[kinds[k + 1]]
        out = fields[0][1]
        for kind, value in fields[1:]:
            out += pad
            col = columns.get(kind, 0)
            while _width(out) < col:
                out += pad
            out += value
        return out

    # - the edited text, piece by piece -

    def new_text(self, e: int) -> str:
        """Entry `e`'s text after the edit ("" if deleted)."""
        if e in self.deleted:
            return ""
        t = self.zt._etext(e)
        edits: list[tuple[int, int, int, str]] = []
        if e in self.explicit_owner:
            edits.append(self._owner_edit(e, t))
        if e in self.explicit_ttl:
            edit = self._ttl_edit(e, t, self.explicit_ttl[e])
            if edit is not None:
                edits.append(edit)
        for start, end, value in self.replacements.get(e, ()):
            edits.append((start, 2, end, value))
        if edits:
            edits.sort(key=lambda x: (x[0], x[1]))
            out: list[str] = []
            cur = 0
            for start, _prio, end, value in edits:
                if start < cur:
                    raise ZoneEditError("overlapping edits (a bug in zoneedit)")
                out.append(t[cur:start])
                out.append(value)
                cur = end
            out.append(t[cur:])
            t = "".join(out)
        if e == self.end_entry:
            t += self.nl
        return t

    def _owner_edit(self, e: int, t: str) -> tuple[int, int, int, str]:
        zt = self.zt
        owner = _name_text(zt._records(e)[0][0], zt._origin_in_force(e))
        blanks = _BLANKS.match(t, 0)
        assert blanks is not None
        g = blanks.group()
        if " " * len(g) == g and len(g) > len(owner):
            return (0, 2, len(owner), owner)  # keep the columns
        return (0, 2, 0, owner)

    def _ttl_edit(self, e: int, t: str, ttl: int) -> tuple[int, int, int, str] | None:
        fields = self.zt._fields(e, t)
        if fields.ttl is not None:
            if dns.ttl.from_text(fields.ttl.value) == ttl:
                return None
            return (fields.ttl.start, 2, fields.ttl.end, str(ttl))
        after = fields.rdclass or fields.rdtype
        sep = t[after.start - 1] if t[after.start - 1] in " \t" else " "
        return (after.start, 2, after.start, f"{ttl}{sep}")

    def added(self, anchor: int) -> list[NewPiece]:
        """The pieces the lines added after `anchor` make."""
        out: list[NewPiece] = []
        pre = self.pre_of.get(anchor)
        if pre:
            out.append(("gap", None, pre))
        lines = self.insertions.get(anchor, ())
        for j, (line, rec) in enumerate(lines):
            last = anchor == self.end_last and j == len(lines) - 1
            out.append(("new", rec, line if last else line + self.nl))
        return out

    def pieces(self, e: int | None) -> Iterator[NewPiece]:
        """The edited text from entry `e` on (None: from the start): ("old", entry, text),
        ("new", record, text) for added lines, ("gap", None, text); ("end", None, "") before
        the lines added at the end."""
        zt = self.zt
        for piece in zt._pieces(e):
            kind, x = piece
            if kind == "entry":
                if zt._flags[x] & F_DEAD:
                    continue
                yield ("old", x, self.new_text(x))
                if x in self.insertions:
                    yield from self.added(x)
            else:
                yield ("gap", None, zt._piece_text(piece))
        yield ("end", None, "")
        yield from self.added(_END)

    def _render(self) -> str:
        return "".join(text for _k, _x, text in self.pieces(None))

    # - reading the edited text back (zoneedit: _holds, settle) -

    def _check(self) -> None:
        self._end_of_text()
        reads = self._read_back()
        if self._holds(reads):  # the usual case: no record lost what it inherited
            self.reads = reads
            return
        for _round in range(len(self.zt._flags) + 2):
            if not self._settle(reads):
                break
            reads = self._read_back()
        else:
            raise ZoneEditError("the edit does not settle (a bug in zoneedit)")
        if not self._holds(reads):
            raise ZoneEditError("the edited text does not hold the new zone")
        self.reads = reads

    def _end_of_text(self) -> None:
        """zoneedit's render for a text without a final line break: lines added at its very
        end come after a line break, and the last of them has none."""
        zt = self.zt
        if not self.insertions:
            return
        last_piece = zt._last_piece()
        if last_piece is None or zt._piece_text(last_piece).endswith(("\n", "\r")):
            return
        anchor_at_end = None
        if last_piece[0] == "entry" and last_piece[1] in self.insertions:
            anchor_at_end = last_piece[1]
        ends = [a for a in (anchor_at_end, _END if _END in self.insertions else None)
                if a is not None]
        if not ends:
            return
        self.end_first, self.end_last = ends[0], ends[-1]
        # The line break goes just after the old text's last character: the end of a kept
        # entry's line, or a blank line of its own where that text is deleted or not an entry.
        if last_piece[0] == "entry" and last_piece[1] not in self.deleted:
            self.end_entry = last_piece[1]
        else:
            self.pre_of[self.end_first] = self.nl

    def _edit_points(self) -> list[int]:
        points = (self.deleted | self.explicit_owner | set(self.explicit_ttl)
                  | set(self.replacements) | {a for a in self.insertions if a != _END})
        if self.end_entry is not None:
            points.add(self.end_entry)
        return sorted(points, key=self.zt._pos)

    def _read_back(self) -> dict[int, list[Record]]:
        """What the edited text reads where it can differ from the old one: kept entries in the
        windows -> their records (and, in added_reads, what each added line reads)."""
        zt = self.zt
        points = self._edit_points()
        reads: dict[int, list[Record]] = {}
        self.added_reads = []
        end_read = _END not in self.insertions
        k = 0
        while k < len(points) or not end_read:
            if k < len(points):
                start: int | None = points[k]
                pieces = self.pieces(start)
            else:
                start = None
                pieces = iter([("end", None, ""), *self.added(_END)])
            window = _Window(zt._origin, zt._state_before(start))
            where = (start, 0)  # the window's start, and how much of it is read
            for kind, x, text in pieces:
                if kind == "old":
                    assert isinstance(x, int)
                    if k < len(points) and points[k] == x:
                        k += 1
                    elif window.state().canonical() == zt._state_before(x).canonical():
                        break  # from here on the edited text reads as the old one
                    if x not in self.deleted:
                        reads[x] = self._read(window, text, where)
                elif kind == "new":
                    got = self._read(window, text, where)
                    self.added_reads.append((x, got))  # type: ignore[arg-type]
                elif kind == "end":
                    end_read = True
                else:
                    self._read(window, text, where)
                where = (start, where[1] + len(text))
        return reads

    def _read(self, window: _Window, text: str, where: tuple[int | None, int]) -> list[Record]:
        before = window.state()
        try:
            return window.read(text)
        except _ReadFailed:
            pass
        # The error path: the same read, at its line in the edited text, for dnspython's words.
        full = self._render()
        at = self._offset_of_window(where[0]) + where[1]
        line = len(_LINE_BREAK.findall(full, 0, at)) + 1
        window.set_state(before)
        try:
            window.read(text, line)
        except _ReadFailed as e:
            raise ZoneEditError(f"the zone text does not parse: {e}") from None
        raise ZoneEditError("the zone text does not parse")  # pragma: no cover

    def _offset_of_window(self, start: int | None) -> int:
        """Where the edited text from entry `start` (None: the end) begins."""
        size = 0
        for kind, x, text in self.pieces(None):
            if (kind == "old" and x == start) or (start is None and kind == "end"):
                return size
            size += len(text)
        return size

    def _holds(self, reads: dict[int, list[Record]]) -> bool:
        """zoneedit._holds on the RRsets the edit can change: does the edited text read as the
        new zone?"""
        zt = self.zt
        if any(got != [rec] for rec, got in self.added_reads):
            return False
        soa_key = (zt._zkey, _SOA, 0)
        affected = set(self.touched) | {soa_key}
        for e, got in reads.items():
            old = zt._records(e)
            if got != old:
                affected |= {(name_key(n), rd.rdtype, rd.covers()) for n, _t, rd in old + got}
        read_by_key: dict[NameKey, set[int]] = {}
        for e, got in reads.items():
            for n, _t, _r in got:
                read_by_key.setdefault(name_key(n), set()).add(e)
        inserted_by_key: dict[NameKey, list[tuple[tuple, list[Record]]]] = {}
        for anchor, lines in self.insertions.items():
            base = (zt._n0, 1 << 62) if anchor == _END else zt._pos(anchor)
            for j, (_line, rec) in enumerate(lines):
                inserted_by_key.setdefault(name_key(rec[0]), []).append((base + (j + 1,), [rec]))
        for t in affected:
            if t == soa_key:
                _n, soa_ttl, soa = self.diff.new_soa
                want: tuple[int, list] | None = (soa_ttl, [soa])
            elif t in self.new_rrsets:
                want = self.new_rrsets[t]
            else:
                want = self._old_rrset(t)
            if not _same_rrset(self._edited_rrset(t, reads, read_by_key, inserted_by_key),
                               want):
                return False
        return True

    def _edited_rrset(self, t: RRsetKey, reads: dict[int, list[Record]],
                      read_by_key: dict[NameKey, set[int]],
                      inserted_by_key: dict[NameKey, list[tuple[tuple, list[Record]]]],
                      ) -> tuple[int, list] | None:
        """(TTL, rdatas) of an RRset as the edited text holds it (`read_by_key` and
        `inserted_by_key`: the entries read back and the lines inserted, by owner key)."""
        zt = self.zt
        k = t[0]
        held: list[tuple[tuple, list[Record]]] = []
        entries = {e for e in zt._entries(k) if e not in self.deleted}
        entries |= read_by_key.get(k, set())
        for e in entries:
            held.append((zt._pos(e) + (0,), reads[e] if e in reads else zt._records(e)))
        held.extend(inserted_by_key.get(k, ()))
        return _rrset_of(t, held)

    def _settle(self, reads: dict[int, list[Record]]) -> bool:
        """A round of zoneedit._Plan.settle on the windows read: write out the owners and TTLs
        inheritance got wrong; True if it wrote something."""
        zt = self.zt
        progress = False
        owner_run: set[int] = set()
        ttl_run: set[int] = set()
        for e in sorted(reads, key=zt._pos):
            # Outside the windows the text reads as before: the kept entry before a window's
            # first is in no run.
            prev = next((x for x in zt._backward(e) if x not in self.deleted), None)
            want, got = self.want(e), reads[e]
            if not got or len(got) != len(want):
                raise ZoneEditError(f"the record at line {zt._line_of(e)} did not survive the edit")
            if zt._flags[e] & F_GEN:
                if set(got) != set(want):
                    raise ZoneEditError(
                        f"the $GENERATE at line {zt._line_of(e)} reads differently after the "
                        "edit; edit the file by hand"
                    )
                continue
            (name, ttl, rd), (gname, gttl, grd) = want[0], got[0]
            if grd != rd:
                raise ZoneEditError(f"the record at line {zt._line_of(e)} changed in the edit")
            before = self.want(prev)[-1] if prev is not None else None
            if gname != name:
                if zt._flags[e] & F_OWNER or e in self.explicit_owner:
                    raise ZoneEditError(f"the owner at line {zt._line_of(e)} changed in the edit")
                if not (prev in owner_run and before is not None and before[0] == name):
                    self.explicit_owner.add(e)
                    progress = True
                owner_run.add(e)
            if gttl != ttl:
                if e in self.explicit_ttl or zt._known(e) & F_TTL:
                    raise ZoneEditError(f"the TTL at line {zt._line_of(e)} changed in the edit")
                if not (prev in ttl_run and before is not None and before[1] == ttl):
                    self.explicit_ttl[e] = ttl
                    progress = True
                ttl_run.add(e)
        for rec, got in self.added_reads:
            if got != [rec]:
                raise ZoneEditError(f"the added record {rec[0]} does not read back")
        return progress

    # - making it so -

    def commit(self) -> None:
        zt = self.zt
        layout = zt._layout()
        for e in self.deleted:
            f = zt._known(e)
            if f & F_ONELINE and not f & F_GEN:
                layout[0] -= 1
                layout[1] -= bool(f & F_CLASS)
            for k in zt._keys(e):
                zt._index_remove(k, e)
            zt._flags[e] = f | F_DEAD
            zt._text.pop(e, None)
            if e < zt._n0:
                zt._dirty.add(e)
        changed = (self.explicit_owner | set(self.explicit_ttl) | set(self.replacements)
                   | ({self.end_entry} if self.end_entry is not None else set())) - self.deleted
        texts = {e: self.new_text(e) for e in changed}
        for e, t in texts.items():
            f = zt._known(e)
            zt._text[e] = t
            if e < zt._n0:
                zt._dirty.add(e)
            if t[:1] not in (" ", "\t"):
                f |= F_OWNER
            if e in self.explicit_ttl:
                f |= F_TTL
            zt._flags[e] = f
        for e, got in self.reads.items():
            if e in self.deleted:
                continue
            old_keys = zt._keys(e)
            if zt._flags[e] & F_GEN:
                zt._gen[e] = got
                zt._owner[e], zt._ttl[e] = got[-1][0], got[0][1]
            else:
                zt._owner[e], zt._ttl[e], zt._rd[e] = got[0]
            new_keys = zt._keys(e)
            for k in old_keys - new_keys:
                zt._index_remove(k, e)
            for k in new_keys - old_keys:
                zt._index_add(k, e)
        for anchor, lines in self.insertions.items():
            self._commit_lines(anchor, lines, layout)
        new_soa = self.diff.new_soa[2]
        if zt._soa_event is not None and zt._soa.minimum != new_soa.minimum:
            off, (_default, known, from_soa) = zt._ttl_events[zt._soa_event]
            zt._ttl_events[zt._soa_event] = (off, (new_soa.minimum, known, from_soa))
        zt._soa = new_soa

    def _commit_lines(
        self, anchor: int, lines: list[tuple[str, Record]], layout: list[int]
    ) -> None:
        zt = self.zt
        if anchor == _END:
            lst, root, at = zt._eof, zt._n0, len(zt._eof)
        elif anchor < zt._n0:
            lst, root, at = zt._after.setdefault(anchor, []), anchor, 0
            zt._dirty.add(anchor)
        else:
            lst, root = zt._list_of(anchor), zt._root[anchor]
            at = lst.index(anchor) + 1
        texts = [text for kind, _rec, text in self.added(anchor) if kind == "new"]
        for j, ((line, rec), text) in enumerate(zip(lines, texts, strict=True)):
            e = len(zt._flags)
            fields = _fields(line, _Where(True))
            f = F_KNOWN | F_ONELINE | F_OWNER
            if fields.ttl is not None:
                f |= F_TTL
            if fields.rdclass is not None:
                f |= F_CLASS
            name, ttl, rd = rec
            zt._flags.append(f)
            zt._ttl.append(ttl)
            zt._owner.append(name)
            zt._rd.append(rd)
            zt._text[e] = text
            zt._root[e] = root
            lst.insert(at + j, e)
            if j == 0 and anchor in self.pre_of:
                zt._pre[e] = self.pre_of[anchor]
            zt._index_add(name_key(name), e)
            layout[0] += 1
            layout[1] += bool(f & F_CLASS)


def _rrset_of(t: RRsetKey, held) -> tuple[int, list] | None:
    """(TTL of the first record, rdatas) of RRset `t` among (position, records) pairs."""
    k, rdtype, covers = t
    ttl = None
    items: list = []
    for _pos, records in sorted(held, key=lambda x: x[0]):
        for n, rttl, rd in records:
            if (rd.rdtype, rd.covers()) == (rdtype, covers) and name_key(n) == k:
                if ttl is None:
                    ttl = rttl
                if rd not in items:
                    items.append(rd)
    return None if ttl is None else (ttl, items)


def _same_rrset(a: tuple[int, list] | None, b: tuple[int, list] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a[0] == b[0] and len(a[1]) == len(b[1]) and all(rd in b[1] for rd in a[1])
