"""Compiled zones by blob: the same zone back, damaged entries ignored, one entry per zone."""

from __future__ import annotations

import hashlib
import threading

import dns.name

from bench import workload
from gitdns import zonecache
from gitdns.bulkload import load_compact
from gitdns.repository import load_repository
from gitdns.zonecache import ZoneCache
from tests.test_zone import same

ORIGIN = dns.name.from_text(workload.BIG_ORIGIN)


def blob_id(data: bytes) -> bytes:
    return hashlib.sha1(data).hexdigest().encode()


def wait_written(cache: ZoneCache, origin, source) -> None:
    """The entry is written in a background thread: wait for it."""
    for t in threading.enumerate():
        if t.name == "zone-cache":
            t.join(30)


def test_a_compiled_zone_comes_back_the_same(tmp_path, monkeypatch):
    monkeypatch.setattr(zonecache, "MIN_RECORDS", 10)
    data = "".join(workload.big_zone_lines(3000)).encode()
    zone, warnings = load_compact(data, ORIGIN)
    cache = ZoneCache(tmp_path)
    source = blob_id(data)
    assert cache.get(ORIGIN, source) is None
    cache.put(ORIGIN, source, zone, warnings)
    wait_written(cache, ORIGIN, source)
    back, back_warnings = cache.get(ORIGIN, source)
    same(back, zone)
    assert list(back.rrsets()) == list(zone.rrsets()) and back_warnings == warnings
    # A new version of the file replaces the entry; a damaged entry is a miss.
    data2 = data.replace(b"2024010101", b"2024010102")
    zone2, _w = load_compact(data2, ORIGIN)
    cache.put(ORIGIN, blob_id(data2), zone2, [])
    wait_written(cache, ORIGIN, blob_id(data2))
    assert [p.name for p in tmp_path.iterdir()] == [f"{ORIGIN}{blob_id(data2).decode()}.zone"]
    (tmp_path / f"{ORIGIN}{blob_id(data2).decode()}.zone").write_bytes(b"\x00garbage")
    assert cache.get(ORIGIN, blob_id(data2)) is None
    assert cache.get(ORIGIN, b"../../etc/passwd") is None


def test_the_repository_loader_reads_the_compiled_copy_without_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(zonecache, "MIN_RECORDS", 10)
    data = "".join(workload.big_zone_lines(3000)).encode()
    files = {workload.BIG_ORIGIN: blob_id(data)}
    reads = []

    def read(source):
        reads.append(source)
        return data

    cache = ZoneCache(tmp_path)
    first, _ = load_repository(files, read, None, cache)
    wait_written(cache, ORIGIN, files[workload.BIG_ORIGIN])
    second, report = load_repository(files, read, None, cache)
    assert len(reads) == 1 and report.loaded == [ORIGIN]
    same(second.zones[ORIGIN], first.zones[ORIGIN])


def test_after_a_restart_from_the_compiled_copy_a_new_version_loads_from_its_changes(
        tmp_path, monkeypatch, caplog):
    from gitdns import repository
    from gitdns.repository import load_zone

    monkeypatch.setattr(zonecache, "MIN_RECORDS", 10)
    monkeypatch.setattr(repository, "_DELTA_MIN_BYTES", 0)
    old = "".join(workload.big_zone_lines(3000))
    new = old.replace("2024010101", "2024010102", 1) + "added A 192.0.2.77\n"
    blobs = {blob_id(t.encode()): t.encode() for t in (old, new)}
    cache = ZoneCache(tmp_path)
    first, _ = load_repository({workload.BIG_ORIGIN: blob_id(old.encode())}, blobs.__getitem__,
                               None, cache)
    wait_written(cache, ORIGIN, blob_id(old.encode()))
    restarted, report = load_repository({workload.BIG_ORIGIN: blob_id(old.encode())},
                                        blobs.__getitem__, None, cache)
    assert report.loaded == [ORIGIN]
    with caplog.at_level("INFO", logger="gitdns.zones"):
        later, _ = load_repository({workload.BIG_ORIGIN: blob_id(new.encode())},
                                   blobs.__getitem__, restarted, cache)
    assert "as a change of serial 2024010101" in caplog.text
    same(later.zones[ORIGIN], load_zone(new.encode(), ORIGIN, workload.BIG_ORIGIN)[0])


def test_a_held_cache_writes_only_once_released(tmp_path, monkeypatch):
    # At start the primary holds the writes until it answers (marshalling holds the GIL).
    monkeypatch.setattr(zonecache, "MIN_RECORDS", 10)
    data = "".join(workload.big_zone_lines(3000)).encode()
    zone, warnings = load_compact(data, ORIGIN)
    cache = ZoneCache(tmp_path / "cache", held=True)
    cache.put(ORIGIN, blob_id(data), zone, warnings)
    assert not any(t.name == "zone-cache" for t in threading.enumerate())
    assert cache.get(ORIGIN, blob_id(data)) is None
    for thread in cache.release():
        thread.join(30)
    same(cache.get(ORIGIN, blob_id(data))[0], zone)
    assert cache.release() == []  # nothing held any more: later entries are written at once
