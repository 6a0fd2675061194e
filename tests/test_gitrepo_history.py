"""GitRepo.file_history and history.diffs_from_git against a repository made by the git command:
the versions of one zone file along the first-parent line, and IXFR chains rebuilt from them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.name
import pytest

from gitdns.diff import apply_diff
from gitdns.gitrepo import GitRepo
from gitdns.history import diffs_from_git
from gitdns.zone import Zone
from gitdns.zonefile import parse_zone

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

ORIGIN = dns.name.from_text("example.com.")
FILE = "example.com"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> bytes:
    for name, text in files.items():
        (repo / name).write_text(text)
        git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").encode()


def zone_text(serial: int, *records: str, comment: str = "") -> str:
    lines = [
        f"; example.com {comment}",
        "$TTL 300",
        f"@ SOA ns hostmaster {serial} 3600 600 86400 300",
        "@ NS ns",
        "ns A 192.0.2.1",
        *records,
    ]
    return "\n".join(lines) + "\n"


def parse(text: str) -> Zone:
    return parse_zone(text, ORIGIN, FILE)[0]


def content(zone: Zone) -> set:
    return {(r.name, r.ttl, rd) for r in zone.rrsets() for rd in r}


def blob(repo: Path, commit_id: bytes, name: str = FILE) -> bytes:
    return git(repo, "rev-parse", f"{commit_id.decode()}:{name}").encode()


@dataclass
class History:
    src: Path
    changes: list[bytes]  # the commits that changed example.com on main's first-parent line
    texts: dict[int, str]  # serial -> the text of its (newest) version


@pytest.fixture
def history(tmp_path: Path) -> History:
    """example.com through serials 1..5 and a zone beside it:

    c1 serial 1; c2 serial 2; c3 other file only; c4 broken example.com; c5 serial 3;
    c6 serial 3 again with other content; merge of a side branch (serial 4, made in two commits
    there); c8 serial 4 with a comment changed only; c9 serial 5.
    """
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    v = {
        1: zone_text(1, "www A 192.0.2.80"),
        2: zone_text(2, "www A 192.0.2.80", "www AAAA 2001:db8::80"),
        3: zone_text(3, "www A 192.0.2.81", "www AAAA 2001:db8::80"),
        "3b": zone_text(3, "www A 192.0.2.81", "www AAAA 2001:db8::80", "mail A 192.0.2.25"),
        "4a": zone_text(4, "www A 192.0.2.82", "mail A 192.0.2.25"),
        4: zone_text(4, "www A 192.0.2.82", "mail A 192.0.2.26", "ftp CNAME www"),
        "4c": zone_text(4, "www A 192.0.2.82", "mail A 192.0.2.26", "ftp CNAME www", comment="!"),
        5: zone_text(5, "www 60 A 192.0.2.82", "mail A 192.0.2.26"),
    }
    other = "$TTL 300\n@ SOA ns hm 1 1 1 1 1\n@ NS ns.example.com.\n"
    c1 = commit(src, {FILE: v[1], "other.test": other}, "serial 1")
    c2 = commit(src, {FILE: v[2]}, "serial 2")
    commit(src, {"other.test": other + "x A 192.0.2.9\n"}, "other zone only")
    c4 = commit(src, {FILE: v[2].replace("ns A 192.0.2.1", "ns A 192.0.2.1.5")}, "broken")
    c5 = commit(src, {FILE: v[3]}, "serial 3")
    c6 = commit(src, {FILE: v["3b"]}, "serial 3 again, other content")
    git(src, "checkout", "-q", "-b", "side")
    commit(src, {FILE: v["4a"]}, "serial 4 on a side branch")
    commit(src, {FILE: v[4]}, "serial 4, fixed")
    git(src, "checkout", "-q", "main")
    commit(src, {"other.test": other + "y A 192.0.2.10\n"}, "other zone on main")
    git(src, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = git(src, "rev-parse", "HEAD").encode()
    c8 = commit(src, {FILE: v["4c"]}, "a comment")
    c9 = commit(src, {FILE: v[5]}, "serial 5")
    texts = {1: v[1], 2: v[2], 3: v["3b"], 4: v["4c"], 5: v[5]}
    return History(src, [c9, c8, merge, c6, c5, c4, c2, c1], texts)  # type: ignore[dict-item]


@pytest.fixture
def clone(tmp_path: Path, history: History) -> Iterator[GitRepo]:
    repo = GitRepo.open_or_clone(str(history.src), tmp_path / "clone")
    try:
        yield repo
    finally:
        repo.close()


def test_file_history_lists_the_commits_that_changed_the_file(clone: GitRepo, history: History):
    got = clone.file_history(FILE)
    assert [c for c, _ in got] == history.changes
    assert [b for _, b in got] == [blob(history.src, c) for c in history.changes]
    # The same list git itself gives for the first-parent line.
    log = git(history.src, "log", "--first-parent", "--format=%H", "--", FILE).split()
    assert [c.decode() for c, _ in got] == log


def test_file_history_is_bounded(clone: GitRepo, history: History):
    assert [c for c, _ in clone.file_history(FILE, 3)] == history.changes[:3]
    assert clone.file_history(FILE, 0) == []
    # max_walk bounds the commits looked at: 2 commits reach only c9 and c8.
    assert [c for c, _ in clone.file_history(FILE, max_walk=2)] == history.changes[:2]


def test_file_history_of_other_or_missing_files(clone: GitRepo, history: History):
    assert len(clone.file_history("other.test")) == 3
    assert clone.file_history("nothere") == []


def test_file_history_stops_at_a_deletion(tmp_path: Path):
    src = tmp_path / "del"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    commit(src, {FILE: zone_text(1)}, "one")
    git(src, "rm", "-q", FILE)
    git(src, "commit", "-q", "-m", "gone")
    again = commit(src, {FILE: zone_text(7)}, "again")
    with GitRepo.open_or_clone(str(src), tmp_path / "clone") as repo:
        assert [c for c, _ in repo.file_history(FILE)] == [again]


def chain_result(start: Zone, diffs) -> Zone:
    zone = start
    for diff in diffs:
        assert diff.old_serial == zone.serial
        zone = apply_diff(zone, diff)
    return zone


@pytest.mark.parametrize("want", [1, 2, 4])
def test_diffs_from_git_rebuild_the_chain_to_head(clone: GitRepo, history: History, want: int):
    current = parse(history.texts[5])
    diffs = diffs_from_git(clone, FILE, ORIGIN, current, want)
    assert diffs is not None
    assert [d.old_serial for d in diffs] == list(range(want, 5))
    assert [d.new_serial for d in diffs] == list(range(want + 1, 6))
    old = parse(history.texts[want])
    assert content(chain_result(old, diffs)) == content(current)


def test_diffs_from_git_when_the_asked_serial_had_two_contents(clone: GitRepo, history: History):
    """Serial 3 was committed with two contents: a client at 3 may hold either, so no chain
    starts there; chains from older serials pass through it (one step for the serial)."""
    current = parse(history.texts[5])
    assert diffs_from_git(clone, FILE, ORIGIN, current, 3) is None
    diffs = diffs_from_git(clone, FILE, ORIGIN, current, 2)
    assert diffs is not None and [d.new_serial for d in diffs] == [3, 4, 5]


def test_diffs_from_git_unknown_or_out_of_reach(clone: GitRepo, history: History):
    current = parse(history.texts[5])
    assert diffs_from_git(clone, FILE, ORIGIN, current, 5) == []
    assert diffs_from_git(clone, FILE, ORIGIN, current, 99) is None  # newer than ours
    assert diffs_from_git(clone, FILE, ORIGIN, current, 0) is None  # never existed
    # Serial 1 lies beyond the first 4 versions of the file.
    assert diffs_from_git(clone, FILE, ORIGIN, current, 1, max_commits=4) is None
    assert diffs_from_git(clone, FILE, ORIGIN, current, 2, max_commits=7) is not None
    assert diffs_from_git(clone, "nothere", ORIGIN, current, 1) is None


def test_diffs_from_git_to_a_served_version_ahead_of_head(clone: GitRepo, history: History):
    """The served zone had its serial raised (content changed without a serial increase):
    the last step goes from HEAD's version to the served one."""
    served = parse(history.texts[5].replace(" 5 3600", " 6 3600") + "new A 192.0.2.6\n")
    diffs = diffs_from_git(clone, FILE, ORIGIN, served, 2)
    assert diffs is not None and [d.new_serial for d in diffs] == [3, 4, 5, 6]
    assert content(chain_result(parse(history.texts[2]), diffs)) == content(served)


def test_diffs_from_git_to_a_served_version_behind_head(clone: GitRepo, history: History):
    """HEAD holds a version not loaded yet: it is passed over, the chain ends at the served one."""
    served = parse(history.texts[4])
    diffs = diffs_from_git(clone, FILE, ORIGIN, served, 1)
    assert diffs is not None and [d.new_serial for d in diffs] == [2, 3, 4]
    assert content(chain_result(parse(history.texts[1]), diffs)) == content(served)


def test_diffs_from_git_stop_where_the_serial_went_backwards(tmp_path: Path):
    src = tmp_path / "reset"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    commit(src, {FILE: zone_text(4000000000, "a A 192.0.2.0")}, "before, and older than 2")
    commit(src, {FILE: zone_text(2024010100, "a A 192.0.2.1")}, "date serial")
    commit(src, {FILE: zone_text(1, "a A 192.0.2.2")}, "serial reset by hand")
    commit(src, {FILE: zone_text(2, "a A 192.0.2.3")}, "two")
    current = parse(zone_text(2, "a A 192.0.2.3"))
    with GitRepo.open_or_clone(str(src), tmp_path / "clone") as repo:
        # 4000000000 is older than 2 in serial arithmetic (RFC 1982), but the way from it to 2
        # goes through the reset: there is no chain.
        assert diffs_from_git(repo, FILE, ORIGIN, current, 4000000000) is None
        assert diffs_from_git(repo, FILE, ORIGIN, current, 2024010100) is None
        diffs = diffs_from_git(repo, FILE, ORIGIN, current, 1)
        assert diffs is not None and [(d.old_serial, d.new_serial) for d in diffs] == [(1, 2)]
