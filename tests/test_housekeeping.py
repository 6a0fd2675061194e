"""Housekeeping of the server's clone (housekeeping.py): commits made by gitwrite leave loose
objects; a repack packs them (with git's deltas, or dulwich without), loses nothing reachable or
not, keeps every version readable for the journal and IXFR, and a repack that fails or hangs
logs why and changes nothing. The keeper task (updater.py) waits for the end of a burst and
never runs beside a push."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from dulwich.objects import Blob

from gitdns import housekeeping
from gitdns import updater as updater_module
from gitdns.gitrepo import GitRepo
from gitdns.gitwrite import ahead_of_remote, commit_files, push
from gitdns.housekeeping import (
    Housekeeper,
    Limits,
    ObjectCount,
    consolidates,
    count_objects,
    repack_reason,
)
from gitdns.updater import Updater

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

GIT = shutil.which("git")  # the real one, whatever a test puts first on PATH
AUTHOR = b"k._update.example.com <k._update.example.com@127.0.0.1>"
RECORDS = 2000  # a 56 KB zone file


def zone(version: int) -> bytes:
    """Version `version` of a zone: the serial and one record change from one to the next."""
    lines = [
        "$ORIGIN example.com.\n",
        f"@ 300 IN SOA ns hostmaster {version} 3600 600 86400 300\n",
        "@ 300 IN NS ns\nns 300 IN A 192.0.2.1\n",
        *(f"host{i} 300 IN A 10.0.{i >> 8}.{i & 255}\n" for i in range(RECORDS)),
        f"dyn{version} 300 IN A 192.0.2.{version % 250 + 1}\n",
    ]
    return "".join(lines).encode()


def git(cwd: Path, *args: str) -> str:
    assert GIT is not None
    done = subprocess.run([GIT, "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "example.com").write_bytes(zone(1))
    (seed / "_keys").write_text("; keys\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "zones")
    path = tmp_path / "zones.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(path))
    return path


@pytest.fixture
def repo(tmp_path: Path, bare: Path) -> Iterator[GitRepo]:
    r = GitRepo.open_or_clone(str(bare), tmp_path / "clone")
    yield r
    r.close()


def commit_versions(repo: GitRepo, first: int, last: int) -> list[bytes]:
    """Versions first..last of the zone, one commit each, by the server's own code path."""
    return [commit_files(repo, {"example.com": zone(v)}, f"update example.com: serial {v}",
                         AUTHOR) for v in range(first, last + 1)]


def objects_dir(repo: GitRepo) -> Path:
    return repo.path / ".git" / "objects"


def disk_bytes(path: Path) -> int:
    """What objects/ takes on disk (blocks, as `du` counts them)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def assert_every_version_readable(repo: GitRepo, last: int) -> None:
    """The journal's and IXFR's reads: the file's history from HEAD, every blob in it."""
    history = repo.file_history("example.com", max_commits=10_000)
    assert len(history) == last  # versions 1..last, newest first
    for (_, blob), version in zip(history, range(last, 0, -1), strict=True):
        assert repo.read_blob(blob) == zone(version)


def fsck(repo: GitRepo) -> None:
    """git's strictest check passes (git raises on a non-zero exit), and says nothing."""
    assert git(repo.path, "fsck", "--strict", "--no-progress", "--no-dangling") == ""


def stub_git(tmp_path: Path, monkeypatch, script: str) -> None:
    """A `git` first on PATH that runs `script` (sh) instead of git."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    stub = bin_dir / "git"
    stub.write_text("#!/bin/sh\n" + script + "\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# -- deciding -------------------------------------------------------------------------------------


def test_repack_reason_follows_the_limits_and_excuses_what_was_left():
    limits = Limits(loose_objects=100, loose_bytes=1000, packs=5)
    assert repack_reason(ObjectCount(loose=100, loose_bytes=1000, packs=5), ObjectCount(),
                         limits) is None
    assert "101 new loose objects" in repack_reason(ObjectCount(loose=101), ObjectCount(), limits)
    assert "of new loose objects" in repack_reason(ObjectCount(loose_bytes=1001), ObjectCount(),
                                                   limits)
    assert "6 packs" in repack_reason(ObjectCount(packs=6), ObjectCount(), limits)
    # Unreachable objects git leaves loose, and a kept pack, do not call for a repack per commit.
    left = ObjectCount(loose=150, loose_bytes=5000, packs=1)
    assert repack_reason(ObjectCount(loose=250, loose_bytes=6000, packs=6), left, limits) is None
    assert repack_reason(ObjectCount(loose=251), left, limits) is not None
    assert consolidates(ObjectCount(packs=7), left, limits)
    assert not consolidates(ObjectCount(loose=10**6, packs=6), left, limits)


def test_limits_come_from_the_environment_and_bad_values_are_ignored(caplog):
    assert Limits.from_env({}) == Limits()
    assert Limits().loose_objects == 6700 and Limits().packs == 50  # git's gc.auto, autoPackLimit
    env = {"GITDNS_REPACK_LOOSE_OBJECTS": "12", "GITDNS_REPACK_LOOSE_BYTES": "4096",
           "GITDNS_REPACK_PACKS": "zero"}
    with caplog.at_level(logging.WARNING, "gitdns.housekeeping"):
        limits = Limits.from_env(env)
    assert (limits.loose_objects, limits.loose_bytes, limits.packs) == (12, 4096, 50)
    assert "GITDNS_REPACK_PACKS='zero' is not a positive integer" in caplog.text


def test_commits_are_counted_without_walking_the_object_folder(repo, monkeypatch):
    walks = []
    real_count = housekeeping.count_objects
    monkeypatch.setattr(housekeeping, "count_objects",
                        lambda path: walks.append(path) or real_count(path))
    keeper = Housekeeper(repo, Limits(loose_objects=30))
    assert len(walks) == 1  # the one count at start
    start = keeper.estimate()
    commit_versions(repo, 2, 11)  # 10 commits: blob, tree, commit each
    assert keeper.reason() is None
    now = keeper.estimate()
    assert now.loose == start.loose + 30
    assert now.loose_bytes == real_count(objects_dir(repo)).loose_bytes
    commit_versions(repo, 12, 12)
    assert "33 new loose objects" in keeper.reason()
    assert len(walks) == 1  # neither the commits nor the decisions walked objects/


# -- repacking with git ---------------------------------------------------------------------------


def test_many_versions_of_a_zone_pack_into_a_small_delta_pack(repo, bare, caplog):
    commit_versions(repo, 2, 150)
    keeper = Housekeeper(repo, Limits(loose_objects=100))
    before = count_objects(objects_dir(repo))
    before_disk = disk_bytes(objects_dir(repo))
    assert before.loose == 3 * 149
    assert keeper.reason() == "447 new loose objects (more than 100)"

    with caplog.at_level(logging.INFO, "gitdns.housekeeping"):
        assert keeper.run()
    after = count_objects(objects_dir(repo))
    after_disk = disk_bytes(objects_dir(repo))
    assert after.loose == 0 and after.packs == 2  # the clone's pack and the new one
    # 149 loose blobs of ~10 KB each (zlib level 1) with their trees and commits, against one
    # blob and deltas of a line or two: measured 1.6 MB -> 71 KB in file sizes, 3.0 MB -> 86 KB
    # on disk (a loose object takes a block of its own).
    assert before.loose_bytes > 1_500_000
    assert after.total_bytes * 15 < before.total_bytes, (before, after)
    assert after_disk * 20 < before_disk, (before_disk, after_disk)
    assert "repacked the clone" in caplog.text and "with git" in caplog.text
    assert keeper.reason() is None and keeper.runs == 1

    fsck(repo)
    assert git(repo.path, "count-objects", "-v").splitlines()[0] == "count: 0"
    assert_every_version_readable(repo, 150)
    # dulwich sees the new pack: the server goes on committing and pushing on top of it.
    commit_versions(repo, 151, 151)
    assert push(repo).ok
    assert git(bare, "rev-parse", "main").encode() == repo.head()
    assert git(bare, "fsck", "--strict", "--no-progress") == ""
    assert_every_version_readable(repo, 151)


def test_unpushed_commits_and_unreachable_objects_survive(repo):
    unpushed = commit_versions(repo, 2, 40)
    store = repo.dulwich_repo().object_store
    stray = Blob.from_string(b"an object no ref reaches (a commit dropped by a replay)\n")
    store.add_object(stray)
    keeper = Housekeeper(repo, Limits(loose_objects=10))
    assert keeper.run()
    assert ahead_of_remote(repo) == unpushed[::-1]  # still there, still to push
    assert repo.read_blob(stray.id) == stray.data  # git leaves it loose, never deletes it
    assert count_objects(objects_dir(repo)).loose == 1
    # It does not make every later commit ask for another repack.
    commit_versions(repo, 41, 42)
    assert keeper.reason() is None
    fsck(repo)
    assert_every_version_readable(repo, 42)


def test_packs_past_the_limit_are_merged_into_one_keeping_unreachable_objects(repo):
    limits = Limits(loose_objects=5, packs=3)
    # A stray object inside a pack: dulwich packs every loose object, reachable or not.
    stray = Blob.from_string(b"packed but unreachable\n")
    repo.dulwich_repo().object_store.add_object(stray)
    assert Housekeeper(repo, limits, use_git=False).run()
    keeper = Housekeeper(repo, limits)
    version = 1
    for _ in range(8):  # bounded: each round adds a pack; the round past the limit merges
        commit_versions(repo, version + 1, version + 3)
        version += 3
        merge = consolidates(keeper.estimate(), ObjectCount(), limits)
        assert keeper.reason() is not None
        assert keeper.run()
        if merge:
            break
    else:
        raise AssertionError("the packs were never merged")
    after = count_objects(objects_dir(repo))
    assert after.packs == 1, after
    assert repo.read_blob(stray.id) == stray.data  # loosened by -A, not dropped
    fsck(repo)
    assert_every_version_readable(repo, version)


def test_commits_made_while_housekeeping_runs_are_all_kept(repo):
    """A fold in a thread commits while repacks run: the clone's lock orders them."""
    keeper = Housekeeper(repo, Limits(loose_objects=3))
    errors: list[BaseException] = []

    def committer() -> None:
        try:
            commit_versions(repo, 2, 61)
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=committer)
    thread.start()
    for _ in range(200):  # bounded; each round repacks whatever was committed meanwhile
        if not thread.is_alive():
            break
        if keeper.reason() is not None:
            assert keeper.run()
        thread.join(0.05)
    thread.join(60)
    assert not thread.is_alive() and not errors
    assert keeper.runs >= 2
    keeper.run()
    fsck(repo)
    assert_every_version_readable(repo, 61)


# -- failures -------------------------------------------------------------------------------------


def test_a_failing_git_logs_its_error_and_loses_nothing(repo, tmp_path, monkeypatch, caplog):
    commit_versions(repo, 2, 30)
    before = count_objects(objects_dir(repo))
    stub_git(tmp_path, monkeypatch, 'echo "fatal: simulated: no space left on device" >&2\n'
                                    "exit 1")
    keeper = Housekeeper(repo, Limits(loose_objects=10))
    assert keeper.git == str(tmp_path / "stub-bin" / "git")
    with caplog.at_level(logging.INFO, "gitdns.housekeeping"):
        assert not keeper.run()
    error = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(error) == 1
    text = error[0].getMessage()
    assert "`git repack -q -l` exited with status 1" in text
    assert "fatal: simulated: no space left on device" in text
    assert "every object is still in the clone" in text
    assert count_objects(objects_dir(repo)) == before
    assert keeper.reason() is None  # waits before trying again, not once per commit
    # The server goes on committing; a working git packs it all later.
    commit_versions(repo, 31, 32)
    monkeypatch.undo()
    assert Housekeeper(repo, Limits(loose_objects=10)).run()
    fsck(repo)
    assert_every_version_readable(repo, 32)


def test_a_hanging_git_is_killed_at_the_timeout(repo, tmp_path, monkeypatch, caplog):
    commit_versions(repo, 2, 10)
    before = count_objects(objects_dir(repo))
    stub_git(tmp_path, monkeypatch, 'echo "stuck" >&2\nsleep 60\necho never')
    keeper = Housekeeper(repo, Limits(loose_objects=10, timeout=0.5))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, "gitdns.housekeeping"):
        assert not keeper.run()
    assert time.monotonic() - started < 10  # the sleep (its process group) was killed
    assert "took more than 0 s and was killed: stuck" in caplog.text
    assert count_objects(objects_dir(repo)) == before
    assert_every_version_readable(repo, 10)


def test_abort_stops_a_repack_under_way(repo, tmp_path, monkeypatch, caplog):
    commit_versions(repo, 2, 5)
    stub_git(tmp_path, monkeypatch, "sleep 60")
    keeper = Housekeeper(repo, Limits(timeout=120))
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(keeper.run()))
    with caplog.at_level(logging.ERROR, "gitdns.housekeeping"):
        thread.start()
        for _ in range(200):  # until the stub runs
            if keeper._proc is not None:
                break
            time.sleep(0.01)
        keeper.abort()
        thread.join(10)
    assert result == [False] and "was killed by signal 9" in caplog.text
    assert_every_version_readable(repo, 5)


# -- without git ----------------------------------------------------------------------------------


def test_without_git_dulwich_packs_and_says_deltas_are_missing(repo, tmp_path, monkeypatch,
                                                                caplog):
    commit_versions(repo, 2, 30)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git anywhere
    with caplog.at_level(logging.INFO, "gitdns.housekeeping"):
        keeper = Housekeeper(repo, Limits(loose_objects=10, packs=2))
        assert keeper.git is None
        assert keeper.run()
    assert "not delta-compressed" in caplog.text
    assert count_objects(objects_dir(repo)).loose == 0
    assert_every_version_readable(repo, 30)
    # Past the pack limit, dulwich merges the packs too (streaming, nothing dropped).
    for first in (31, 36):
        commit_versions(repo, first, first + 4)
        assert keeper.run()
    assert count_objects(objects_dir(repo)).packs <= 2
    monkeypatch.undo()
    fsck(repo)
    assert_every_version_readable(repo, 40)


# -- the keeper task (updater.py) -----------------------------------------------------------------


class _FakeHousekeeper:
    def __init__(self) -> None:
        self.started: list[float] = []

    def reason(self) -> str:
        return "a test"

    def run(self) -> bool:
        self.started.append(time.monotonic())
        return True


def test_the_keeper_waits_for_the_end_of_a_burst_and_for_a_push(monkeypatch):
    monkeypatch.setattr(updater_module, "UPDATES_QUIET", 0.1)
    monkeypatch.setattr(updater_module, "FOLD_MAX_DELAY", 5.0)
    fake = _FakeHousekeeper()

    async def main() -> tuple[float, float]:
        primary = SimpleNamespace(housekeeper=fake, write_lock=asyncio.Lock(), workers=None)
        updater = Updater(primary)  # type: ignore[arg-type]
        keeper = asyncio.ensure_future(updater.keeper())
        try:
            # A burst of updates for 0.4 s: the repack waits for its end.
            end = time.monotonic() + 0.4
            updater.tidy()
            while time.monotonic() < end:
                updater.last_update = time.monotonic()
                await asyncio.sleep(0.01)
            for _ in range(300):
                if fake.started:
                    break
                await asyncio.sleep(0.01)
            burst_end = end
            # A push under way: the next repack waits for it.
            async with updater.push_lock:
                updater.tidy()
                await asyncio.sleep(0.3)
                assert len(fake.started) == 1
                push_done = time.monotonic()
            for _ in range(300):
                if len(fake.started) == 2:
                    break
                await asyncio.sleep(0.01)
            return burst_end, push_done
        finally:
            keeper.cancel()

    burst_end, push_done = asyncio.run(main())
    assert len(fake.started) == 2
    assert fake.started[0] >= burst_end + 0.1 - 0.02
    assert fake.started[1] >= push_done
