"""The write side of the zone clone: durable commits, pushes, and catching up with the remote.

Rules this module keeps:
- A commit is on disk before `commit_files` returns: its object files, the branch ref and the
  directories holding them are fsync'd, so an UPDATE answered NOERROR survives a power cut.
- The remote never makes these functions raise: `push` says ok / rejected / unreachable. Local
  commits are only dropped by `reset_to_remote`, which returns them (keep them with `save_branch`).
- Everything runs under the GitRepo's lock, on its dulwich Repo (one writer at a time).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

from dulwich.errors import ObjectFormatException
from dulwich.index import index_entry_from_stat
from dulwich.objects import ZERO_SHA, Blob, Commit, ShaFile, Tree
from dulwich.pack import UnpackedObject
from dulwich.refs import check_ref_format
from dulwich.repo import Repo

from gitdns.durable import fsync_path
from gitdns.gitrepo import (
    GitError,
    GitRepo,
    _cause,
    _checkout,
    _display,
    _short,
    _transport_errors,
    log,
)

_HEADS = b"refs/heads/"
_TRACKING = b"refs/remotes/origin/"
UNMERGED_PREFIX = b"refs/heads/gitdns/unmerged/"
_FILE_MODE = 0o100644

#: Words in a server's "ng" reason that mean the remote branch moved under us (git's
#: receive-pack, git's lock failure, dulwich's local and http servers).
_MOVED = (
    "non-fast-forward",
    "fetch first",
    "stale info",
    "failed to update ref",
    "failed to lock",
    "cannot lock",
    "unable to set",
    "atomic push failed",
)

PushStatus = Literal["ok", "rejected", "unreachable"]


@dataclass(frozen=True)
class PushResult:
    """What a push did.

    ok: the remote branch is at `commit`. rejected: the remote moved on (another writer pushed):
    fetch, `reset_to_remote`, redo the change, push again. unreachable: nothing changed on the
    remote (network, login, host key, or the server refused for another reason, see `error`);
    the commit stays local, try again later.
    """

    status: PushStatus
    commit: bytes
    ref: bytes
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# -- durability ---------------------------------------------------------------------------------


def _loose_path(repo: Repo, sha: bytes) -> str:
    hexsha = sha.decode("ascii")
    return os.path.join(repo.object_store.path, hexsha[:2], hexsha[2:])  # type: ignore[attr-defined]


def _write_objects(repo: Repo, objects: list[ShaFile]) -> tuple[int, int]:
    """Add `objects` as loose objects and make them durable (files, their folders, objects/,
    and objects/pack/ for the packs the new commit builds on). Returns how many were written
    and their bytes on disk, for housekeeping's count."""
    store = repo.object_store
    # zlib level 1: a third of level 6's time on a big zone file for 15% more bytes; every
    # fold writes the whole file anew (git reads any level, and housekeeping.py repacks).
    store.loose_compression_level = 1  # type: ignore[attr-defined]
    dirs: set[str] = set()
    written = nbytes = 0
    for obj in objects:
        if obj.id in store:
            continue  # already there, made durable when it was written or fetched
        store.add_object(obj)
        path = _loose_path(repo, obj.id)
        fsync_path(path)
        written += 1
        nbytes += os.path.getsize(path)
        dirs.add(os.path.dirname(path))
    for d in sorted(dirs):
        fsync_path(d)
    if dirs:
        fsync_path(store.path)  # type: ignore[attr-defined]
    # The parent commit may sit in a pack a fetch renamed into objects/pack/ moments ago.
    packs = os.path.join(store.path, "pack")  # type: ignore[attr-defined]
    if os.path.isdir(packs):
        fsync_path(packs)
    return written, nbytes


def _fsync_ref(repo: Repo, ref: bytes) -> None:
    """Make the loose ref file `ref` durable: the file, and each folder from its own up to
    .git (a new refs/heads/gitdns/unmerged/ folder is a new name in its parent)."""
    path = os.path.join(repo.controldir(), os.fsdecode(ref))
    if not os.path.exists(path):
        return  # packed only: nothing was written
    fsync_path(path)
    top = os.path.abspath(repo.controldir())
    folder = os.path.dirname(os.path.abspath(path))
    while True:
        fsync_path(folder)
        if folder == top or len(folder) <= len(top):
            break
        folder = os.path.dirname(folder)


# -- committing ---------------------------------------------------------------------------------


def _check_name(name: str) -> bytes:
    """A top-level file name of the zone repository, as git stores it."""
    if not name or "/" in name or "\0" in name or name in (".", "..", ".git"):
        raise GitError(f"{name!r} is not a top-level file name")
    return name.encode("utf-8")


def _write_work_file(repo: Repo, name: bytes, content: bytes, mode: int) -> os.stat_result:
    """Replace the working-tree file atomically (a reader never sees half a zone file)."""
    path = os.path.join(repo.path, os.fsdecode(name))
    tmp = os.path.join(repo.path, "." + os.fsdecode(name) + ".gitdns-tmp")
    perm = 0o777 if mode & 0o111 else 0o666  # the umask applies, as for git
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, perm)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return os.lstat(path)


def _update_work_tree(
    r: Repo, tree: Tree, names: Mapping[bytes, bytes | None], modes: Mapping[bytes, int]
) -> None:
    """Write (or delete) the changed files and their index entries."""
    index = r.open_index()
    for name, content in names.items():
        path = os.path.join(r.path, os.fsdecode(name))
        if content is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            if name in index:
                del index[name]
            continue
        st = _write_work_file(r, name, content, modes[name])
        index[name] = index_entry_from_stat(st, tree[name][1], modes[name])
    index.write()


def commit_files(
    repo: GitRepo,
    changes: Mapping[str, bytes | None],
    message: str,
    author: bytes,
    committer: bytes | None = None,
) -> bytes:
    """Commit `changes` (top-level file name -> new content, None deletes) on the local branch,
    update index and working tree, and return the new commit id (hex).

    Durable before it returns (see `_write_objects`, `_fsync_ref`), so the caller may then answer
    the UPDATE. When nothing changes (same contents), no commit is made and HEAD is returned.
    A file keeps its mode (an executable stays executable); new files are 0644.
    """
    names = {_check_name(n): c for n, c in changes.items()}
    with repo.lock:
        r = repo.dulwich_repo()
        parent = repo.head()
        ref = _HEADS + repo.branch
        if r.refs.get_symrefs().get(b"HEAD") != ref:
            raise GitError(f"the clone at {repo.path} does not have {ref.decode()} checked out")
        parent_commit = r[parent]
        if not isinstance(parent_commit, Commit):
            raise GitError(f"HEAD of {repo.path} is not a commit")
        old_tree = r[parent_commit.tree]
        assert isinstance(old_tree, Tree)
        tree = Tree()
        for entry in old_tree.iteritems():
            tree.add(entry.path, entry.mode, entry.sha)
        blobs: list[ShaFile] = []
        modes: dict[bytes, int] = {}
        for name, content in names.items():
            try:
                existing: tuple[int, bytes] | None = old_tree[name]
            except KeyError:
                existing = None
            if existing is not None and not stat.S_ISREG(existing[0]):
                raise GitError(
                    f"{name.decode()} in {repo.path} is not a regular file; not changing it"
                )
            if content is None:
                if existing is not None:
                    del tree[name]
                continue
            blob = Blob.from_string(content)
            modes[name] = existing[0] if existing is not None else _FILE_MODE
            tree[name] = (modes[name], blob.id)
            blobs.append(blob)
        if tree.id == old_tree.id:
            return parent

        now = int(time.time())
        offset = time.localtime(now).tm_gmtoff
        commit = Commit()
        commit.tree = tree.id
        commit.parents = [parent]
        commit.author = author
        commit.committer = committer if committer is not None else author
        commit.author_time = commit.commit_time = now
        commit.author_timezone = commit.commit_timezone = offset
        commit.message = (
            message.encode("utf-8") if message.endswith("\n") else (message + "\n").encode("utf-8")
        )
        try:
            commit.check()
        except ObjectFormatException as e:
            raise GitError(f"cannot commit to {repo.path}: {e}") from e

        repo.written.add(*_write_objects(r, [*blobs, tree, commit]))
        subject = message.splitlines()[0] if message else ""
        if not r.refs.set_if_equals(
            ref, parent, commit.id, message=b"commit: " + subject.encode("utf-8")
        ):
            raise GitError(f"{ref.decode()} in {repo.path} moved while committing")
        _fsync_ref(r, ref)

        # Index and working tree follow HEAD (the git command sees a clean clone). The commit is
        # made and durable by now: failing here must not make the caller think it was not.
        try:
            _update_work_tree(r, tree, names, modes)
        except OSError as e:
            log.error(
                "%s: committed %s, but the working tree was not updated (%s); "
                "`git reset --hard` in the clone repairs it",
                repo.path,
                _short(commit.id),
                e.strerror or e,
            )
        log.info(
            "%s: committed %s on %s: %s",
            repo.path,
            _short(commit.id),
            repo.branch.decode(),
            subject,
        )
        return commit.id


# -- pushing ------------------------------------------------------------------------------------


def _classify_ng(reason: str) -> PushStatus:
    low = reason.lower()
    return "rejected" if any(word in low for word in _MOVED) else "unreachable"


def check_diverged(repo: Repo, current: bytes, new: bytes) -> None:
    """Raise dulwich's DivergedBranches unless `new` contains `current` (a fast-forward).

    dulwich.porcelain's, imported at the first push rather than with this module: its imports
    cost a start 30 ms (a start with a big zone is measured against BIND's), and only a push
    needs it. A name of this module, so a test can skip the client-side check.
    """
    from dulwich.porcelain import check_diverged as porcelain_check_diverged

    porcelain_check_diverged(repo, current, new)


def _push_ref(repo: GitRepo, commit: bytes, remote_ref: bytes) -> PushResult:
    """Push `commit` to `remote_ref` on the remote, fast-forward only.

    The network exchange reads objects through a Repo of its own and holds no lock: a remote
    that is slow or down must not stall the commits of new updates (they only add objects, and
    the objects of `commit` never change). The lock is taken again to move the tracking ref.
    """
    # Here rather than at module import: see `check_diverged`.
    from dulwich.porcelain import DivergedBranches

    where = _display(repo.remote)
    r = Repo(str(repo.path))
    try:
        def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
            old = refs.get(remote_ref)
            if old and old != ZERO_SHA and old != commit:
                check_diverged(r, old, commit)  # DivergedBranches: the remote moved on
            return {remote_ref: commit}

        def generate_pack_data(
            have: AbstractSet[bytes],
            want: AbstractSet[bytes],
            *,
            ofs_delta: bool = False,
            progress: Callable[..., None] | None = None,
        ) -> tuple[int, Iterator[UnpackedObject]]:
            return r.generate_pack_data(
                set(have), set(want), progress=progress, ofs_delta=ofs_delta
            )

        try:
            client, path = repo.client_and_path()
            result = client.send_pack(path.encode(), update_refs, generate_pack_data)
        except DivergedBranches as e:
            current = e.current_sha if isinstance(e.current_sha, bytes) else None
            text = (
                f"git remote {where} has {remote_ref.decode()} at {_short(current)}, which "
                f"{_short(commit)} does not contain (another writer pushed first)"
            )
            log.warning("push rejected: %s", text)
            return PushResult("rejected", commit, remote_ref, text)
        except GitError as e:
            log.warning("push failed: %s", e)
            return PushResult("unreachable", commit, remote_ref, str(e))
        except _transport_errors() as e:
            text = f"cannot reach git remote {where}: {_cause(repo.remote, e)}"
            log.warning("push failed: %s", text)
            return PushResult("unreachable", commit, remote_ref, text)
    finally:
        r.close()
    failed = {ref: why for ref, why in (result.ref_status or {}).items() if why is not None}
    if failed:
        why = failed.get(remote_ref) or next(iter(failed.values()))
        status = _classify_ng(why)
        text = f"git remote {where} refused {remote_ref.decode()}: {why}"
        log.warning("push %s: %s", status, text)
        return PushResult(status, commit, remote_ref, text)
    if remote_ref.startswith(_HEADS):
        with repo.lock:
            repo.dulwich_repo().refs[_TRACKING + remote_ref[len(_HEADS) :]] = commit
    log.info("pushed %s to %s %s", _short(commit), where, remote_ref.decode())
    return PushResult("ok", commit, remote_ref)


def push(repo: GitRepo) -> PushResult:
    """Push the local branch to the same branch on the remote (fast-forward only) and, when it
    worked, move refs/remotes/origin/BRANCH along. Never raises for the remote's sake."""
    with repo.lock:
        head = repo.head()
    return _push_ref(repo, head, _HEADS + repo.branch)


# -- catching up with the remote ----------------------------------------------------------------


def _remote_tip(repo: GitRepo) -> bytes | None:
    r = repo.dulwich_repo()
    try:
        tip = r.refs[_TRACKING + repo.branch]
    except KeyError:
        return None
    return tip if tip in r.object_store else None


def ahead_of_remote(repo: GitRepo) -> list[bytes]:
    """Local commits (hex, newest first) not on refs/remotes/origin/BRANCH as last fetched or
    pushed: what a push still has to deliver, or what `reset_to_remote` would drop."""
    with repo.lock:
        r = repo.dulwich_repo()
        tip = _remote_tip(repo)
        walker = r.get_walker(include=[repo.head()], exclude=[tip] if tip else None)
        return [entry.commit.id for entry in walker]


def reset_to_remote(repo: GitRepo) -> list[bytes]:
    """Hard-reset branch, HEAD, index and working tree to refs/remotes/origin/BRANCH (fetch
    first) and return the local commits this dropped, newest first (logged), so the caller can
    redo their changes on top and keep them with `save_branch`."""
    with repo.lock:
        tip = _remote_tip(repo)
        if tip is None:
            raise GitError(
                f"the clone at {repo.path} has no refs/remotes/origin/{repo.branch.decode()}; "
                "fetch first"
            )
        dropped = ahead_of_remote(repo)
        r = repo.dulwich_repo()
        if repo.head() != tip:
            _checkout(r, tip)
            _fsync_ref(r, _HEADS + repo.branch)
        if dropped:
            log.warning(
                "%s: reset %s to the remote's %s, dropping local commit(s) %s",
                repo.path,
                repo.branch.decode(),
                _short(tip),
                ", ".join(
                    f"{_short(c)} ({' '.join(commit_message_lines(repo, c)[:1])})" for c in dropped
                ),
            )
        return dropped


def save_branch(repo: GitRepo, name: str, commit: bytes) -> PushResult:
    """Keep `commit` as refs/heads/gitdns/unmerged/NAME, locally and (best effort) on the remote,
    so a change that could not be replayed is still there for the operator to merge by hand.

    Choose a NAME not used before (a time stamp and the commit's short id): an existing remote
    branch elsewhere is not overwritten (the push is "rejected")."""
    ref = UNMERGED_PREFIX + name.encode("utf-8")
    if not check_ref_format(ref[len(b"refs/") :]):
        raise GitError(f"{name!r} is not a valid branch name")
    with repo.lock:
        r = repo.dulwich_repo()
        if commit not in r.object_store:
            raise GitError(f"the clone at {repo.path} has no commit {_short(commit)}")
        r.refs[ref] = commit
        _fsync_ref(r, ref)
    return _push_ref(repo, commit, ref)


# -- reading commits ----------------------------------------------------------------------------


def _commit(repo: GitRepo, commit: bytes) -> Commit:
    obj = repo.dulwich_repo()[commit]
    if not isinstance(obj, Commit):
        raise GitError(f"{_short(commit)} in {repo.path} is not a commit")
    return obj


def commit_message_lines(repo: GitRepo, commit: bytes) -> list[str]:
    """The message of `commit`, line by line (the first is the subject)."""
    with repo.lock:
        return _commit(repo, commit).message.decode("utf-8", errors="replace").splitlines()


def changed_files(repo: GitRepo, commit: bytes) -> dict[str, bytes | None]:
    """The top-level files `commit` changed against its first parent: name -> new content (None:
    deleted). What a dropped commit did, to redo it on the remote's history."""
    with repo.lock:
        r = repo.dulwich_repo()
        obj = _commit(repo, commit)
        new = r[obj.tree]
        old = r[_commit(repo, obj.parents[0]).tree] if obj.parents else Tree()
        assert isinstance(new, Tree) and isinstance(old, Tree)
        before = {e.path: e.sha for e in old.iteritems() if stat.S_ISREG(e.mode)}
        after = {e.path: e.sha for e in new.iteritems() if stat.S_ISREG(e.mode)}
        changes: dict[str, bytes | None] = {}
        for name in sorted(before.keys() | after.keys()):
            if before.get(name) == after.get(name):
                continue
            key = name.decode("utf-8", errors="replace")
            changes[key] = r[after[name]].as_raw_string() if name in after else None
        return changes
