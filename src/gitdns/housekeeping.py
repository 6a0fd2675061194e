"""Housekeeping of the server's clone: loose objects packed and packs merged before they fill
the disk (every fold writes the whole zone file as a new loose blob; every fetch adds a pack).

Rules this module keeps:
- Deciding is cheap: one count of objects/ at start, then the objects each commit wrote (the
  GitRepo's `written` tally) and a listing of objects/pack/; objects/ is walked again only after
  a repack. The decision itself (`repack_reason`) is a pure function of those counts.
- A repack holds the GitRepo's lock, and runs with `git` when it is on PATH (delta compression:
  versions of a zone differ by a few lines), else with dulwich (no deltas, said in the log).
- Nothing is ever lost: only objects a pack already holds are deleted, the new pack is fsync'd
  before, unreachable objects stay (loose), and a repack that fails or times out logs why and
  leaves every object where it was.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dulwich.object_store import DiskObjectStore
from dulwich.objects import ShaFile

from gitdns.durable import fsync_path
from gitdns.gitrepo import GitRepo

log = logging.getLogger("gitdns.housekeeping")

#: Environment variables that override the limits (tests, and an operator's last resort).
LOOSE_OBJECTS_ENV = "GITDNS_REPACK_LOOSE_OBJECTS"
LOOSE_BYTES_ENV = "GITDNS_REPACK_LOOSE_BYTES"
PACKS_ENV = "GITDNS_REPACK_PACKS"
#: After a failed repack, the next attempt waits this long (not one per commit meanwhile).
RETRY_AFTER = 300.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Limits:
    """When to repack: more new loose objects than `loose_objects` (git's gc.auto, 6700) or
    than `loose_bytes` on disk, or more packs than `packs` (git's gc.autoPackLimit, 50).

    gc.auto counts objects only, and a fold adds three (blob, tree, commit) whatever the
    zone's size: 6700 objects is 2233 folds, 22 GB of loose blobs for a 36 MB zone. 256 MB
    bounds that to a small share of any server's disk (a repack every 25 folds of such a zone,
    seconds of one core for git), while a zone of 10k records (100 KB a fold) still repacks by
    count, as git would. `timeout` bounds one git command; a repack killed by it loses nothing.
    """

    loose_objects: int = 6700
    loose_bytes: int = 256 * 2**20
    packs: int = 50
    timeout: float = 600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, with GITDNS_REPACK_LOOSE_OBJECTS, GITDNS_REPACK_LOOSE_BYTES and
        GITDNS_REPACK_PACKS applied (a value that is not a positive integer is logged and
        ignored)."""
        environ = os.environ if environ is None else environ
        limits = cls()
        for name, field in (
            (LOOSE_OBJECTS_ENV, "loose_objects"),
            (LOOSE_BYTES_ENV, "loose_bytes"),
            (PACKS_ENV, "packs"),
        ):
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                value = int(text)
                if value < 1:
                    raise ValueError(text)
            except ValueError:
                log.warning("%s=%r is not a positive integer; using %d", name, text,
                            getattr(limits, field))
                continue
            limits = replace(limits, **{field: value})
        return limits


@dataclass(frozen=True)
class ObjectCount:
    """What objects/ holds: loose objects (number, bytes on disk) and packs not kept by a
    .keep file (number, bytes)."""

    loose: int = 0
    loose_bytes: int = 0
    packs: int = 0
    pack_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.loose_bytes + self.pack_bytes


def repack_reason(now: ObjectCount, left: ObjectCount, limits: Limits) -> str | None:
    """Why the clone needs a repack, or None. `left` is what the last repack could not pack
    (unreachable loose objects stay loose; kept packs stay), so they do not call for a
    repack after every commit."""
    packs = now.packs - left.packs
    if packs > limits.packs:
        return f"{now.packs} packs (more than {limits.packs} new)"
    loose = now.loose - left.loose
    if loose > limits.loose_objects:
        return f"{loose} new loose objects (more than {limits.loose_objects})"
    loose_bytes = now.loose_bytes - left.loose_bytes
    if loose_bytes > limits.loose_bytes:
        return (f"{_mb(loose_bytes)} of new loose objects (more than "
                f"{_mb(limits.loose_bytes)})")
    return None


def consolidates(now: ObjectCount, left: ObjectCount, limits: Limits) -> bool:
    """Whether the repack merges the packs (and the loose objects) into one, rather than
    packing the loose objects alone."""
    return now.packs - left.packs > limits.packs


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


# -- counting -------------------------------------------------------------------------------------


def _pack_names(pack_dir: Path) -> list[str]:
    """Base names of the packs git and dulwich use (a .pack with its .idx), .keep ones left
    out (as git's gc.autoPackLimit does)."""
    try:
        names = set(os.listdir(pack_dir))
    except FileNotFoundError:
        return []
    return sorted(
        n[: -len(".pack")]
        for n in names
        if n.endswith(".pack")
        and n[: -len(".pack")] + ".idx" in names
        and n[: -len(".pack")] + ".keep" not in names
    )


def loose_objects(objects_dir: Path) -> Iterator[tuple[str, int]]:
    """(hex id, bytes on disk) of each loose object: a walk of the 256 folders."""
    for i in range(256):
        folder = f"{i:02x}"
        try:
            with os.scandir(objects_dir / folder) as entries:
                for entry in entries:
                    if len(entry.name) != 38 or not set(entry.name) <= _HEX:
                        continue
                    try:
                        yield folder + entry.name, entry.stat().st_size
                    except FileNotFoundError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue


def count_objects(objects_dir: Path) -> ObjectCount:
    """Walk objects/ once (256 folders and the pack folder), as `git count-objects` does."""
    loose = loose_bytes = 0
    for _, size in loose_objects(objects_dir):
        loose += 1
        loose_bytes += size
    pack_dir = objects_dir / "pack"
    pack_bytes = 0
    names = _pack_names(pack_dir)
    for name in names:
        for ext in (".pack", ".idx"):
            try:
                pack_bytes += (pack_dir / (name + ext)).stat().st_size
            except FileNotFoundError:
                pass
    return ObjectCount(loose, loose_bytes, len(names), pack_bytes)


# -- running git ----------------------------------------------------------------------------------


class RepackError(Exception):
    """A repack step failed; the message says which command and what it printed."""


def _git_env() -> dict[str, str]:
    """The server's environment without GIT_* (run from a hook, GIT_DIR would point git at
    another repository) and in the C locale (stderr the same in every log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["LC_ALL"] = "C"
    return env


class Housekeeper:
    """Keeps one clone's objects/ small: `reason()` says whether it is time (cheap; any
    thread), `run()` repacks (blocking, minutes at worst: call it in a thread)."""

    def __init__(self, repo: GitRepo, limits: Limits | None = None, *, use_git: bool = True):
        """Count objects/ once. `use_git` False (or no `git` on PATH) repacks with dulwich."""
        self.repo = repo
        self.limits = limits or Limits()
        self.git = shutil.which("git") if use_git else None
        self.objects_dir = Path(repo.path) / ".git" / "objects"
        self.runs = 0  # repacks that worked, for the tests and the log
        self._left = ObjectCount()  # at start nothing is excused: an old pile is packed too
        self._retry_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._guard = threading.Lock()  # _proc and _stopping, between run() and abort()
        with repo.lock:
            self._recount()  # the one walk of objects/ until a repack
        if self.git is None and use_git:
            log.warning("no git program on PATH: the clone at %s is packed by dulwich, whose "
                        "packs are not delta-compressed (install git to keep them small)",
                        repo.path)

    # -- deciding ---------------------------------------------------------------------------

    def _recount(self) -> ObjectCount:
        """A full count, with the tally it goes with (one tuple: `estimate` reads it from any
        thread); under the repo lock, so no commit falls between the two."""
        counted = count_objects(self.objects_dir)
        self._base = (counted, self.repo.written.objects, self.repo.written.bytes)
        return counted

    def estimate(self) -> ObjectCount:
        """The counts now, without walking objects/: the last full count, plus what commits
        wrote since (the GitRepo's tally), plus a listing of the pack folder."""
        counted, objects, nbytes = self._base
        written = self.repo.written
        return replace(
            counted,
            loose=counted.loose + written.objects - objects,
            loose_bytes=counted.loose_bytes + written.bytes - nbytes,
            packs=len(_pack_names(self.objects_dir / "pack")),
        )

    def reason(self) -> str | None:
        """Why a repack is due now, or None (also during the pause after a failure)."""
        if time.monotonic() < self._retry_at:
            return None
        return repack_reason(self.estimate(), self._left, self.limits)

    # -- repacking --------------------------------------------------------------------------

    def run(self) -> bool:
        """Repack now, whatever the counts say; True when it worked. Never raises for a failed
        repack: it is logged (the command and its stderr), every object stays, and the next
        `reason()` waits RETRY_AFTER."""
        with self.repo.lock:
            before = self.estimate()
            merge = consolidates(before, self._left, self.limits)
            why = repack_reason(before, self._left, self.limits) or "a direct call"
            started = time.monotonic()
            try:
                if self.git is not None:
                    self._git_repack(merge)
                else:
                    self._dulwich_repack(merge)
            except Exception as e:
                self._retry_at = time.monotonic() + RETRY_AFTER
                log.error("housekeeping of the clone at %s failed (repacking for %s): %s; every "
                          "object is still in the clone, gitdns goes on serving and committing, "
                          "next attempt in %.0f s", self.repo.path, why,
                          e if isinstance(e, RepackError | OSError) else repr(e), RETRY_AFTER,
                          exc_info=not isinstance(e, RepackError | OSError))
                return False
            finally:
                # Whatever happened, dulwich forgets the packs and loose objects it knew.
                self.repo.reopen()
                after = self._recount()
            self._left = replace(after, packs=after.packs if merge else self._left.packs)
            self._retry_at = 0.0
            self.runs += 1
            log.info("repacked the clone at %s (%s) with %s: %d loose objects (%s) and %d "
                     "packs (%s) -> %d loose (%s) and %d packs (%s) in %.1f s", self.repo.path,
                     why, "git" if self.git else "dulwich", before.loose,
                     _mb(before.loose_bytes), before.packs, _mb(before.pack_bytes),
                     after.loose, _mb(after.loose_bytes), after.packs, _mb(after.pack_bytes),
                     time.monotonic() - started)
            return True

    def abort(self) -> None:
        """Stop a repack running in another thread (the server is stopping); it fails, and
        loses nothing, as on a timeout."""
        with self._guard:
            self._stopping = True
            if self._proc is not None:
                _kill_group(self._proc)

    def _git(self, *args: str) -> None:
        """Run one git command in the clone, bounded by the timeout; RepackError if it fails."""
        assert self.git is not None
        argv = [
            self.git, "-C", str(self.repo.path),
            "-c", "safe.directory=*",  # the data directory may belong to another user
            "-c", "gc.auto=0",
            # One core, the others keep answering; and a bounded delta window: 25 versions of a
            # 32 MB zone take 2 s and 150 MB (12 s and 730 MB with git's unbounded window,
            # twice the memory with a thread per core), for the same pack (deltas of ~1 KB).
            "-c", "pack.threads=1", "-c", "pack.windowMemory=64m",
            # Packs are on disk before anything is deleted (git's default, made sure of).
            "-c", "core.fsync=objects,derived-metadata", "-c", "core.fsyncMethod=fsync",
            *args,
        ]
        shown = "git " + " ".join(args)
        with self._guard:
            if self._stopping:
                raise RepackError(f"`{shown}` not started: gitdns is stopping")
            # Its own process group: pack-objects, its child, goes with it on a timeout.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=_git_env(),
                                    start_new_session=True)
            self._proc = proc
        try:
            try:
                _, err = proc.communicate(timeout=self.limits.timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                try:
                    _, err = proc.communicate(timeout=30)
                except subprocess.TimeoutExpired:  # a child left the group and holds stderr
                    err = b""
                raise RepackError(f"`{shown}` took more than {self.limits.timeout:.0f} s and "
                                  f"was killed{_stderr(err)}") from None
        finally:
            with self._guard:
                self._proc = None
        if proc.returncode != 0:
            how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with status {proc.returncode}")
            raise RepackError(f"`{shown}` {how}{_stderr(err)}")

    def _git_repack(self, merge: bool) -> None:
        """git's gc --auto, without its pruning: the loose objects into a new pack (deltas
        against each other), or every pack and loose object into one (existing deltas reused).
        Unreachable objects are never dropped: loose ones stay loose, packed ones are loosened
        (-A), so a dropped commit is still there for the operator."""
        if merge:
            self._git("repack", "-A", "-d", "-q", "-l")
        else:
            self._git("repack", "-q", "-l")  # no -d: nothing is deleted before the fsync below
        fsync_path(self.objects_dir / "pack")
        self._git("prune-packed", "-q")

    def _dulwich_repack(self, merge: bool) -> None:
        """Without git: the loose objects (and, when merging, every packed one) copied into one
        new pack, fsync'd; only then are the loose objects and old packs it holds deleted."""
        log.warning("repacking the clone at %s with dulwich (no git on PATH): its packs are "
                    "not delta-compressed, so they stay about as big as the loose objects were",
                    self.repo.path)
        store = self.repo.dulwich_repo().object_store
        pack_dir = self.objects_dir / "pack"
        loose = [sha for sha, _ in loose_objects(self.objects_dir)]
        shas = set(loose)
        old_packs = _pack_names(pack_dir) if merge else []
        if merge:
            for pack in store.packs:  # type: ignore[attr-defined]
                shas.update(sha.decode() for sha in pack)
        _dulwich_pack(store, sorted(shas), pack_dir)  # type: ignore[arg-type]
        for name in old_packs:
            for ext in (".pack", ".idx"):
                (pack_dir / (name + ext)).unlink(missing_ok=True)
        for sha in loose:
            (self.objects_dir / sha[:2] / sha[2:]).unlink(missing_ok=True)


def _dulwich_pack(store: DiskObjectStore, shas: list[str], pack_dir: Path) -> None:
    """One pack of `shas`, made durable. Each object is read as dulwich writes it, so memory
    holds one object at a time (a big zone's versions are tens of MB each), not all of them."""
    if not shas:
        return

    class _Objects:
        """The (object, path) sequence dulwich's add_objects takes, read lazily."""

        def __len__(self) -> int:
            return len(shas)

        def __iter__(self) -> Iterator[tuple[ShaFile, None]]:
            for sha in shas:
                yield store[sha.encode()], None

    store.add_objects(_Objects())  # type: ignore[arg-type]
    fsync_path(pack_dir)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stderr(err: bytes | None) -> str:
    text = (err or b"").decode("utf-8", errors="replace").strip()
    return f": {text}" if text else " (nothing on stderr)"
