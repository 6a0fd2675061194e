"""The write side against bare remotes made by the real git command: durable commits, pushes that
work, are rejected (another writer pushed first) or cannot reach the remote, and recovery."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.client import SubprocessGitClient

from gitdns import gitrepo, gitwrite
from gitdns.gitrepo import GitError, GitRepo
from gitdns.gitwrite import (
    ahead_of_remote,
    changed_files,
    commit_files,
    commit_message_lines,
    push,
    reset_to_remote,
    save_branch,
)

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

ZONE = "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n"
AUTHOR = b"gitdns <gitdns@example.com>"


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run the real git, as an operator would, and return its output."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=check,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip()


def operator_commit(work: Path, files: dict[str, str], message: str) -> bytes:
    """An operator edits a clone by hand, commits and pushes."""
    for name, content in files.items():
        (work / name).write_text(content)
        git(work, "add", name)
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "origin", "main")
    return git(work, "rev-parse", "HEAD").encode()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare remote as on a git server, refusing non-fast-forward pushes, with one commit."""
    path = tmp_path / "zones.git"
    git(tmp_path, "init", "-q", "-b", "main", "--bare", str(path))
    git(tmp_path, "config", "--file", str(path / "config"), "receive.denyNonFastForwards", "true")
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(path), str(seed))
    git(seed, "checkout", "-q", "-b", "main")
    operator_commit(seed, {"example.com": ZONE, "_keys": "; keys\n"}, "zones")
    return path


@pytest.fixture
def operator(tmp_path: Path, bare: Path) -> Path:
    """Another writer's clone of the remote."""
    path = tmp_path / "operator"
    git(tmp_path, "clone", "-q", str(bare), str(path))
    return path


@pytest.fixture
def repo(tmp_path: Path, bare: Path) -> Iterator[GitRepo]:
    r = GitRepo.open_or_clone(str(bare), tmp_path / "clone")
    yield r
    r.close()


def remote_rev(bare: Path, what: str = "main") -> bytes:
    return git(bare, "rev-parse", what).encode()


# -- commit_files -------------------------------------------------------------------------------


def test_commit_then_push(repo, bare):
    zone = ZONE + "www 300 IN A 192.0.2.1\n"
    c = commit_files(
        repo,
        {"example.com": zone.encode(), "new.zone": b"; new\n"},
        "update example.com by k._update.example.com: add www A",
        AUTHOR,
    )
    assert repo.head() == c
    clone = repo.path
    # The clone is clean for the git command: index and working tree follow the commit.
    assert (clone / "example.com").read_text() == zone
    assert git(clone, "status", "--porcelain") == ""
    assert git(clone, "fsck", "--no-progress") == ""
    assert ahead_of_remote(repo) == [c]

    result = push(repo)
    assert result.ok and result.status == "ok" and result.commit == c
    assert remote_rev(bare) == c
    assert git(bare, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "main") == (
        "gitdns <gitdns@example.com>|gitdns <gitdns@example.com>|"
        "update example.com by k._update.example.com: add www A"
    )
    assert git(bare, "show", "main:example.com") + "\n" == zone
    assert git(bare, "show", "main:new.zone") == "; new"
    assert ahead_of_remote(repo) == []
    assert git(clone, "rev-parse", "origin/main").encode() == c


def test_delete_keep_mode_and_committer(repo, bare, operator):
    (operator / "run.sh").write_text("#!/bin/sh\n")
    (operator / "run.sh").chmod(0o755)
    operator_commit(operator, {"run.sh": "#!/bin/sh\n"}, "script")
    repo.fast_forward()
    c = commit_files(
        repo,
        {"_keys": None, "run.sh": b"#!/bin/sh\necho\n"},
        "drop keys\n\nsecond line\n",
        AUTHOR,
        committer=b"server <server@example.com>",
    )
    push(repo)
    assert git(bare, "ls-tree", "--name-only", "main").split() == ["example.com", "run.sh"]
    assert git(bare, "ls-tree", "main", "run.sh").startswith("100755 ")
    assert git(bare, "log", "-1", "--format=%cn|%B", "main") == "server|drop keys\n\nsecond line"
    assert not (repo.path / "_keys").exists()
    assert os.access(repo.path / "run.sh", os.X_OK)
    assert git(repo.path, "status", "--porcelain") == ""
    assert commit_message_lines(repo, c) == ["drop keys", "", "second line"]
    assert changed_files(repo, c) == {"_keys": None, "run.sh": b"#!/bin/sh\necho\n"}


def test_unchanged_content_makes_no_commit(repo):
    head = repo.head()
    assert commit_files(repo, {"example.com": ZONE.encode(), "gone": None}, "nothing", AUTHOR) == (
        head
    )
    assert ahead_of_remote(repo) == []


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", ".git", "x\0y"])
def test_only_top_level_files_are_written(repo, name):
    with pytest.raises(GitError, match="not a top-level file name"):
        commit_files(repo, {name: b"x"}, "bad", AUTHOR)
    with pytest.raises(GitError, match="cannot commit"):
        commit_files(repo, {"ok": b"x"}, "bad author", b"no email")


def test_commit_is_fsynced(repo, monkeypatch):
    """Every new object file, the branch ref and the folders naming them reach fsync."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    content = ZONE + "; durable\n"
    c = commit_files(repo, {"example.com": content.encode()}, "durable", AUTHOR)
    monkeypatch.undo()

    gitdir = (repo.path / ".git").resolve()
    objects = gitdir / "objects"
    blob = git(repo.path, "rev-parse", "HEAD:example.com")
    tree = git(repo.path, "rev-parse", "HEAD^{tree}")
    for sha in (blob, tree, c.decode()):
        assert str(objects / sha[:2] / sha[2:]) in synced, sha
        assert str(objects / sha[:2]) in synced
    assert str(objects) in synced
    assert str(objects / "pack") in synced
    assert str(gitdir / "refs" / "heads" / "main") in synced
    assert str(gitdir / "refs" / "heads") in synced
    # The ref is synced after the objects it names.
    ref_at = synced.index(str(gitdir / "refs" / "heads" / "main"))
    assert ref_at > synced.index(str(objects / c.decode()[:2] / c.decode()[2:]))


# -- push: rejected, unreachable, recovery ------------------------------------------------------


def test_rejected_push_then_reset_recommit_and_push(repo, bare, operator):
    theirs = operator_commit(operator, {"other.zone": "; operator\n"}, "operator edit")
    mine = commit_files(repo, {"example.com": (ZONE + "; mine\n").encode()}, "mine", AUTHOR)

    result = push(repo)
    assert result.status == "rejected" and not result.ok
    assert "another writer pushed first" in result.error
    assert remote_rev(bare) == theirs
    assert repo.head() == mine  # nothing lost locally

    assert repo.fetch() == theirs
    assert ahead_of_remote(repo) == [mine]
    assert reset_to_remote(repo) == [mine]
    assert repo.head() == theirs
    assert (repo.path / "other.zone").read_text() == "; operator\n"
    assert (repo.path / "example.com").read_text() == ZONE
    assert git(repo.path, "status", "--porcelain") == ""

    again = commit_files(repo, changed_files_of(mine, repo), "mine (replayed)", AUTHOR)
    assert push(repo).ok
    assert remote_rev(bare) == again
    assert git(bare, "log", "--format=%s", "main").splitlines()[:2] == [
        "mine (replayed)",
        "operator edit",
    ]


def changed_files_of(commit: bytes, repo: GitRepo) -> dict[str, bytes | None]:
    # The dropped commit's objects are still in the store after the reset.
    return changed_files(repo, commit)


@pytest.fixture
def real_receive_pack(monkeypatch):
    """Push to local paths through the real `git receive-pack` (dulwich's in-process local client
    ignores the remote's hooks and receive.denyNonFastForwards), as a git server would run it."""
    monkeypatch.setattr(gitrepo, "default_local_git_client_cls", SubprocessGitClient)


def test_server_side_refusal_is_rejected(repo, bare, operator, monkeypatch, real_receive_pack):
    """Skip the client-side check: the server (receive.denyNonFastForwards) says "ng"."""
    theirs = operator_commit(operator, {"other.zone": "; operator\n"}, "operator edit")
    commit_files(repo, {"example.com": b"; mine\n"}, "mine", AUTHOR)
    monkeypatch.setattr(gitwrite, "check_diverged", lambda *a: None)
    result = push(repo)
    assert result.status == "rejected", result
    assert "refused refs/heads/main" in result.error
    assert remote_rev(bare) == theirs


def test_server_hook_refusal_is_not_a_rejection(repo, bare, real_receive_pack):
    """A hook that declines is no reason to rebase: the commit stays local for a later retry."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho no >&2\nexit 1\n")
    hook.chmod(0o755)
    commit_files(repo, {"example.com": b"; mine\n"}, "mine", AUTHOR)
    result = push(repo)
    assert result.status == "unreachable"
    assert "hook declined" in result.error
    assert ahead_of_remote(repo) == [repo.head()]


def test_unreachable_remote_keeps_the_commit_local(repo, bare, tmp_path):
    c = commit_files(repo, {"example.com": (ZONE + "; offline\n").encode()}, "offline", AUTHOR)
    away = tmp_path / "away.git"
    bare.rename(away)
    try:
        result = push(repo)
        assert result.status == "unreachable"
        assert "cannot reach git remote" in result.error and str(bare) in result.error
        assert repo.head() == c
        assert ahead_of_remote(repo) == [c]
    finally:
        away.rename(bare)
    assert push(repo).ok
    assert remote_rev(bare) == c
    assert ahead_of_remote(repo) == []


def test_reset_without_tracking_branch(repo):
    repo.dulwich_repo().refs.remove_if_equals(b"refs/remotes/origin/main", None)
    with pytest.raises(GitError, match="fetch first"):
        reset_to_remote(repo)


def test_save_branch(repo, bare, operator, tmp_path):
    theirs = operator_commit(operator, {"other.zone": "; operator\n"}, "operator edit")
    mine = commit_files(repo, {"example.com": b"; mine\n"}, "mine", AUTHOR)
    assert push(repo).status == "rejected"
    result = save_branch(repo, "2024-01-01T00-00-00-mine", mine)
    assert result.ok, result
    assert remote_rev(bare, "refs/heads/gitdns/unmerged/2024-01-01T00-00-00-mine") == mine
    assert remote_rev(bare) == theirs  # main untouched

    # Best effort: with the remote away the branch is still kept locally.
    away = tmp_path / "away.git"
    bare.rename(away)
    try:
        assert save_branch(repo, "second", mine).status == "unreachable"
    finally:
        away.rename(bare)
    assert git(repo.path, "rev-parse", "gitdns/unmerged/second").encode() == mine
    with pytest.raises(GitError, match="not a valid branch name"):
        save_branch(repo, "bad..name", mine)
