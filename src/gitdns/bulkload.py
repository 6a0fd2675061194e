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
- A file of PARALLEL_MIN_BYTES or more is scanned in pieces by every CPU the process may run on
  (forked children, see "the parallel scan" below) when it splits safely, with exactly the
  serial scan's result; anything unusual and the serial scan decides. GITDNS_LOAD_PROCESSES
  sets the number of processes (1: always the serial scan).
"""

from __future__ import annotations

import gc
import logging
import marshal
import mmap
import os
import re
import select
import signal
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import suppress
from itertools import compress
from operator import is_not
from typing import NoReturn

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
_PLAIN = bytes(c for c in range(128) if not _ODD.match(chr(c)))  # the ASCII bytes _ODD allows
_TTL = re.compile(r"[0-9]+|[0-9]+[smhdwSMHDW](?:[0-9]+[smhdwSMHDW])*")
_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"  # of a lowercase owner of one label
_NAME_CHARS = _LABEL_CHARS + "ABCDEFGHIJKLMNOPQRSTUVWXYZ*"  # of one label _NAME takes
_LENGTH = tuple(bytes((n,)) for n in range(64))
_IN = frozenset({"IN", "in", "In", "iN"})
_QUOTED = re.compile(r'\s*"([^"]*)"')
_HEAD = struct.Struct("!HHIH")
_MAX_TTL = 2**31 - 1
_CHUNK = 1 << 20

log = logging.getLogger("gitdns.zones")


class _NotSure(Exception):
    """Something this scanner leaves to the general loader."""


def load_compact(data: bytes | str, origin: dns.name.Name,
                 filename: str = "<zone>") -> tuple[CompactZone, list[str]] | None:
    """The zone of a regular master file, or None (see the module docstring)."""
    if isinstance(data, bytes):
        # One pass of translate finds what _ODD does, eight times faster than the regex.
        if not data.isascii() or data.translate(None, _PLAIN):
            return None
        text = data.decode("ascii")
    else:
        if not data.isascii() or _ODD.search(data):
            return None
        text = data
    collecting = gc.isenabled()
    gc.disable()  # millions of short-lived objects and no cycles
    try:
        processes = _processes(len(text))
        if processes > 1:
            try:
                scanner = _scan_parallel(text, origin, processes)
            except Exception:  # a fault of the parallel scan must not cost the zone
                log.exception("%s: the parallel scan failed; scanning in one process", filename)
                scanner = None
            if scanner is not None:
                return scanner._finish(), []
        return _Scanner(origin).scan(text)
    except _NotSure:
        return None
    finally:
        if collecting:
            gc.enable()


def _chunks(text: str, start: int = 0, stop: int | None = None) -> Iterator[str]:
    """text[start:stop] in whole lines, about a megabyte at a time (the list of all lines at
    once would double the memory a big file needs while it loads; a piece of a parallel scan is
    read in place, not copied out first)."""
    n = len(text) if stop is None else stop
    while start < n:
        end = text.find("\n", min(start + _CHUNK, n), n)
        if end < 0:
            yield text[start:n]
            return
        yield text[start:end]
        start = end + 1


_NOT_PLAIN = re.compile(r"\n[ \t$]")  # a directive or a blank owner, after the first line


def _plain_chunk(chunk: str) -> bool:
    """Has this chunk no directive and no line that starts with white space (a blank owner)?
    (One regex search: three substring searches take five times as long, "\n" being every
    thirtieth character.)"""
    return bool(chunk) and chunk[0] not in " \t$" and _NOT_PLAIN.search(chunk) is None


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
        if 0 < len(tok) < 64 and not tok.lstrip(_NAME_CHARS):  # one relative label: most names
            wire = _LENGTH[len(tok)] + tok.encode() + self.cur_wire
            if len(wire) > 255:
                raise _NotSure
            return wire  # (not kept: a host named once, as most targets are)
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

    def scan_lines(self, text: str, start: int = 0, stop: int | None = None) -> None:
        """Every line of text[start:stop] (whole lines) into `table` (key -> blob, each owner's
        records checked and in dnspython's order), `targets`, `cuts` and `record_count`,
        without the zone-level checks of `_finish`: `bulkdelta` parses a few lines of a file
        this way, `_scan_parallel` a piece of one. One loop that keeps the common case short
        (one owner's records are gathered in a run and joined into its blob when the owner
        changes)."""
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
        for chunk in _chunks(text, start, stop):
            # Most chunks of a generated zone have no comments, quotes or parentheses: then no
            # line of them is searched for any.
            comments = ";" in chunk
            quotes = '"' in chunk
            parens = "(" in chunk or ")" in chunk
            # A plain chunk (no comments, parentheses, directives or blank owners, under the
            # zone's origin with a default TTL) has its lines of the commonest kind, `owner A
            # address` or `owner AAAA address` with an owner of one lowercase label, read by
            # the short branch below: about 1 us a line with its share of the run's join and
            # insertion, against 1.4 us in the general one, which reads every other line. (The
            # two make the same key, prefix and record; tests/test_bulkload.py compares.)
            plain = (not comments and not parens and pending is None and cur_is_zone
                     and default_ttl is not None and _plain_chunk(chunk))
            if plain:
                a_head = _HEAD.pack(A, 1, default_ttl, 4)
                aaaa_head = _HEAD.pack(AAAA, 1, default_ttl, 16)
            for line in chunk.split("\n"):
                if plain and len(toks := line.split()) == 3 and (
                        (word := toks[1]) == "A" or word == "AAAA") and (
                        (first := toks[0]) == owner_tok
                        or (len(first) < 64 and not first.lstrip(_LABEL_CHARS))):
                    try:  # dotted quad, decimal, no leading zeros: dnspython's rule too
                        if word == "A":
                            rdtype = A
                            record = a_head + inet_pton(af4, toks[2])
                        else:
                            rdtype = AAAA
                            record = aaaa_head + inet_pton(af6, toks[2])
                    except OSError:
                        raise _NotSure from None
                    if first == owner_tok:  # the run goes on (run_key is key, prefix run[0])
                        if rdtype in run_types or CNAME in run_types:
                            irregular = True
                        run.append(record)
                        run_types.append(rdtype)
                        count += 1
                        continue
                    owner_tok = first
                    key = _LENGTH[len(first)] + first.encode()
                    prefix = b"\x00"
                else:
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
                    if prefix is not run[0] and prefix != run[0]:
                        raise _NotSure  # the owner spelt in another case: see _flush
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
        close = line.find('"', q + 1)
        if close > 0 and line.find('"', close + 1) < 0:  # one string: the common case
            value = line[q + 1 : close].encode()
            tail = line[close + 1 :].strip()
            if len(value) > 255 or (tail and tail[0] != ";"):
                raise _NotSure
            return toks, [value]
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
        if self.cur_is_zone and len(tok) < 64 and not tok.lstrip(_LABEL_CHARS):
            self.targets.append((wire[: -len(self.zone_wire)], rdtype))  # key_of's key, sooner
        elif (got := self.key_of(wire)) is not None:
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
            start = records_start(old)
            if old[:start] != run[0]:
                # One owner written in two cases: a blob keeps one spelling, the general loader
                # one per RRset. Rare enough to leave to it.
                raise _NotSure
            new_types = set(types)
            if len(new_types) == len(types) and not new_types & {CNAME, SOA}:
                old_types = _types_from(old, start)
                if CNAME not in old_types and new_types.isdisjoint(old_types):
                    # Other types than before, each once: appended as they are, what the
                    # checks and regrouping below would come to (a host's records split by an
                    # alias between them: most of the revisits of a generated zone).
                    self.table[key] = old + b"".join(records)
                    return
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
        for key, rdtype in dict.fromkeys(self.targets):  # each once: few hosts, many records
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


def _types_from(blob: bytes, i: int) -> list[int]:
    """The types of a blob's records from `i` (where they start): iter_records, inline."""
    types = []
    n = len(blob)
    while i < n:
        types.append(blob[i] << 8 | blob[i + 1])
        i += 10 + (blob[i + 8] << 8 | blob[i + 9])
    return types


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


# -- the parallel scan -----------------------------------------------------------------------
#
# Why: the line loop above is as lean as pure Python gets (a 1.2M-record file takes about two
# seconds on one CPU), and a cold start has to read the whole file before the first answer. A
# regular file splits at line starts into pieces that scan independently, so every CPU the
# process may run on scans one piece: the first piece (which holds the header) in this process,
# the others in forked children that hand their tables back as marshal dumps in shared memory.
#
# Why fork and not a process pool: a child starts in a millisecond with the text already in its
# memory (copy on write, nothing is sent to it), and nothing is left running between loads. The
# loader runs in a worker thread of a process with other threads (the asyncio loop, uvloop, the
# executor): fork copies only the calling thread, and locks other threads held stay held in the
# child. So a child does nothing but scan its piece with objects it makes itself, write one
# marshal dump (and its length to its pipe) and leave with os._exit: it never logs, imports,
# takes a lock, runs atexit handlers or a signal handler of the server (it restores the default
# actions first, so that it never writes to asyncio's wakeup descriptor).
#
# Why the result is exactly the serial scan's: a piece starts at a line with an owner of its own
# (a blank owner would continue the previous line's), no directive or parenthesis comes after the
# first piece, and quotes and comments end with their line; so every line of a piece reads as in
# the serial scan, each piece starting from the state the header left (origin, default TTL). The
# pieces' tables are joined in file order, an owner seen in an earlier piece taking the later
# piece's records through `_flush` as the serial scan takes a later run of the same owner: the
# checks of `_check_rrsets` fail on a set of records when they fail on a part of it, and
# regrouping by type gives the same order whether done at once or in parts. Anything else (a
# child that fails, dies, or takes longer than _CHILD_TIMEOUT; a piece that is not sure) and the
# serial scan decides.

#: Smaller files are scanned in this process only: a fork and the transfer of a table cost a
#: few milliseconds, a megabyte scans in about 60.
PARALLEL_MIN_BYTES = 8 << 20
#: The number of processes to scan with (1: the serial scan), instead of every CPU allowed.
PROCESSES_ENV = "GITDNS_LOAD_PROCESSES"
_MAX_PROCESSES = 64
#: Without GITDNS_LOAD_PROCESSES at most this many: the merge in this process is serial, and
#: each piece's boundary owners cost a check, so more pieces stop paying (and a big host's
#: dozens of CPUs are not all forked at every load).
_DEFAULT_MAX_PROCESSES = 8
_CHILD_TIMEOUT = 120.0  # seconds: a child slower than this is killed and the serial scan used
# A dump takes about a byte per character of its piece: room for eight, and a megabyte more.
_SHARED_PER_CHAR = 8
_SHARED_MORE = 1 << 20
#: The first piece's size relative to the others': a child also writes its table to its pipe
#: before this process can take it in, so this process scans a little more (measured: within
#: 0.95 to 1.05 the difference is below the noise).
_FIRST_WEIGHT = 1.05
#: Version 2 writes no back-references: four times faster to write a table of distinct bytes.
_MARSHAL_VERSION = 2
_LENGTH_HEAD = struct.Struct("!Q")  # a child's dump is preceded by its length

# What a child sends back: its table's keys and blobs (two lists: the parent adds them to its
# own table without building a dict of them first), deep, cuts, targets, target_counts,
# record_count.
_Part = tuple[list[bytes], list[bytes], list[bytes], list[bytes], list[tuple[bytes, int]],
              dict[bytes, int], int]


def _processes(size: int) -> int:
    """How many processes scan a text of `size` characters: every CPU this process may run on
    for a big file, 1 for a small one or where fork is missing."""
    if size < PARALLEL_MIN_BYTES or not hasattr(os, "fork"):
        return 1
    wanted = os.environ.get(PROCESSES_ENV, "").strip()
    if wanted:
        try:
            return max(1, min(int(wanted), _MAX_PROCESSES))
        except ValueError:
            pass  # not a number: as if unset
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, _DEFAULT_MAX_PROCESSES))


def _boundaries(text: str, count: int) -> list[int]:
    """Where `count` pieces start (0 first) and the text ends: the first piece _FIRST_WEIGHT of
    the others' size, each at the start of a line that begins with an owner, so that no piece
    starts inside an owner's blank-owner lines (empty and comment lines are stepped over too: a
    blank-owner line may follow them). Fewer pieces for a text of few lines."""
    n = len(text)
    whole = _FIRST_WEIGHT + count - 1
    bounds = [0]
    for i in range(1, count):
        pos = text.find("\n", max(int(n * (_FIRST_WEIGHT + i - 1) / whole), bounds[-1]))
        while 0 <= pos < n - 1 and text[pos + 1] in " \t;\n":
            pos = text.find("\n", pos + 1)
        if pos < 0 or pos >= n - 1:
            break
        bounds.append(pos + 1)
    bounds.append(n)
    return bounds


def _header_end(text: str, first_stop: int) -> int:
    """The end of the line of the last directive before `first_stop` (0 without one): the part
    of the file that sets the state every piece starts from."""
    last = text.rfind("\n$", 0, first_stop)
    if last >= 0:
        start = last + 1
    elif text.startswith("$"):
        start = 0
    else:
        return 0
    end = text.find("\n", start, first_stop)
    return first_stop if end < 0 else end + 1


def _splittable(text: str, bounds: list[int]) -> bool:
    """Do the pieces read as in the serial scan? Each starts a line with an owner of its own;
    no directive, parenthesis (statements over several lines) comes after the first piece."""
    n = len(text)
    for b in bounds[1:-1]:
        if not 0 < b < n or text[b - 1] != "\n" or text[b] in " \t":
            return False
    after = bounds[1]
    if text.find("(", after) >= 0 or text.find(")", after) >= 0:
        return False
    dollar = text.find("$", after)  # (a single character is found many times faster)
    while dollar >= 0:
        if text[dollar - 1] == "\n":
            return False
        dollar = text.find("$", dollar + 1)
    return True


class _Child:
    """A forked scanner of one piece: its pid, the read end of its pipe (which brings the
    length of its dump, then its end) and the shared memory its dump is written into (the
    child never waits for this process to read, nothing is copied through the kernel)."""

    def __init__(self, pid: int, fd: int, shared: mmap.mmap):
        self.pid = pid
        self.fd = fd
        self.shared = shared
        self.head = b""  # the dump's length, as it comes
        self.reaped = False

    def read(self) -> bool:
        """Read what the pipe holds; False at its end."""
        chunk = os.read(self.fd, _LENGTH_HEAD.size + 1)
        self.head += chunk
        return bool(chunk)

    def length(self) -> int | None:
        """The length of the dump, once it was all written."""
        if len(self.head) != _LENGTH_HEAD.size:
            return None
        return _LENGTH_HEAD.unpack(self.head)[0]

    def part(self) -> _Part | None:
        """The dump read from the shared memory, which is then let go."""
        view = memoryview(self.shared)[: self.length()]
        try:
            return marshal.loads(view)
        finally:
            view.release()
            self.shared.close()


def _scan_parallel(text: str, origin: dns.name.Name, processes: int) -> _Scanner | None:
    """The state the serial scan of `text` ends with (before `_finish`), scanned in up to
    `processes` pieces at once; None when the pieces cannot be scanned apart or anything fails
    (a piece not sure included): then the serial scan decides."""
    bounds = _boundaries(text, processes)
    if len(bounds) < 3 or not _splittable(text, bounds):
        return None
    probe = _Scanner(origin)
    try:
        probe.scan_lines(text, 0, _header_end(text, bounds[1]))
    except _NotSure:
        return None
    state = (probe.cur_wire, probe.cur_is_zone, probe.default_ttl)
    children: list[_Child] = []
    try:
        for start, stop in zip(bounds[1:-1], bounds[2:], strict=True):
            children.append(_start_child(text, origin, start, stop, state))
        scanner = _Scanner(origin)
        scanner.scan_lines(text, 0, bounds[1])  # while the children scan theirs
        if not _collect(children, time.monotonic() + _CHILD_TIMEOUT):
            return None
        for child in children:
            part = child.part()
            if part is None:
                return None  # the piece was not sure: the serial scan says why
            _merge(scanner, part)
        return scanner
    except (_NotSure, OSError, ValueError, TypeError, EOFError):
        # No fork or pipe to be had, a damaged transfer, or an owner whose records across
        # pieces break a rule (which the serial scan finds as well): the serial scan decides.
        return None
    finally:
        _end(children)


def _start_child(text: str, origin: dns.name.Name, start: int, stop: int,
                 state: tuple[bytes, bool, int | None]) -> _Child:
    """Fork a child scanning text[start:stop] from `state`; it writes the dump of its `_Part`
    (or of None when not sure) into shared memory and its length to a pipe whose read end the
    parent keeps."""
    # Room for any dump of the piece: pages of it are only taken as the child writes them.
    shared = mmap.mmap(-1, _SHARED_PER_CHAR * (stop - start) + _SHARED_MORE)
    try:
        rfd, wfd = os.pipe()
    except BaseException:
        shared.close()
        raise
    try:
        # Signals stay blocked across the fork: the child restores default actions before any
        # handler of the server could run in it.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            pid = os.fork()
            if pid == 0:
                _child_main(text, origin, start, stop, state, wfd, shared, mask)  # no return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    except BaseException:
        os.close(rfd)
        shared.close()
        raise
    finally:
        os.close(wfd)
    return _Child(pid, rfd, shared)


def _child_main(text: str, origin: dns.name.Name, start: int, stop: int,
                state: tuple[bytes, bool, int | None], wfd: int, shared: mmap.mmap,
                mask: set[signal.Signals]) -> NoReturn:
    """A forked child: scan one piece, write the result, _exit (see the section comment)."""
    status = 1
    try:
        with suppress(ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for sig in signal.valid_signals():
            with suppress(ValueError, OSError, TypeError):
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.closerange(3, wfd)  # the server's sockets, other children's pipes
        os.closerange(wfd + 1, 1 << 16)
        scanner = _Scanner(origin)
        scanner.cur_wire, scanner.cur_is_zone, scanner.default_ttl = state
        try:
            scanner.scan_lines(text, start, stop)
            # Each target once (one mail host serves thousands of MX records), ints for enums.
            targets = list(dict.fromkeys((key, int(t)) for key, t in scanner.targets))
            table = scanner.table
            part: _Part | None = (list(table), list(table.values()), scanner.deep,
                                  list(scanner.cuts), targets, scanner.target_counts,
                                  scanner.record_count)
        except _NotSure:
            part = None
        dump = marshal.dumps(part, _MARSHAL_VERSION)
        shared[: len(dump)] = dump  # (IndexError when it does not fit: the serial scan then)
        os.write(wfd, _LENGTH_HEAD.pack(len(dump)))  # 8 bytes: written at once
        status = 0
    finally:
        os._exit(status)


def _collect(children: list[_Child], deadline: float) -> bool:
    """Read every child's pipe to its end and reap it; False when one fails, dies or is still
    not done at `deadline` (the caller kills and reaps what is left)."""
    waiting = {child.fd: child for child in children}
    poller = select.poll()  # (not select: a server's descriptors may number over 1024)
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        for fd, _event in poller.poll(left * 1000):
            child = waiting[fd]
            if child.read():
                continue
            poller.unregister(fd)
            del waiting[fd]
            _pid, status = os.waitpid(child.pid, 0)  # it closed its pipe by leaving
            child.reaped = True
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or child.length() is None:
                return False
    return True


def _end(children: list[_Child]) -> None:
    """Close the pipes; kill and reap every child not reaped yet (never leave a zombie or a
    scanner running after the load)."""
    for child in children:
        with suppress(OSError):
            os.close(child.fd)
        if not child.reaped:
            with suppress(OSError):
                os.kill(child.pid, signal.SIGKILL)
            with suppress(OSError):
                os.waitpid(child.pid, 0)
            child.reaped = True
        with suppress(BufferError):
            child.shared.close()


def _merge(scanner: _Scanner, part: _Part) -> None:
    """A later piece's results into the scanner of the pieces before it, as the serial scan
    would have gathered them: new owners after the known ones in the piece's order, an owner
    seen before taking the piece's records through `_flush` (checked, regrouped)."""
    keys, blobs, deep, cuts, targets, target_counts, record_count = part
    mine = scanner.table
    before = len(mine)
    # One probe per owner, in C: new owners go in after the known ones in the piece's order, a
    # known owner keeps its place and blob (the blob it keeps is not the piece's).
    kept = list(map(mine.setdefault, keys, blobs))
    if len(mine) != before + len(keys):
        differs = list(map(is_not, kept, blobs))
        common = list(compress(keys, differs))
        for key, blob in zip(common, compress(blobs, differs), strict=True):
            records = [blob[s - 10 : e] for _t, _l, s, e in iter_records(blob)]
            types = [t for t, _l, _s, _e in iter_records(blob)]
            scanner._flush(key, [blob[: records_start(blob)], *records], types)
        known = set(common)
        deep = [key for key in deep if key not in known]
    scanner.deep.extend(deep)
    scanner.cuts.update(cuts)
    scanner.targets.extend(targets)
    counts = scanner.target_counts
    for wire, count in target_counts.items():
        counts[wire] = counts.get(wire, 0) + count
    scanner.record_count += record_count
