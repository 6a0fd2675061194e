"""Big, regular master files straight to a CompactZone: the loader of very large zones.

Why hand-written: generated zones of a million records (DHCP, hosting, reverse zones) are
millions of one-line records of a few types. dnspython reads about 12k records a second and
keeps about 950 bytes of objects per record; the per-statement fast loader (`fastload`) still
makes dnspython objects. Here each line is split once and its record written as wire bytes
(`compactzone` format), and no per-record object outlives the line: the 1.2M-record benchmark
zone loads in about the time BIND takes, in a third of its memory.

Rules this module keeps:
- `load_compact` returns exactly the zone `zonefile.parse_zone` would make (the same records,
  owners and case, RRset order and TTLs) with no warnings, or None: then the caller loads the
  file with the general loader, which also gives the exact errors and warnings. None is
  returned for anything this scanner is not sure of: other types than A, AAAA, NS, CNAME, PTR,
  MX, SRV, TXT (plain strings) and SOA; directives other than $ORIGIN and $TTL; backslashes,
  quotes outside TXT, parentheses holding quotes; names with other characters than letters,
  digits, `-`, `_` and `*`; non-ASCII text; a record without a TTL before `$TTL`; owners outside
  the zone; and everything `zonefile.check_records` would warn or complain about (TTLs that
  differ within an RRset, a record given twice, CNAME beside other data, SOA below the apex, a
  missing apex SOA or NS, data below a delegation, NS/MX/SRV targets without addresses). A new
  rule in `check_records` must be mirrored in `_check`.
"""

from __future__ import annotations

import gc
import re
import socket
import struct
from collections.abc import Iterator

import dns.name
import dns.rdatatype
import dns.ttl

from gitdns.compactzone import CompactZone, iter_records, records_start

A, AAAA, NS, CNAME, PTR, MX, SRV, TXT, SOA = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.CNAME,
    dns.rdatatype.PTR, dns.rdatatype.MX, dns.rdatatype.SRV, dns.rdatatype.TXT, dns.rdatatype.SOA,
)
_TYPES = {"A": A, "AAAA": AAAA, "NS": NS, "CNAME": CNAME, "PTR": PTR, "MX": MX, "SRV": SRV,
          "TXT": TXT, "SOA": SOA}
_TYPES.update({k.lower(): v for k, v in list(_TYPES.items())})
_NAME = re.compile(r"(?:[A-Za-z0-9_*-]{1,63}\.)*[A-Za-z0-9_*-]{1,63}\.?")
_ODD = re.compile(r"[\\\x00-\x08\x0b-\x1f\x7f]")  # backslashes and control characters but tab, LF
_TTL = re.compile(r"[0-9]+|[0-9]+[smhdwSMHDW](?:[0-9]+[smhdwSMHDW])*")
_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"  # of a lowercase owner of one label
_LENGTH = tuple(bytes((n,)) for n in range(64))
_IN = frozenset({"IN", "in", "In", "iN"})
_QUOTED = re.compile(r'\s*"([^"]*)"')
_HEAD = struct.Struct("!HHIH")
_MAX_TTL = 2**31 - 1
_CHUNK = 1 << 20


class _NotSure(Exception):
    """Something this scanner leaves to the general loader."""


def load_compact(data: bytes | str, origin: dns.name.Name,
                 filename: str = "<zone>") -> tuple[CompactZone, list[str]] | None:
    """The zone of a regular master file, or None (see the module docstring)."""
    if isinstance(data, bytes):
        if not data.isascii():
            return None
        text = data.decode("ascii")
    else:
        if not data.isascii():
            return None
        text = data
    if _ODD.search(text):
        return None
    collecting = gc.isenabled()
    gc.disable()  # millions of short-lived objects and no cycles
    try:
        return _Scanner(origin).scan(text)
    except _NotSure:
        return None
    finally:
        if collecting:
            gc.enable()


def _chunks(text: str) -> Iterator[str]:
    """The text in whole lines, about a megabyte at a time (the list of all lines at once would
    double the memory a big file needs while it loads)."""
    start, n = 0, len(text)
    while start < n:
        end = text.find("\n", min(start + _CHUNK, n))
        if end < 0:
            yield text[start:]
            return
        yield text[start:end]
        start = end + 1


class _Scanner:
    def __init__(self, origin: dns.name.Name):
        self.origin = origin
        self.zone_wire = origin.to_wire()
        self.zone_lower = self.zone_wire.lower()
        self.zone_labels = origin.labels
        self.cur_wire = self.zone_wire  # the current $ORIGIN, as written
        self.cur_is_zone = True
        self.default_ttl: int | None = None
        self.table: dict[bytes, bytes] = {}
        self.record_count = 0
        self.cuts: set[bytes] = set()
        self.deep: list[bytes] = []  # keys of more than one label
        self.targets: list[tuple[bytes, int]] = []  # (target key, NS/MX/SRV) inside the zone
        self.target_counts: dict[bytes, int] = {}  # target wire -> NS, MX, SRV records
        self.names: dict[str, bytes] = {}  # name token -> wire, under the current origin
        self.ttls: dict[str, int] = {}

    # -- names ---------------------------------------------------------------------------------

    def name_wire(self, tok: str) -> bytes:
        wire = self.names.get(tok)
        if wire is not None:
            return wire
        if tok == "@":
            wire = self.cur_wire
        elif tok == ".":
            wire = b"\x00"
        else:
            if not _NAME.fullmatch(tok):
                raise _NotSure
            absolute = tok.endswith(".")
            labels = (tok[:-1] if absolute else tok).split(".")
            wire = b"".join(bytes((len(label),)) + label.encode() for label in labels)
            wire += b"\x00" if absolute else self.cur_wire
            if len(wire) > 255:
                raise _NotSure
        if len(self.names) > 100_000:
            self.names.clear()
        self.names[tok] = wire
        return wire

    def key_of(self, wire: bytes) -> tuple[bytes, bytes] | None:
        """(key, blob prefix) of an owner's wire form, or None when outside the zone."""
        lower = wire.lower()
        zl = self.zone_lower
        if not lower.endswith(zl):
            return None
        cut = len(wire) - len(zl)
        rel = lower[:cut]
        # A label boundary: walking the labels from the start must land on `cut`.
        i = 0
        while i < cut:
            i += 1 + rel[i]
        if i != cut:
            return None
        if wire[:cut] == rel and wire[cut:] == self.zone_wire:
            return rel, b"\x00"
        return rel, b"\x01" + bytes((len(wire),)) + wire

    # -- the scan ------------------------------------------------------------------------------

    def scan(self, text: str) -> tuple[CompactZone, list[str]]:
        """The zone of a whole file, checked."""
        self.scan_lines(text)
        return self._finish(), []

    def scan_lines(self, text: str) -> None:
        """Every line into `table` (key -> blob, each owner's records checked and in dnspython's
        order), `targets`, `cuts` and `record_count`, without the zone-level checks of
        `_finish`: `bulkdelta` parses a few lines of a file this way. One loop that keeps the
        common case short (one owner's records are gathered in a run and joined into its blob
        when the owner changes)."""
        types = _TYPES
        ttls = self.ttls
        table = self.table
        deep = self.deep
        setdefault = table.setdefault
        owner_tok: str | None = None
        key = b""
        prefix = b""
        run_key: bytes | None = None
        run: list[bytes] = []
        run_types: list[int] = []
        irregular = False  # the run needs _flush's checks (an RRset of several records...)
        pending: list[str] | None = None  # tokens of a statement in parentheses
        pending_blank = False
        a_heads: dict[int, bytes] = {}
        aaaa_heads: dict[int, bytes] = {}
        inet_pton = socket.inet_pton
        af4, af6 = socket.AF_INET, socket.AF_INET6
        cur_is_zone, default_ttl = self.cur_is_zone, self.default_ttl  # as directives set them
        count = 0
        for chunk in _chunks(text):
            # Most chunks of a generated zone have no comments, quotes or parentheses: then no
            # line of them is searched for any.
            comments = ";" in chunk
            quotes = '"' in chunk
            parens = "(" in chunk or ")" in chunk
            for line in chunk.split("\n"):
                strings = None
                if pending is not None:
                    toks = self._continued(pending, line)
                    if toks is None:
                        continue
                    blank = pending_blank
                    pending = None
                elif not line or line[0] == ";":
                    continue
                elif (quotes and '"' in line) or (parens and ("(" in line or ")" in line)):
                    blank = line[0] in " \t"
                    if '"' in line:
                        if "(" in line or ")" in line:
                            raise _NotSure  # quotes and parentheses: dnspython's business
                        toks, strings = self._quoted_line(line)
                    else:
                        toks, pending = self._opened(line)
                        if pending is not None:
                            pending_blank = blank
                            continue
                else:
                    if comments:
                        c = line.find(";")
                        if c >= 0:
                            line = line[:c]
                    toks = line.split()
                    if not toks:
                        continue
                    blank = line[0] in " \t"
                first = toks[0]
                # Owner
                if blank:
                    if owner_tok is None:
                        raise _NotSure
                    i = 0
                else:
                    if first != owner_tok:
                        if first[0] == "$":
                            self._directive(toks)
                            owner_tok = "\n"  # read names against the new origin again
                            cur_is_zone, default_ttl = self.cur_is_zone, self.default_ttl
                            continue
                        owner_tok = first
                        if cur_is_zone and len(first) < 64 and not first.lstrip(
                                _LABEL_CHARS):
                            key = _LENGTH[len(first)] + first.encode()
                            prefix = b"\x00"
                        else:
                            got = self.key_of(self.name_wire(first))
                            if got is None:
                                raise _NotSure
                            key, prefix = got
                    i = 1
                # TTL and class, in either order
                ttl = None
                n = len(toks)
                rdtype = types.get(toks[i]) if i < n else None
                if rdtype is not None:
                    ttl = default_ttl
                    if ttl is None:
                        raise _NotSure
                elif i < n:
                    tok = toks[i]
                    if tok[0].isdigit():
                        ttl = ttls.get(tok)
                        if ttl is None:
                            ttl = self._ttl(tok)
                        i += 1
                        if i < n and toks[i] in _IN:
                            i += 1
                    elif tok in _IN:
                        i += 1
                        if i < n and toks[i][0].isdigit():
                            ttl = ttls.get(toks[i])
                            if ttl is None:
                                ttl = self._ttl(toks[i])
                            i += 1
                if rdtype is None:
                    if i >= n:
                        raise _NotSure
                    rdtype = types.get(toks[i])
                    if rdtype is None:
                        raise _NotSure
                    if ttl is None:
                        ttl = default_ttl
                        if ttl is None:
                            raise _NotSure
                # Rdata
                if rdtype == A:
                    if n != i + 2:
                        raise _NotSure
                    try:  # dotted quad, decimal, no leading zeros: dnspython's rule too
                        packed = inet_pton(af4, toks[i + 1])
                    except OSError:
                        raise _NotSure from None
                    head = a_heads.get(ttl)
                    if head is None:
                        head = a_heads[ttl] = _HEAD.pack(A, 1, ttl, 4)
                    record = head + packed
                elif rdtype == AAAA:
                    if n != i + 2:
                        raise _NotSure
                    try:
                        packed = inet_pton(af6, toks[i + 1])
                    except OSError:
                        raise _NotSure from None
                    head = aaaa_heads.get(ttl)
                    if head is None:
                        head = aaaa_heads[ttl] = _HEAD.pack(AAAA, 1, ttl, 16)
                    record = head + packed
                else:
                    if strings is not None and rdtype != TXT:
                        raise _NotSure
                    rdata = self._rdata(rdtype, toks[i + 1 :], strings, key)
                    record = _HEAD.pack(rdtype, 1, ttl, len(rdata)) + rdata
                # Into the run of records of this owner
                if key != run_key:
                    if run_key is not None:
                        if irregular:
                            self._flush(run_key, run, run_types)
                        else:
                            blob = b"".join(run)
                            if setdefault(run_key, blob) is not blob:
                                self._flush(run_key, run, run_types)  # the owner came before
                            elif run_key and len(run_key) > 1 + run_key[0]:
                                deep.append(run_key)  # (the apex's key is empty)
                    run_key = key
                    run = [prefix, record]
                    run_types = [rdtype]
                    irregular = rdtype == SOA
                else:
                    if rdtype in run_types or rdtype == CNAME or CNAME in run_types:
                        irregular = True
                    run.append(record)
                    run_types.append(rdtype)
                count += 1
        if pending is not None:
            raise _NotSure
        if run_key is not None:
            self._flush(run_key, run, run_types)
        self.record_count = count

    def _opened(self, line: str) -> tuple[list[str], list[str] | None]:
        """A line with parentheses: its tokens, or (None, the tokens so far) when the statement
        goes on over the next lines."""
        c = line.find(";")
        if c >= 0:
            line = line[:c]
        open_ = line.find("(")
        if open_ < 0 or line.count("(") != 1:
            raise _NotSure
        close = line.find(")")
        if close < 0:
            return [], (line[:open_] + " " + line[open_ + 1 :]).split()
        if close < open_ or line.count(")") != 1 or line[close + 1 :].strip():
            raise _NotSure
        return (line[:open_] + " " + line[open_ + 1 : close]).split(), None

    def _continued(self, pending: list[str], line: str) -> list[str] | None:
        """The next line of a statement in parentheses: all its tokens once it closes."""
        if '"' in line:
            raise _NotSure
        c = line.find(";")
        if c >= 0:
            line = line[:c]
        if "(" in line:
            raise _NotSure
        close = line.find(")")
        if close < 0:
            pending.extend(line.split())
            return None
        if line[close + 1 :].strip():
            raise _NotSure
        pending.extend(line[:close].split())
        if not pending:
            raise _NotSure
        return pending

    def _quoted_line(self, line: str) -> tuple[list[str], list[bytes]]:
        """A TXT line with quoted strings: (tokens before the strings, the strings)."""
        q = line.find('"')
        head = line[:q]
        if ";" in head:
            raise _NotSure
        toks = head.split()
        if not toks or toks[-1].upper() != "TXT":
            raise _NotSure
        strings = []
        pos = q
        while True:
            m = _QUOTED.match(line, pos)
            if m is None:
                break
            value = m.group(1).encode()
            if len(value) > 255:
                raise _NotSure
            strings.append(value)
            pos = m.end()
        tail = line[pos:].strip()
        if tail and tail[0] != ";":
            raise _NotSure
        if not strings:
            raise _NotSure
        return toks, strings  # type: ignore[return-value]

    def _ttl(self, tok: str) -> int:
        if not _TTL.fullmatch(tok):
            raise _NotSure
        value = dns.ttl.from_text(tok)
        if value > _MAX_TTL:
            raise _NotSure
        self.ttls[tok] = value
        return value

    def _directive(self, toks: list[str]) -> None:
        word = toks[0].upper()
        if word == "$TTL" and len(toks) == 2:
            self.default_ttl = self._ttl(toks[1])
        elif word == "$ORIGIN" and len(toks) == 2 and toks[1].endswith("."):
            self.cur_wire = self.name_wire(toks[1])
            self.cur_is_zone = self.cur_wire == self.zone_wire
            self.names = {}
        else:
            raise _NotSure

    def _target(self, tok: str, rdtype: int) -> bytes:
        wire = self.name_wire(tok)
        got = self.key_of(wire)
        if got is not None:
            self.targets.append((got[0], rdtype))
        self.target_counts[wire] = self.target_counts.get(wire, 0) + 1
        return wire

    def _rdata(self, rdtype: int, rest: list[str], strings: list[bytes] | None,
               key: bytes) -> bytes:
        n = len(rest)
        if rdtype in (NS, CNAME, PTR):
            if n != 1:
                raise _NotSure
            if rdtype == NS:
                if key:
                    self.cuts.add(key)
                return self._target(rest[0], NS)
            return self.name_wire(rest[0])
        if rdtype == MX:
            if n != 2:
                raise _NotSure
            return _u16(rest[0]) + self._target(rest[1], MX)
        if rdtype == SRV:
            if n != 4:
                raise _NotSure
            return _u16(rest[0]) + _u16(rest[1]) + _u16(rest[2]) + self._target(rest[3], SRV)
        if rdtype == TXT:
            if strings is None:
                if not rest:
                    raise _NotSure
                strings = [tok.encode() for tok in rest]
                if any(len(s) > 255 for s in strings):
                    raise _NotSure
            elif rest:
                raise _NotSure
            return b"".join(bytes((len(s),)) + s for s in strings)
        if rdtype == SOA:
            if n != 7 or key:
                raise _NotSure
            mname = self.name_wire(rest[0])
            rname = self.name_wire(rest[1])
            if not rest[2].isdigit() or int(rest[2]) > 0xFFFFFFFF:
                raise _NotSure
            timers = [self.ttls.get(t) or self._ttl(t) if t != "0" else 0 for t in rest[3:]]
            if self.default_ttl is None:
                raise _NotSure  # the SOA would set the default TTL: dnspython's rules
            return mname + rname + struct.pack("!IIIII", int(rest[2]), *timers)
        raise _NotSure

    def _flush(self, key: bytes, run: list[bytes], types: list[int]) -> None:
        """The records of one owner's run into its blob, checked, RRsets kept together: the
        way for runs with an RRset of several records, a CNAME, an SOA, or an owner seen
        before."""
        records = run[1:]
        old = self.table.get(key)
        if old is not None:
            old_records = [old[start - 10 : end] for _t, _l, start, end in iter_records(old)]
            old_types = [t for t, _l, _s, _e in iter_records(old)]
            records = old_records + records
            types = old_types + types
        _check_rrsets(types, records)
        if not _grouped(types):
            records = _regroup(records, types)
        if old is not None:
            self.table[key] = old[: records_start(old)] + b"".join(records)
            return
        self.table[key] = run[0] + b"".join(records)
        if key and len(key) > 1 + key[0]:
            self.deep.append(key)

    def _finish(self) -> CompactZone:
        table = self.table
        apex = table.get(b"")
        if apex is None:
            raise _NotSure
        apex_types = _types_of(apex)
        if apex_types.count(SOA) != 1 or NS not in apex_types:
            raise _NotSure
        cuts = self.cuts
        counts: dict[bytes, int] = {b"": len(table)}
        below: set[bytes] = set()
        for key in self.deep:
            k = key[1 + key[0] :]
            while k:
                counts[k] = counts.get(k, 1 if k in table else 0) + 1
                if k in cuts:
                    below.add(key)
                k = k[1 + k[0] :]
        for key in below:
            if set(_types_of(table[key])) - {A, AAAA}:
                raise _NotSure  # data below a delegation: a warning to give
        for key, rdtype in self.targets:
            blob = table.get(key)
            if rdtype != NS and (key in cuts or key in below or _under_cut(key, cuts)):
                continue
            if blob is None or not ({A, AAAA} & set(_types_of(blob))):
                raise _NotSure  # a target without an address: an error to give
        stored = {k: c for k, c in counts.items() if c != (1 if k in table else 0)}
        referrers: dict[dns.name.Name, int] = {}
        for wire, count in self.target_counts.items():
            name = dns.name.from_wire(wire, 0)[0]
            referrers[name] = referrers.get(name, 0) + count
        return CompactZone.build(self.origin, table, stored, cuts, self.record_count, False,
                                 referrers)


def _u16(tok: str) -> bytes:
    if not tok.isdigit() or int(tok) > 65535:
        raise _NotSure
    return int(tok).to_bytes(2, "big")


def _types_of(blob: bytes) -> list[int]:
    return [rdtype for rdtype, _t, _s, _e in iter_records(blob)]


def _under_cut(key: bytes, cuts: set[bytes]) -> bool:
    k = key[1 + key[0] :] if key else b""
    while k:
        if k in cuts:
            return True
        k = k[1 + k[0] :]
    return False


def _grouped(types: list[int]) -> bool:
    """Are the records of each type consecutive?"""
    seen = set()
    last = None
    for t in types:
        if t != last:
            if t in seen:
                return False
            seen.add(t)
            last = t
    return True


def _regroup(records: list[bytes], types: list[int]) -> list[bytes]:
    """Records grouped by type, types in order of first appearance (dnspython's RRset order)."""
    order: dict[int, list[bytes]] = {}
    for record, t in zip(records, types, strict=True):
        order.setdefault(t, []).append(record)
    return [r for group in order.values() for r in group]


def _check_rrsets(types: list[int], records: list[bytes]) -> None:
    """The rules of one owner's records that the general loader warns or fails on: one TTL per
    RRset, no record given twice, CNAME alone, one SOA."""
    ttls: dict[int, bytes] = {}
    seen: set[tuple[int, bytes]] = set()
    for t, record in zip(types, records, strict=True):
        if ttls.setdefault(t, record[4:8]) != record[4:8]:
            raise _NotSure
        # dnspython compares names without case: records equal but for case count as one.
        item = (t, record[10:].lower())
        if item in seen:
            raise _NotSure
        seen.add(item)
    if (CNAME in ttls and len(ttls) > 1) or types.count(CNAME) > 1 or types.count(SOA) > 1:
        raise _NotSure
