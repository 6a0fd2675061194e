"""GitRepo against real repositories made by the git command: clone, reuse, fast-forward, remotes
that vanish, clones that belong to someone else, branches."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest
from dulwich.client import FetchPackResult

from gitdns.gitrepo import GitError, GitRepo, _pick_branch

# An unclosed dulwich Repo warns from __del__; make that fail the test that leaked it.
pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

ZONE = "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n"


def git(cwd: Path, *args: str) -> str:
    """Run the real git, as an operator would, and return its output."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> bytes:
    """Write (or, for None, delete) `files` in the working repository `repo` and commit them."""
    for name, content in files.items():
        target = repo / name
        if content is None:
            git(repo, "rm", "-q", name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").encode()


def rev(repo: Path, what: str = "HEAD") -> bytes:
    return git(repo, "rev-parse", what).encode()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A non-bare zone repository: two zones, a dot-file, a folder, a symlink, a submodule."""
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    (src / "link").symlink_to("example.com")
    git(src, "add", "link")
    # A submodule entry (gitlink) without a .gitmodules: enough to appear in the tree.
    git(src, "update-index", "--add", "--cacheinfo", "160000," + "1" * 40 + ",mod")
    commit(
        src,
        {
            "example.com": ZONE,
            "_keys": "; keys\n",
            ".gitignore": "*~\n",
            "sub/inner.zone": ZONE,
        },
        "zones",
    )
    return src


@pytest.fixture
def bare(tmp_path: Path, source: Path) -> Path:
    """A bare repository holding the source's history, as on a git server."""
    path = tmp_path / "zones.git"
    git(tmp_path, "clone", "-q", "--bare", str(source), str(path))
    return path


@pytest.fixture
def open_repo() -> Iterator[list[GitRepo]]:
    """Collects GitRepos the test opens and closes them at the end, even when it fails."""
    repos: list[GitRepo] = []
    yield repos
    for r in repos:
        r.close()


def open_(
    repos: list[GitRepo], remote: str | Path, path: Path, branch: str | None = None
) -> GitRepo:
    r = GitRepo.open_or_clone(str(remote), path, branch)
    repos.append(r)
    return r


# -- cloning -------------------------------------------------------------------------------------


def test_clone_from_non_bare_repository(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    r = open_(open_repo, source, clone)
    assert r.head() == rev(source)
    assert r.branch == b"main"
    assert r.path == clone
    assert (clone / "example.com").read_text() == ZONE
    # The clone is an ordinary one for the git command too: clean, tracking origin/main.
    assert git(clone, "status", "--porcelain") == ""
    assert git(clone, "config", "remote.origin.url") == str(source)
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD@{upstream}") == "origin/main"


def test_clone_from_bare_repository(tmp_path, bare, source, open_repo):
    r = open_(open_repo, bare, tmp_path / "clone")
    assert r.head() == rev(source)
    assert (tmp_path / "clone" / "_keys").read_text() == "; keys\n"


def test_clone_from_file_url(tmp_path, bare, source, open_repo):
    url = bare.as_uri()
    assert url.startswith("file://")
    r = open_(open_repo, url, tmp_path / "clone")
    assert r.remote == url
    assert r.head() == rev(source)
    assert sorted(r.top_level_files()) == ["_keys", "example.com"]


def test_clone_into_existing_empty_directory(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    clone.mkdir()
    r = open_(open_repo, source, clone)
    assert r.head() == rev(source)


def test_clone_with_a_relative_path_stores_an_absolute_one(
    tmp_path, source, open_repo, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    open_(open_repo, "src", tmp_path / "clone")
    assert git(tmp_path / "clone", "config", "remote.origin.url") == str(source)


# -- reading the tree ----------------------------------------------------------------------------


def test_top_level_files_skips_dot_files_folders_symlinks_and_submodules(
    tmp_path, source, open_repo
):
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    commit(source, {"run.sh": "#!/bin/sh\n"})
    r = open_(open_repo, source, tmp_path / "clone")
    files = r.top_level_files()
    assert sorted(files) == ["_keys", "example.com", "run.sh"]  # an executable file is a file
    assert files["example.com"] == git(source, "rev-parse", "HEAD:example.com").encode()
    assert r.read_blob(files["example.com"]) == ZONE.encode()
    assert r.read_blob(files["_keys"]) == b"; keys\n"


def test_top_level_files_of_an_older_commit(tmp_path, source, open_repo):
    first = rev(source)
    commit(source, {"new.zone": ZONE, "_keys": None})
    r = open_(open_repo, source, tmp_path / "clone")
    assert sorted(r.top_level_files()) == ["example.com", "new.zone"]
    assert sorted(r.top_level_files(first)) == ["_keys", "example.com"]


def test_unknown_objects_raise_git_error(tmp_path, source, open_repo):
    r = open_(open_repo, source, tmp_path / "clone")
    with pytest.raises(GitError, match="no blob"):
        r.read_blob(b"0" * 40)
    with pytest.raises(GitError, match="not a blob"):
        r.read_blob(r.head())  # a commit
    with pytest.raises(GitError, match="not a commit"):
        r.top_level_files(r.top_level_files()["_keys"])


# -- restart, fetch, fast-forward ----------------------------------------------------------------


def test_reuse_after_restart_keeps_the_clone(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    open_(open_repo, source, clone).close()
    # A local commit the remote lacks (as an update not yet pushed) must survive the restart:
    # a fresh clone would lose it.
    local = commit(clone, {"example.com": ZONE + "www 300 IN A 192.0.2.1\n"}, "local")
    r = open_(open_repo, source, clone)
    assert r.head() == local
    assert r.fast_forward() is False  # ahead: nothing to do, nothing lost
    assert r.head() == local


def test_fast_forward_picks_up_a_pushed_commit(tmp_path, bare, open_repo, caplog):
    clone = tmp_path / "clone"
    r = open_(open_repo, bare, clone)
    old = r.head()
    assert r.fast_forward() is False  # nothing new yet

    writer = tmp_path / "writer"
    git(tmp_path, "clone", "-q", str(bare), str(writer))
    new = commit(writer, {"example.com": ZONE + "www 300 IN A 192.0.2.2\n", "_keys": None})
    git(writer, "push", "-q", "origin", "main")

    assert r.fetch() == new
    assert r.head() == old  # fetch alone does not move HEAD
    assert r.fast_forward() is True
    assert r.head() == new
    assert (clone / "example.com").read_text().endswith("192.0.2.2\n")
    assert not (clone / "_keys").exists()  # a file deleted upstream leaves the working tree
    assert sorted(r.top_level_files()) == ["example.com"]
    assert git(clone, "status", "--porcelain") == ""
    assert rev(clone, "refs/remotes/origin/main") == new


def test_reopen_fast_forwards(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    open_(open_repo, source, clone).close()
    new = commit(source, {"new.zone": ZONE})
    r = open_(open_repo, source, clone)
    assert r.head() == new
    assert (clone / "new.zone").exists()


def test_diverged_clone_is_not_moved(tmp_path, source, open_repo, caplog):
    clone = tmp_path / "clone"
    r = open_(open_repo, source, clone)
    local = commit(clone, {"example.com": ZONE + "a 300 IN A 192.0.2.3\n"}, "local")
    remote = commit(source, {"example.com": ZONE + "b 300 IN A 192.0.2.4\n"}, "remote")
    with caplog.at_level(logging.WARNING, logger="gitdns.git"):
        assert r.fast_forward() is False
    assert r.head() == local
    assert "diverged" in caplog.text
    assert local[:7].decode() in caplog.text and remote[:7].decode() in caplog.text
    assert (clone / "example.com").read_text().endswith("192.0.2.3\n")


# -- remotes that cannot be reached --------------------------------------------------------------


def test_existing_clone_is_served_when_the_remote_is_gone(tmp_path, bare, open_repo, caplog):
    clone = tmp_path / "clone"
    head = open_(open_repo, bare, clone).head()
    open_repo.pop().close()
    bare.rename(tmp_path / "moved.git")
    with caplog.at_level(logging.WARNING, logger="gitdns.git"):
        r = open_(open_repo, bare, clone)
    warning = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warning) == 1
    message = warning[0].getMessage()
    assert message == (
        f"cannot reach git remote {bare}: No such file or directory; "
        f"serving from the local clone at {head[:7].decode()}"
    )
    assert r.head() == head
    assert sorted(r.top_level_files()) == ["_keys", "example.com"]
    with pytest.raises(GitError, match=f"cannot reach git remote {bare}"):
        r.fetch()
    with pytest.raises(GitError):
        r.fast_forward()


def test_no_clone_and_no_remote_raises(tmp_path):
    missing = tmp_path / "nowhere.git"
    with pytest.raises(GitError) as info:
        GitRepo.open_or_clone(str(missing), tmp_path / "clone")
    assert str(missing) in str(info.value)
    assert "No such file or directory" in str(info.value)
    assert sorted(os.listdir(tmp_path)) == []  # no clone, no half-made temporary directory


def test_remote_that_is_not_a_repository(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=f"cannot reach git remote {plain}: not a git repository"):
        GitRepo.open_or_clone(str(plain), tmp_path / "clone")
    assert sorted(os.listdir(tmp_path)) == ["plain"]


# -- clones that are not ours --------------------------------------------------------------------


def test_clone_of_another_remote_is_refused_and_kept(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    open_(open_repo, source, clone).close()
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    commit(other, {"other.zone": ZONE})
    with pytest.raises(GitError) as info:
        GitRepo.open_or_clone(str(other), clone)
    assert f"{clone} is a clone of {source}, not of {other}" in str(info.value)
    assert (clone / "example.com").read_text() == ZONE  # untouched
    assert rev(clone) == rev(source)


def test_same_remote_spelled_differently_is_accepted(tmp_path, source, open_repo):
    clone = tmp_path / "clone"
    open_(open_repo, source, clone).close()
    r = open_(open_repo, source.as_uri() + "/", clone)
    assert r.head() == rev(source)


def test_directory_that_is_not_a_clone_is_refused(tmp_path, source):
    path = tmp_path / "data"
    path.mkdir()
    (path / "precious").write_text("keep me")
    with pytest.raises(GitError, match="is not a git clone"):
        GitRepo.open_or_clone(str(source), path)
    assert (path / "precious").read_text() == "keep me"
    assert sorted(os.listdir(path)) == ["precious"]


# -- branches ------------------------------------------------------------------------------------


@pytest.fixture
def two_branches(source: Path) -> Path:
    git(source, "checkout", "-q", "-b", "other")
    commit(source, {"other.zone": ZONE, "example.com": None}, "other branch")
    git(source, "checkout", "-q", "main")
    return source


def test_branch_selection(tmp_path, two_branches, open_repo):
    r = open_(open_repo, two_branches, tmp_path / "clone", branch="other")
    assert r.branch == b"other"
    assert r.head() == rev(two_branches, "other")
    assert sorted(r.top_level_files()) == ["_keys", "other.zone"]
    assert git(tmp_path / "clone", "rev-parse", "--abbrev-ref", "HEAD") == "other"


def test_default_branch_is_the_remotes_head(tmp_path, two_branches, open_repo):
    git(two_branches, "checkout", "-q", "other")
    git(two_branches, "branch", "same-as-other")  # so HEAD's commit alone does not name it
    r = open_(open_repo, two_branches, tmp_path / "clone")
    assert r.branch == b"other"
    assert r.head() == rev(two_branches, "other")


def test_default_branch_falls_back_to_main_when_head_is_unborn(tmp_path, two_branches, open_repo):
    git(two_branches, "symbolic-ref", "HEAD", "refs/heads/nothing-yet")
    r = open_(open_repo, two_branches, tmp_path / "clone")
    assert r.branch == b"main"
    assert r.head() == rev(two_branches, "main")


def test_default_branch_without_a_head_symref():
    """Servers that do not advertise HEAD's target (dumb http, old git): HEAD's commit names
    the branch when only one branch is at it, else main, else master, else the operator must
    choose."""
    a, b = b"a" * 40, b"b" * 40

    def pick(refs: dict[bytes, bytes]) -> bytes:
        return _pick_branch(FetchPackResult(refs, {}, None), "R")

    assert pick({b"HEAD": a, b"refs/heads/main": b, b"refs/heads/trunk": a}) == b"trunk"
    assert pick({b"HEAD": a, b"refs/heads/x": a, b"refs/heads/y": a, b"refs/heads/main": a}) == (
        b"main"
    )
    assert pick({b"refs/heads/master": a, b"refs/heads/x": b}) == b"master"
    with pytest.raises(GitError, match="no HEAD, main or master branch; choose one of x, y"):
        pick({b"refs/heads/y": a, b"refs/heads/x": b})
    with pytest.raises(GitError, match="git remote R has no branches"):
        pick({})


def test_missing_branch_raises(tmp_path, source):
    with pytest.raises(GitError, match=f"git remote {source} has no branch nope"):
        GitRepo.open_or_clone(str(source), tmp_path / "clone", "nope")
    assert not (tmp_path / "clone").exists()


def test_restart_with_another_branch_switches(tmp_path, two_branches, open_repo):
    clone = tmp_path / "clone"
    open_(open_repo, two_branches, clone).close()
    r = open_(open_repo, two_branches, clone, branch="other")
    assert r.branch == b"other"
    assert r.head() == rev(two_branches, "other")
    assert (clone / "other.zone").exists()
    assert not (clone / "example.com").exists()
    # And without --branch, the clone keeps the branch it has.
    r.close()
    assert open_(open_repo, two_branches, clone).branch == b"other"


# -- http, resources -----------------------------------------------------------------------------


def test_clone_and_fast_forward_over_http(tmp_path, bare, open_repo):
    """Smart HTTP, served by dulwich's own WSGI server (no web server needed)."""
    from dulwich.repo import Repo
    from dulwich.server import DictBackend
    from dulwich.web import WSGIRequestHandlerLogger, WSGIServerLogger, make_wsgi_chain

    served = Repo(str(bare))
    app = make_wsgi_chain(DictBackend({"/": served}))
    server = make_server(
        "127.0.0.1", 0, app, handler_class=WSGIRequestHandlerLogger, server_class=WSGIServerLogger
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://user:secret@127.0.0.1:{server.server_port}/"
        r = open_(open_repo, url, tmp_path / "clone")
        assert r.head() == rev(bare, "main")
        assert sorted(r.top_level_files()) == ["_keys", "example.com"]
        writer = tmp_path / "writer"
        git(tmp_path, "clone", "-q", str(bare), str(writer))
        new = commit(writer, {"new.zone": ZONE})
        git(writer, "push", "-q", "origin", "main")
        assert r.fast_forward() is True
        assert r.head() == new
    finally:
        server.shutdown()
        server.server_close()
        served.close()
    with pytest.raises(GitError) as info:
        r.fetch()
    assert "cannot reach git remote http://user:***@127.0.0.1" in str(info.value)
    assert "secret" not in str(info.value)


def test_every_dulwich_repo_is_closed(tmp_path, bare):
    """No ResourceWarning from dulwich's pack files after close(), error paths included."""

    def work() -> None:
        with GitRepo.open_or_clone(str(bare), tmp_path / "clone") as r:
            r.top_level_files()
            r.fast_forward()
        with pytest.raises(GitError):
            GitRepo.open_or_clone(str(tmp_path / "missing"), tmp_path / "clone")
        with GitRepo.open_or_clone(str(bare), tmp_path / "clone", "main") as r:
            r.read_blob(r.top_level_files()["_keys"])
        r.close()  # twice is fine
        with pytest.raises(GitError, match="closed"):
            r.head()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        work()
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
