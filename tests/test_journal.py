"""The update journal: durable appends shared by waiting updates, numbering, replay, trimming."""

from __future__ import annotations

import asyncio
import os

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gitdns import journal as journal_module
from gitdns.journal import Journal

ORIGIN = dns.name.from_text("example.test")


def record(name: str, address: str):
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, address)
    return (dns.name.from_text(name, ORIGIN), 300, rd)


def entry(j: Journal, i: int):
    return j.new_entry(ORIGIN, 100 + i, [record("old", "192.0.2.1")],
                       [record(f"h{i}", f"192.0.2.{i % 250}")], f"update {i}", "k <k@127.0.0.1>")


def test_appends_are_durable_and_share_fsyncs(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", counting_fsync)

    async def main():
        j = Journal(tmp_path)
        futures = [j.append(entry(j, i)) for i in range(50)]  # fifty updates waiting together
        await asyncio.gather(*futures)
        await j.drain()
        j.close()

    asyncio.run(main())
    assert 1 <= len(synced) <= 3, f"{len(synced)} fsyncs for 50 waiting updates"
    lines = (tmp_path / "journal").read_text().splitlines()
    assert len(lines) == 50


def test_reopened_journal_replays_what_git_lacks_and_skips_a_torn_line(tmp_path):
    async def write(count: int):
        j = Journal(tmp_path)
        for i in range(count):
            await j.append(entry(j, i))
        j.close()

    asyncio.run(write(3))
    with open(tmp_path / "journal", "a") as f:
        f.write('{"seq": 4, "zone": "exa')  # a crash in the middle of a write
    j = Journal(tmp_path)
    assert [e.seq for e in j.unfolded()] == [1, 2, 3]
    first = j.unfolded()[0]
    assert first.origin == ORIGIN and first.serial == 100
    assert first.added == (record("h0", "192.0.2.0"),)
    assert first.deleted == (record("old", "192.0.2.1"),)
    assert j.next_seq == 4
    j.mark_folded(2)
    j.close()
    j = Journal(tmp_path)
    assert [e.seq for e in j.unfolded()] == [3]  # git has 1 and 2
    j.mark_folded(3)
    assert (tmp_path / "journal").stat().st_size == 0  # all in git: the file starts afresh
    j.close()
    assert Journal(tmp_path).next_seq == 4  # numbers never go back
