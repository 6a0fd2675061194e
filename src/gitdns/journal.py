"""The update journal: each accepted update, durable on disk before it is answered.

Rules this module keeps:
- An entry is appended and fsync'd before `append` returns; entries that arrive while an fsync
  runs share the next one (group commit), so many clients cost few fsyncs.
- Entries are numbered; the number of the last entry folded into git is kept in a marker file
  (written and fsync'd after the git commit is durable). Entries above it are replayed at start;
  replaying one twice is harmless (deletions of what is gone and additions of what is there
  are skipped).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gitdns.diff import Record
from gitdns.durable import fsync_path

log = logging.getLogger("gitdns.journal")


@dataclass(frozen=True)
class Entry:
    """One accepted update: which zone, what changed, and who asked (for the commit)."""

    seq: int
    origin: dns.name.Name
    serial: int  # the zone's serial after the update
    deleted: tuple[Record, ...]
    added: tuple[Record, ...]
    message: str  # one line for the commit message
    author: str

    def to_json(self) -> str:
        return json.dumps({
            "seq": self.seq, "zone": self.origin.to_text(), "serial": self.serial,
            "deleted": [_record_text(r) for r in self.deleted],
            "added": [_record_text(r) for r in self.added],
            "message": self.message, "author": self.author,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Entry:
        d = json.loads(line)
        origin = dns.name.from_text(d["zone"])
        return cls(d["seq"], origin, d["serial"],
                   tuple(_record(r) for r in d["deleted"]),
                   tuple(_record(r) for r in d["added"]), d["message"], d["author"])


def _record_text(record: Record) -> list:
    name, ttl, rd = record
    return [name.to_text(), ttl, dns.rdatatype.to_text(rd.rdtype), rd.to_text()]


def _record(fields: list) -> Record:
    name, ttl, rdtype, text = fields
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    return (dns.name.from_text(name), ttl, rd)


class Journal:
    """An append-only file of entries plus a marker of how far git has them."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "journal"
        self.marker = directory / "journal.folded"
        self.folded = self._read_marker()
        self.entries: list[Entry] = [e for e in self._read() if e.seq > self.folded]
        self.next_seq = max([self.folded, *(e.seq for e in self.entries)]) + 1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._pending: list[tuple[bytes, asyncio.Future]] = []
        self._flushing = False
        self._idle = asyncio.Event()  # set while nothing waits to be written
        self._idle.set()

    def _read_marker(self) -> int:
        try:
            return int(self.marker.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            log.error("%s is damaged; replaying the whole journal", self.marker)
            return 0

    def _read(self) -> Iterator[Entry]:
        try:
            data = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        lines = data.split("\n")
        for i, line in enumerate(lines):
            if not line:
                continue
            try:
                yield Entry.from_json(line)
            except (ValueError, KeyError, TypeError) as e:
                # Only a torn last line (a crash in the middle of a write, never acknowledged)
                # may be broken; anything else is worth a loud message.
                level = logging.WARNING if i >= len(lines) - 2 else logging.ERROR
                log.log(level, "%s: line %d is unreadable (%s); skipped", self.path, i + 1, e)

    def new_entry(self, origin: dns.name.Name, serial: int, deleted, added, message: str,
                  author: str) -> Entry:
        entry = Entry(self.next_seq, origin, serial, tuple(deleted), tuple(added), message,
                      author)
        self.next_seq += 1
        return entry

    def append(self, entry: Entry) -> asyncio.Future:
        """Queue `entry`; the future completes once it is on disk (fsync'd)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(((entry.to_json() + "\n").encode("utf-8"), future))
        self.entries.append(entry)
        if not self._flushing:
            self._flushing = True
            self._idle.clear()
            asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                data = b"".join(d for d, _f in batch)
                try:
                    await asyncio.to_thread(self._write_sync, data)
                except OSError as e:
                    log.error("cannot write the update journal %s: %s", self.path, e)
                    for _d, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                for _d, f in batch:
                    if not f.done():
                        f.set_result(None)
        finally:
            self._flushing = False
            self._idle.set()

    def _write_sync(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    async def drain(self) -> None:
        """Wait until every appended entry is on disk (or failed)."""
        await self._idle.wait()

    def unfolded(self) -> list[Entry]:
        """Entries git does not have yet, all on disk (call `drain` first)."""
        return [e for e in self.entries if e.seq > self.folded]

    def keep_unmerged(self, entry: Entry) -> Path:
        """Set aside an entry that can no longer go into git (its zone is gone), durably."""
        path = self.path.with_name("journal.unmerged")
        with open(path, "a", encoding="utf-8") as f:
            f.write(entry.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path

    def mark_folded(self, seq: int) -> None:
        """Git has every entry up to `seq` (its commit is durable): remember it, trim the file."""
        tmp = self.marker.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{seq}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.marker)
        fsync_path(self.marker.parent)
        self.folded = seq
        self.entries = [e for e in self.entries if e.seq > seq]
        if not self.entries and not self._pending and not self._flushing:
            os.ftruncate(self._fd, 0)  # everything is in git; start the file afresh

    def close(self) -> None:
        os.close(self._fd)
