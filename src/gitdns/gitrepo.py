"""The git edge of the server: clone or reuse the zone repository, fetch, fast-forward, read blobs.

Rules this module keeps:
- A clone at `path` is never deleted or overwritten: a clone of another remote, or a directory that
  is not a clone, is refused with a GitError. A new clone is built beside `path` and renamed into
  place, so a failed clone leaves nothing behind and a half-made clone is never served.
- The branch and the working tree only ever move forward (fast-forward); local commits the remote
  lacks are kept. When the remote cannot be reached, an existing clone is served as it is.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from dulwich.client import (
    FetchPackResult,
    GitClient,
    HTTPProxyUnauthorized,
    HTTPUnauthorized,
    default_local_git_client_cls,
    get_transport_and_path,
)
from dulwich.config import ConfigDict
from dulwich.errors import GitProtocolError, NotGitRepository
from dulwich.graph import can_fast_forward
from dulwich.index import index_entry_from_tree_entry
from dulwich.objects import S_ISGITLINK, Blob, Commit, Tree
from dulwich.repo import Repo

from gitdns.sshvendor import RemoteAuth, SSHError

log = logging.getLogger("gitdns.git")

_Obj = TypeVar("_Obj", Commit, Tree, Blob)

#: Seconds an HTTP(S) remote may stay silent before a fetch gives up; the server retries later.
NETWORK_TIMEOUT = 30.0

_HEAD = b"HEAD"
_HEADS = b"refs/heads/"
_ORIGIN = b"origin"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git+ssh": 22, "git": 9418}

#: What any transport raises when the remote is down, missing, refuses us or talks nonsense
#: (SSHError: our host key and login checks over ssh); `_transport_errors` adds the rest.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    GitProtocolError,
    NotGitRepository,
    HTTPUnauthorized,
    HTTPProxyUnauthorized,
    SSHError,
)
#: The modules whose errors a transport also raises, and the error each one's failures share.
#: They are not imported here: urllib3 (http remotes) and paramiko (ssh, with invoke) cost a start
#: about 0.15 s, a start with a big zone is measured against BIND's, and dulwich and sshvendor
#: import them only for a remote that needs them.
_LAZY_TRANSPORT_ERRORS = (("urllib3.exceptions", "HTTPError"), ("paramiko", "SSHException"))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The classes to catch around a fetch or push: `_TRANSPORT_ERRORS`, and urllib3's HTTPError
    and paramiko's SSHException once their modules are loaded.

    Call it in the `except` clause: Python evaluates that tuple only when an exception reaches
    it, and an exception of a module not loaded by then cannot have been raised, so looking the
    module up in sys.modules (rather than importing it) misses nothing.
    """
    errors = _TRANSPORT_ERRORS
    for module_name, class_name in _LAZY_TRANSPORT_ERRORS:
        error = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            errors += (error,)
    return errors


class GitError(Exception):
    """A git operation failed; the message says what the operator should check."""


@dataclass
class WriteTally:
    """Loose objects written into the clone (and their bytes on disk) since it was opened:
    housekeeping adds them to its one count of objects/ rather than walking it per commit."""

    objects: int = 0
    bytes: int = 0

    def add(self, objects: int, nbytes: int) -> None:
        self.objects += objects
        self.bytes += nbytes


def _configure(repo: Repo) -> Repo:
    """The object store settings every Repo of the server's clone gets."""
    # Packs from fetches are fsync'd too: a commit made on top of them must survive a crash.
    repo.object_store.fsync_object_files = True  # type: ignore[attr-defined]
    # Fetched packs are written at zlib level 1: a third of the default level's time for a
    # big zone file (a reload waits for it) and about 15% more bytes; housekeeping repacks.
    repo.object_store.pack_compression_level = 1  # type: ignore[attr-defined]
    return repo


def _is_local_path(remote: str) -> bool:
    """git's rule: no `scheme://`, and no `host:` before the first slash, means a local path.

    dulwich alone would read `/srv/a:b` as the ssh host `/srv/a`.
    """
    if "://" in remote:
        return False
    colon = remote.find(":")
    return colon < 0 or "/" in remote[:colon]


def _client_and_path(remote: str, auth: RemoteAuth | None = None) -> tuple[GitClient, str]:
    """The dulwich client and the path on the remote for `remote`; the one place a transport is
    chosen, so ssh (key, pinned host key) and http logins are added here alone."""
    if _is_local_path(remote):
        return default_local_git_client_cls(), str(Path(remote).expanduser().absolute())
    auth = auth or RemoteAuth(timeout=NETWORK_TIMEOUT)
    config = ConfigDict()
    config.set((b"http",), b"timeout", str(NETWORK_TIMEOUT).encode())
    try:
        client, path = get_transport_and_path(
            remote, config=config, quiet=True, **auth.client_kwargs(remote)
        )
    except ValueError as e:
        raise GitError(f"unsupported git remote {_display(remote)}: {e}") from e
    return auth.prepare(client), path


def _display(remote: str) -> str:
    """`remote` with any password replaced, fit for logs and error messages."""
    if _is_local_path(remote):
        return remote
    parts = urlsplit(remote)
    if parts.password is None:
        return remote
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _remote_key(remote: str) -> tuple[object, ...]:
    """What identifies a remote: two spellings of one repository (relative and absolute path,
    `file://` URL, a changed password, a default port) compare equal."""
    if _is_local_path(remote):
        return ("file", str(Path(remote).expanduser().resolve()))
    parts = urlsplit(remote)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return ("file", str(Path(unquote(parts.path)).resolve()))
    if not scheme:  # scp-like user@host:path
        user_host, _, path = remote.partition(":")
        user, _, host = user_host.rpartition("@")
        return ("ssh", user or None, host.lower(), 22, path.rstrip("/"))
    if scheme == "git+ssh":
        scheme = "ssh"
    return (
        scheme,
        parts.username,
        (parts.hostname or "").lower(),
        parts.port or _DEFAULT_PORTS.get(scheme),
        parts.path.rstrip("/"),
    )


def _stored_location(remote: str) -> str:
    """What goes into the clone's `remote.origin.url`: a local path made absolute, so the clone
    still finds its remote when the server is started from another directory."""
    if _is_local_path(remote):
        return str(Path(remote).expanduser().absolute())
    return remote


def _cause(remote: str, e: BaseException) -> str:
    """The underlying reason, in the words an operator knows (strerror rather than a repr)."""
    if isinstance(e, NotGitRepository):
        key = _remote_key(remote)
        if key[0] == "file" and not os.path.exists(str(key[1])):
            return os.strerror(errno.ENOENT)
        return "not a git repository"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _short(commit: bytes | None) -> str:
    return commit[:7].decode() if commit else "(none)"


def _pick_branch(result: FetchPackResult, remote: str) -> bytes:
    """The branch a clone follows when none was asked for: the remote's HEAD, else main, else
    master (what an operator who never named a branch expects)."""
    refs = result.refs
    target = result.symrefs.get(_HEAD)
    if target and target.startswith(_HEADS) and refs.get(target):
        return target[len(_HEADS) :]
    head = refs.get(_HEAD)
    if head:  # no symref advertised (old server, dumb http): the branch HEAD points at
        same = sorted(r for r, sha in refs.items() if r.startswith(_HEADS) and sha == head)
        if len(same) == 1:
            return same[0][len(_HEADS) :]
    for name in (b"main", b"master"):
        if refs.get(_HEADS + name):
            return name
    branches = sorted(
        r[len(_HEADS) :].decode(errors="replace") for r in refs if r.startswith(_HEADS)
    )
    if not branches:
        raise GitError(f"git remote {_display(remote)} has no branches (an empty repository?)")
    raise GitError(
        f"git remote {_display(remote)} has no HEAD, main or master branch; "
        f"choose one of {', '.join(branches)} with --branch"
    )


def _fetch(
    repo: Repo, remote: str, branch: bytes | None, auth: RemoteAuth | None = None
) -> tuple[FetchPackResult, bytes | None]:
    """Fetch `branch` (None: the candidates for the default branch) of `remote` into `repo`.

    Returns the fetch result and the branch's remote tip (None when the remote lacks it).
    Only the wanted branch is transferred: a zone repository's other branches are not ours.
    """
    client, path = _client_and_path(remote, auth)
    if branch is None:
        names = [_HEAD, _HEADS + b"main", _HEADS + b"master"]
        prefixes = [_HEAD, _HEADS]
    else:
        names = [_HEADS + branch]
        prefixes = names

    def determine_wants(refs: dict[bytes, bytes], depth: int | None = None) -> list[bytes]:
        wants = {refs[n] for n in names if refs.get(n)}
        return [sha for sha in wants if sha not in repo.object_store]

    try:
        result = client.fetch(path, repo, determine_wants=determine_wants, ref_prefix=prefixes)
    except _transport_errors() as e:
        raise GitError(f"cannot reach git remote {_display(remote)}: {_cause(remote, e)}") from e
    tip = result.refs.get(_HEADS + branch) if branch is not None else None
    return result, tip


def _checkout(repo: Repo, commit: bytes) -> None:
    """Move HEAD's branch, the index and the working tree to `commit` (git reset --hard).

    dulwich 1.2 records a submodule (gitlink) in the index as a directory entry and leaves a
    `.git` placeholder pointing at a missing `.git/modules/...`: the git command then fails
    in that clone, and a later dulwich commit writes a tree entry for a missing tree (a corrupt
    commit that would be pushed). Both are repaired here, so the clone is what git would make.
    """
    from dulwich import porcelain  # here: its imports cost a start 50 ms, and only moves need it

    porcelain.reset(repo, "hard", commit)
    tree = repo[commit].tree  # type: ignore[attr-defined]
    gitlinks = [e for e in repo.object_store.iter_tree_contents(tree) if S_ISGITLINK(e.mode)]
    if not gitlinks:
        return
    index = repo.open_index()
    for entry in gitlinks:
        index[entry.path] = index_entry_from_tree_entry(entry.mode, entry.sha)
        placeholder = Path(repo.path, os.fsdecode(entry.path), ".git")
        if placeholder.is_file():
            gitdir = placeholder.read_text().removeprefix("gitdir:").strip()
            if not (placeholder.parent / gitdir).exists():
                placeholder.unlink()
    index.write()


class GitRepo:
    """A non-bare clone of the zone repository whose working tree follows HEAD.

    Methods are blocking and serialized by a lock: the server calls them from a worker thread,
    and dulwich's object store is not meant for concurrent use.
    """

    path: Path
    remote: str
    branch: bytes

    def __init__(
        self, path: Path, remote: str, branch: bytes, repo: Repo, auth: RemoteAuth | None = None
    ) -> None:
        """Wrap an open clone; use `open_or_clone` rather than calling this."""
        self.path = path
        self.remote = remote
        self.branch = branch
        self._repo: Repo | None = _configure(repo)
        #: What gitwrite's commits added as loose objects (housekeeping.py reads it).
        self.written = WriteTally()
        self._auth = auth or RemoteAuth(timeout=NETWORK_TIMEOUT)
        self._lock = threading.RLock()

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open_or_clone(
        cls,
        remote: str,
        path: Path,
        branch: str | None = None,
        *,
        ssh_key: str | None = None,
        ssh_authenticator: str | None = None,
        credentials_file: str | None = None,
    ) -> GitRepo:
        """Clone `remote` into `path`, or reuse the clone already there (after a restart).

        When a clone exists, try to fetch + fast-forward; if the remote is unreachable, log a
        WARNING (logger "gitdns.git") saying we serve from the local clone at commit X, and
        return it. If no clone exists and the remote is unreachable: raise GitError.
        If `path` holds a clone of a *different* remote, raise GitError saying so (never delete
        it). `branch` None means the remote's default branch (HEAD), falling back to main/master;
        for an existing clone, None keeps the branch it has checked out.

        ssh remotes need `ssh_key` (a private key file, or the seeds' `ed25519:BASE64SEED`) and
        `ssh_authenticator` (the server's `SHA256:` host key fingerprint); http(s) remotes may take
        their USER:PASSWORD from `credentials_file` rather than from the URL.
        """
        path = Path(path)
        want = branch.encode() if branch is not None else None
        try:
            auth = RemoteAuth.load(ssh_key, ssh_authenticator, credentials_file, NETWORK_TIMEOUT)
        except ValueError as e:
            raise GitError(str(e)) from e
        if (path / ".git").exists():
            return cls._reopen(remote, path, want, auth)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise GitError(
                f"{path} exists and is not a git clone; refusing to clone {_display(remote)} "
                "over it (move it away or choose another directory)"
            )
        return cls._clone(remote, path, want, auth)

    @classmethod
    def _clone(
        cls, remote: str, path: Path, branch: bytes | None, auth: RemoteAuth | None = None
    ) -> GitRepo:
        """A fresh clone, built in a temporary directory beside `path` and renamed into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkdtemp makes the directory 0700, and the rename keeps that: the clone holds TSIG secrets.
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.clone-", dir=path.parent))
        try:
            repo = Repo.init(str(tmp))
            try:
                try:
                    result, tip = _fetch(repo, remote, branch, auth)
                except GitError as e:
                    raise GitError(f"{e}; there is no local clone at {path} to serve from") from e
                if branch is None:
                    branch = _pick_branch(result, remote)
                    tip = result.refs.get(_HEADS + branch)
                if not tip:
                    raise GitError(f"git remote {_display(remote)} has no branch {branch.decode()}")
                config = repo.get_config()
                config.set((b"remote", _ORIGIN), b"url", _stored_location(remote).encode())
                config.set((b"remote", _ORIGIN), b"fetch", b"+refs/heads/*:refs/remotes/origin/*")
                config.set((b"branch", branch), b"remote", _ORIGIN)
                config.set((b"branch", branch), b"merge", _HEADS + branch)
                config.write_to_path()
                repo.refs[b"refs/remotes/origin/" + branch] = tip
                repo.refs[_HEADS + branch] = tip
                repo.refs.set_symbolic_ref(_HEAD, _HEADS + branch)
                _checkout(repo, tip)
            finally:
                repo.close()
            if path.exists():
                path.rmdir()  # an empty directory the operator made for us
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "cloned %s (branch %s) into %s at %s",
            _display(remote),
            branch.decode(),
            path,
            _short(tip),
        )
        return cls(path, remote, branch, Repo(str(path)), auth)

    @classmethod
    def _reopen(
        cls, remote: str, path: Path, branch: bytes | None, auth: RemoteAuth | None = None
    ) -> GitRepo:
        """Reuse the clone at `path` after checking it is a clone of `remote`, then bring it up to
        date if the remote can be reached."""
        try:
            repo = Repo(str(path))
        except NotGitRepository as e:
            raise GitError(f"{path} has a .git but is not a git repository: {e}") from e
        self = cls(path, remote, b"", repo, auth)
        try:
            config = repo.get_config()
            try:
                stored = config.get((b"remote", _ORIGIN), b"url").decode()
            except KeyError:
                raise GitError(
                    f"{path} is a git repository without an 'origin' remote, not a clone of "
                    f"{_display(remote)}; move it away or choose another directory"
                ) from None
            if _remote_key(stored) != _remote_key(remote):
                raise GitError(
                    f"{path} is a clone of {_display(stored)}, not of {_display(remote)}; "
                    "move it away or choose another directory (it is left untouched)"
                )
            if stored != _stored_location(remote):  # same repository, new spelling or password
                config.set((b"remote", _ORIGIN), b"url", _stored_location(remote).encode())
                config.write_to_path()
            target = repo.refs.get_symrefs().get(_HEAD)
            if not target or not target.startswith(_HEADS) or _HEAD not in repo.refs:
                raise GitError(
                    f"the clone at {path} has no branch checked out (detached or empty HEAD); "
                    "check it out by hand or move it away"
                )
            self.branch = target[len(_HEADS) :]
            if branch is not None and branch != self.branch:
                self._switch_branch(branch)
            try:
                self.fast_forward()
            except GitError as e:
                log.warning("%s; serving from the local clone at %s", e, _short(self.head()))
        except BaseException:
            self.close()
            raise
        return self

    def _switch_branch(self, branch: bytes) -> None:
        """Check out `branch` (the operator changed --branch); the old branch's ref is kept, so
        commits not yet pushed from it are not lost."""
        repo = self._open()
        ref = _HEADS + branch
        if ref not in repo.refs:
            _, tip = _fetch(repo, self.remote, branch, self._auth)
            if not tip:
                raise GitError(
                    f"git remote {_display(self.remote)} has no branch {branch.decode()}"
                )
            repo.refs[b"refs/remotes/origin/" + branch] = tip
            repo.refs[ref] = tip
        log.info(
            "%s: switching from branch %s to %s", self.path, self.branch.decode(), branch.decode()
        )
        repo.refs.set_symbolic_ref(_HEAD, ref)
        self.branch = branch
        # The index still describes the old branch's tree, so this also removes its files.
        _checkout(repo, repo.refs[ref])

    # -- the operations the server uses --------------------------------------------------------

    def fetch(self) -> bytes | None:
        """Fetch the branch into refs/remotes/origin/BRANCH; return the remote tip (hex), or None
        when the remote no longer has the branch (logged). Raises GitError when unreachable."""
        with self._lock:
            repo = self._open()
            _, tip = _fetch(repo, self.remote, self.branch, self._auth)
            if not tip:
                log.warning(
                    "git remote %s has no branch %s; keeping the local clone at %s",
                    _display(self.remote),
                    self.branch.decode(),
                    _short(self.head()),
                )
                return None
            repo.refs[b"refs/remotes/origin/" + self.branch] = tip
            return tip

    def fast_forward(self) -> bool:
        """Fetch, then move branch, HEAD and working tree to the remote tip if that is a pure
        fast-forward. Returns True if HEAD moved.

        Local commits the remote lacks (ahead, or diverged: logged) are never thrown away here;
        reconciling them (rebase, push) is the writer's job. Uncommitted edits to tracked files
        are overwritten: the working tree belongs to this class and follows HEAD.
        """
        with self._lock:
            tip = self.fetch()
            if tip is None:
                return False
            repo = self._open()
            local = self.head()
            if tip == local:
                return False
            if can_fast_forward(repo, local, tip):
                _checkout(repo, tip)
                log.info(
                    "%s: fast-forwarded %s from %s to %s",
                    self.path,
                    self.branch.decode(),
                    _short(local),
                    _short(tip),
                )
                return True
            if not can_fast_forward(repo, tip, local):
                log.warning(
                    "the local clone at %s (branch %s at %s) and git remote %s (at %s) have "
                    "diverged; serving the local commit until they are reconciled",
                    self.path,
                    self.branch.decode(),
                    _short(local),
                    _display(self.remote),
                    _short(tip),
                )
            return False

    def head(self) -> bytes:
        """The commit id (hex) HEAD points at."""
        with self._lock:
            try:
                return self._open().refs[_HEAD]
            except KeyError:
                raise GitError(f"the clone at {self.path} has no commit on HEAD") from None

    def top_level_files(self, commit: bytes | None = None) -> dict[str, bytes]:
        """name -> blob id (hex) of every top-level *regular* file in the commit's tree (default
        HEAD). Dot-files, sub-folders (trees), symlinks and submodules are skipped: the zone
        repository is flat, and a symlink could point outside it."""
        with self._lock:
            commit_id = commit if commit is not None else self.head()
            obj = self._object(commit_id, Commit, "commit")
            tree = self._object(obj.tree, Tree, "tree")
            files: dict[str, bytes] = {}
            for entry in tree.iteritems():
                if not stat.S_ISREG(entry.mode) or entry.path.startswith(b"."):
                    continue
                try:
                    name = entry.path.decode("utf-8")
                except UnicodeDecodeError:
                    log.warning(
                        "%s: skipping file %r in commit %s, its name is not UTF-8",
                        self.path,
                        entry.path,
                        _short(commit_id),
                    )
                    continue
                files[name] = entry.sha
            return files

    def read_blob(self, blob_id: bytes) -> bytes:
        """The content of blob `blob_id` (hex)."""
        with self._lock:
            return self._object(blob_id, Blob, "blob").as_raw_string()

    def reopen(self) -> None:
        """Open the clone afresh, after another program (git repack) changed objects/: the old
        Repo's pack cache would still name deleted packs and miss new ones."""
        with self._lock:
            old = self._open()
            self._repo = _configure(Repo(str(self.path)))
            old.close()

    def close(self) -> None:
        """Release dulwich's open pack files; safe to call twice."""
        with self._lock:
            if self._repo is not None:
                self._repo.close()
                self._repo = None

    def __enter__(self) -> GitRepo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------

    def _open(self) -> Repo:
        if self._repo is None:
            raise GitError(f"the clone at {self.path} was closed")
        return self._repo

    # Accessors for gitdns.gitwrite, the write side, which works under the same lock.

    @property
    def lock(self) -> threading.RLock:
        """The lock every operation on this clone holds (re-entrant)."""
        return self._lock

    def dulwich_repo(self) -> Repo:
        """The open dulwich Repo; use it only while holding `lock`."""
        return self._open()

    def client_and_path(self) -> tuple[GitClient, str]:
        """A dulwich client for the remote, with this clone's ssh key, pin or http login."""
        return _client_and_path(self.remote, self._auth)

    def _object(self, sha: bytes, kind: type[_Obj], what: str) -> _Obj:
        """Object `sha` of the expected type, or a GitError naming what is wrong."""
        try:
            obj = self._open().object_store[sha]
        except (KeyError, ValueError):
            raise GitError(
                f"the clone at {self.path} has no {what} {sha.decode(errors='replace')}"
            ) from None
        if not isinstance(obj, kind):
            raise GitError(
                f"{sha.decode(errors='replace')} in {self.path} is a "
                f"{obj.type_name.decode()}, not a {what}"
            )
        return obj

    # -- history, for IXFR after a restart -----------------------------------------------------

    def file_history(
        self, filename: str, max_commits: int = 200, *, max_walk: int = 10_000
    ) -> list[tuple[bytes, bytes]]:
        """(commit id, blob id), both hex, of each commit that changed top-level file `filename`,
        newest first, following first parents from HEAD (the branch's own line of versions, as
        the server served them; a merge counts as one change).

        At most `max_commits` entries, and at most `max_walk` commits are looked at, so a busy
        repository with a rarely changed zone costs bounded time. The walk stops where the file
        did not exist (before its creation, or a deletion: older versions do not lead to this
        one) and at a missing parent (a shallow clone).
        """
        name = filename.encode("utf-8")

        def blob_in(commit: Commit) -> bytes | None:
            tree = self._object(commit.tree, Tree, "tree")
            try:
                mode, sha = tree[name]
            except KeyError:
                return None
            return sha if stat.S_ISREG(mode) else None

        with self._lock:
            commit_id = self.head()
            commit = self._object(commit_id, Commit, "commit")
            blob = blob_in(commit)
            history: list[tuple[bytes, bytes]] = []
            for _ in range(max_walk):
                if blob is None or len(history) >= max_commits:
                    break
                parent_id = commit.parents[0] if commit.parents else None
                parent: Commit | None = None
                if parent_id is not None:
                    try:
                        parent = self._object(parent_id, Commit, "commit")
                    except GitError:
                        parent = None
                parent_blob = blob_in(parent) if parent is not None else None
                if parent_blob != blob:
                    history.append((commit_id, blob))
                if parent is None or parent_id is None:
                    break
                commit_id, commit, blob = parent_id, parent, parent_blob
            return history
