"""The repository loader: zones and keys by file name, reuse of unchanged files, last good data."""

from __future__ import annotations

import hashlib
import logging

import dns.name

from gitdns.repository import load_repository

GOOD = """$ORIGIN {zone}.
$TTL 300
@ SOA ns hostmaster {serial} 3600 600 86400 60
@ NS ns
ns A 192.0.2.1
www A 192.0.2.{serial}
"""
BROKEN = GOOD + "www CNAME elsewhere.test.\n"  # CNAME beside the A record: line 7


class Files:
    """A repository stand-in: content addressed by hash, counting reads."""

    def __init__(self):
        self.blobs: dict[bytes, bytes] = {}
        self.reads = 0

    def put(self, content: str) -> bytes:
        data = content.encode()
        blob = hashlib.sha1(data).hexdigest().encode()
        self.blobs[blob] = data
        return blob

    def read(self, blob: bytes) -> bytes:
        self.reads += 1
        return self.blobs[blob]


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def test_zones_and_keys_are_told_apart_and_keys_never_served():
    f = Files()
    files = {
        "a.test": f.put(GOOD.format(zone="a.test", serial=1)),
        "b.test": f.put(GOOD.format(zone="b.test", serial=2)),
        "_keys": f.put("k._update. DNSKEY 0 3 163 AAAA\n"),
        "a.test._keys": f.put("k._update.a.test. DNSKEY 0 3 163 AAAA\n"),
        ".hidden": f.put("not a zone"),
    }
    state, report = load_repository(files, f.read)
    assert set(state.zones) == {name("a.test"), name("b.test")}
    assert set(state.key_files) == {"_keys", "a.test._keys"}
    assert sorted(report.loaded) == [name("a.test"), name("b.test")]
    assert report.keys_changed


def test_unchanged_files_are_not_parsed_again():
    f = Files()
    files = {"a.test": f.put(GOOD.format(zone="a.test", serial=1))}
    state, _ = load_repository(files, f.read)
    reads = f.reads
    state2, report = load_repository(files, f.read, state)
    assert f.reads == reads
    assert state2.zones[name("a.test")] is state.zones[name("a.test")]
    assert report.changed == [] and not report.keys_changed


def test_broken_zone_at_first_start_is_not_served_and_others_are(caplog):
    f = Files()
    files = {
        "a.test": f.put(GOOD.format(zone="a.test", serial=1)),
        "b.test": f.put(BROKEN.format(zone="b.test", serial=1)),
    }
    with caplog.at_level(logging.ERROR, logger="gitdns.zones"):
        state, report = load_repository(files, f.read)
    assert set(state.zones) == {name("a.test")}
    assert report.failed == [name("b.test")]
    assert "b.test:7: CNAME at www.b.test. beside other data (A)" in caplog.text
    assert "not served until the file is fixed" in caplog.text


def test_broken_new_version_keeps_the_last_good_one_in_service(caplog):
    f = Files()
    state, _ = load_repository({"a.test": f.put(GOOD.format(zone="a.test", serial=1))}, f.read)
    broken = {"a.test": f.put(BROKEN.format(zone="a.test", serial=2))}
    with caplog.at_level(logging.ERROR, logger="gitdns.zones"):
        state2, report = load_repository(broken, f.read, state)
    assert state2.zones[name("a.test")].serial == 1
    assert "keeping serial 1 in service" in caplog.text
    # The same broken content is not reported again on the next reload...
    caplog.clear()
    reads = f.reads
    state3, report = load_repository(broken, f.read, state2)
    assert f.reads == reads and report.failed == [] and caplog.text == ""
    assert state3.zones[name("a.test")].serial == 1
    # ... and a fixed version replaces it.
    fixed = {"a.test": f.put(GOOD.format(zone="a.test", serial=3))}
    state4, report = load_repository(fixed, f.read, state3)
    assert state4.zones[name("a.test")].serial == 3
    assert report.loaded == [name("a.test")]


def test_zones_appear_and_vanish():
    f = Files()
    state, _ = load_repository({"a.test": f.put(GOOD.format(zone="a.test", serial=1))}, f.read)
    files = {"b.test": f.put(GOOD.format(zone="b.test", serial=1))}
    state2, report = load_repository(files, f.read, state)
    assert set(state2.zones) == {name("b.test")}
    assert report.dropped == [name("a.test")] and report.loaded == [name("b.test")]


def test_file_name_that_is_no_domain_name_is_ignored_with_an_error(caplog):
    f = Files()
    bad = "x" * 70  # a label longer than 63 octets
    with caplog.at_level(logging.ERROR, logger="gitdns.zones"):
        state, _ = load_repository({bad: f.put("junk")}, f.read)
    assert len(state.zones) == 0
    assert "the file name is not a domain name" in caplog.text


def test_a_big_file_is_followed_by_a_trim_and_a_small_one_is_not(monkeypatch):
    from gitdns import repository

    trims = []
    monkeypatch.setattr(repository.memory, "trim_soon", lambda: trims.append(1))
    small = GOOD.format(zone="a.test", serial=1)
    monkeypatch.setattr(repository, "TRIM_AFTER_BYTES", len(small.encode()) + 1)
    f = Files()
    load_repository({"a.test": f.put(small)}, f.read)
    assert trims == []
    load_repository({"b.test": f.put(GOOD.format(zone="b.test", serial=10) + "x A 1.2.3.4\n")},
                    f.read)
    assert trims == [1]
