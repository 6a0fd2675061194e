"""Git remotes as an operator runs them: a real OpenSSH server (git-shell user, pinned host keys,
ed25519/RSA/seed client keys) and a smart-HTTP server with a login; clone, commit, push, refusals.

The sshd runs as root on 127.0.0.1 and a free port with its own config (nothing of the system's),
and is stopped by its fixture's finalizer; every wait is bounded.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dulwich.client import SSHGitClient

from gitdns import gitwrite
from gitdns.gitrepo import GitError, GitRepo, _client_and_path
from gitdns.gitwrite import ahead_of_remote, commit_files, push, reset_to_remote
from gitdns.sshvendor import (
    PinnedParamikoVendor,
    RemoteAuth,
    fingerprint_of_public_line,
    load_private_key,
    parse_pin,
    public_key_line,
    ssh_keygen,
)
from tests.interop.peers import free_port, http_git_server

pytestmark = pytest.mark.filterwarnings(
    "error::ResourceWarning", "error::pytest.PytestUnraisableExceptionWarning"
)

SSHD = "/usr/sbin/sshd"
GIT_SHELL = shutil.which("git-shell") or "/usr/bin/git-shell"
USER = "gitsrv"
HOME = Path("/home") / USER
ZONE = "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n"
AUTHOR = b"gitdns <gitdns@example.com>"
START_TIMEOUT = 10.0
OTHER_PIN = "SHA256:" + "A" * 43


def git(cwd: Path, *args: str) -> str:
    """The real git, as root on repositories gitsrv owns: safe.directory is only honoured from a
    global config (also by the upload-pack a local clone runs), so one is given for the call."""
    with tempfile.NamedTemporaryFile("w", suffix=".gitconfig") as config:
        config.write("[safe]\n\tdirectory = *\n[user]\n\tname = t\n\temail = t@t\n")
        config.flush()
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GIT_CONFIG_GLOBAL": config.name, "GIT_CONFIG_NOSYSTEM": "1"},
        )
    return done.stdout.strip()


def ssh_keygen_fingerprint(pub: Path) -> str:
    """What the operator would copy: `ssh-keygen -l -E sha256`'s second field."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return out.split()[1]


# -- key handling without a server --------------------------------------------------------------


def test_generated_keys_load_and_match_ssh_keygen(tmp_path):
    for kind in ("ed25519", "rsa"):
        pem, public = ssh_keygen(kind)
        key_file = tmp_path / f"id_{kind}"
        key_file.write_text(pem)
        key_file.chmod(0o600)
        pub_file = tmp_path / f"id_{kind}.pub"
        pub_file.write_text(public + "\n")
        key = load_private_key(str(key_file))
        assert public_key_line(key).split()[:2] == public.split()[:2]
        if shutil.which("ssh-keygen"):
            assert ssh_keygen_fingerprint(pub_file) == fingerprint_of_public_line(public)
            derived = subprocess.run(
                ["ssh-keygen", "-y", "-f", str(key_file)],
                check=True,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            assert derived.split()[:2] == public.split()[:2]


def test_seed_key_form():
    seed = os.urandom(32)
    key = load_private_key("ed25519:" + base64.b64encode(seed).decode())
    expected = (
        ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    assert public_key_line(key).split()[:2] == expected.split()[:2]
    with pytest.raises(ValueError, match="32-byte"):
        load_private_key("ed25519:" + base64.b64encode(b"short").decode())


def test_bad_settings_are_refused_at_open(tmp_path):
    not_a_key = tmp_path / "key"
    not_a_key.write_text("hello\n")
    cases = [
        ({"ssh_key": str(tmp_path / "missing")}, "no such file"),
        ({"ssh_key": str(not_a_key)}, "not an OpenSSH private key"),
        ({"ssh_authenticator": "MD5:aa:bb"}, "not a SHA256 host key fingerprint"),
        ({"credentials_file": str(tmp_path / "missing")}, "cannot read credentials file"),
    ]
    for kwargs, message in cases:
        with pytest.raises(GitError, match=message):
            GitRepo.open_or_clone("ssh://git@127.0.0.1:1/x.git", tmp_path / "clone", **kwargs)
        assert not (tmp_path / "clone").exists()
    assert parse_pin(OTHER_PIN + "=") == OTHER_PIN  # padded, as some tools print it


def test_ssh_remotes_get_the_pinned_vendor(tmp_path):
    """Both spellings, ssh:// and scp-like user@host:path, go through our vendor, never the
    system's ssh with its known_hosts."""
    auth = RemoteAuth(pin=OTHER_PIN)
    for remote, path in (
        ("ssh://git@example.com:2222/~/zones.git", "/~/zones.git"),
        ("git@example.com:zones.git", "zones.git"),
    ):
        client, got = _client_and_path(remote, auth)
        assert isinstance(client, SSHGitClient)
        assert isinstance(client.ssh_vendor, PinnedParamikoVendor)
        assert client.ssh_vendor.pin == OTHER_PIN
        assert got == path
    client, _ = _client_and_path("git@example.com:zones.git")
    assert isinstance(client.ssh_vendor, PinnedParamikoVendor)  # even with nothing configured
    assert client.ssh_vendor.pin is None


# -- a real sshd ---------------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    host_fp: str  # ED25519
    host_rsa_fp: str
    keys: dict[str, str]  # name -> --ssh-key value the server accepts
    stranger_key: str  # a key file the server does not know
    log: Path

    def url(self, repo: Path) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}{repo}"


def _ensure_user() -> None:
    """The git account, created once (tests run as root): git-shell only, and not locked, since
    sshd without PAM refuses a locked account even for key logins."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(HOME), "--shell", GIT_SHELL, USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
    subprocess.run(["usermod", "-p", "*", USER], check=True, capture_output=True, timeout=30)


def _wait_for_banner(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer in {START_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    if os.geteuid() != 0:
        pytest.skip("the sshd tests run sshd as root and create the git account: run as root")
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install the Debian package openssh-server")
    if not os.path.exists(GIT_SHELL):
        pytest.skip("git-shell is missing: install the Debian package git")
    _ensure_user()
    # Not under pytest's 0700 tmp: sshd reads authorized_keys as the git user.
    conf = Path(tempfile.mkdtemp(prefix="gitdns-sshd-"))
    proc: subprocess.Popen | None = None
    try:
        conf.chmod(0o755)
        for kind in ("ed25519", "rsa"):
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    kind,
                    "-N",
                    "",
                    "-C",
                    "host",
                    "-f",
                    conf / f"host_{kind}",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        keys: dict[str, str] = {}
        lines = []
        for kind in ("ed25519", "rsa"):
            pem, public = ssh_keygen(kind, comment=f"client-{kind}")
            path = conf / f"client_{kind}"
            path.write_text(pem)
            path.chmod(0o600)
            keys[kind] = str(path)
            lines.append(public)
        seed = os.urandom(32)
        keys["seed"] = "ed25519:" + base64.b64encode(seed).decode()
        public = (
            ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
        )
        lines.append(public + " awa-seed")
        (conf / "authorized_keys").write_text("\n".join(lines) + "\n")
        (conf / "authorized_keys").chmod(0o644)
        stranger = conf / "stranger"
        stranger.write_text(ssh_keygen("ed25519")[0])
        stranger.chmod(0o600)

        port = free_port()
        (conf / "sshd_config").write_text(
            f"""Port {port}
ListenAddress 127.0.0.1
HostKey {conf}/host_ed25519
HostKey {conf}/host_rsa
PidFile {conf}/sshd.pid
AuthorizedKeysFile {conf}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {USER}
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
PermitTTY no
LogLevel VERBOSE
AcceptEnv GIT_PROTOCOL
"""
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        subprocess.run(
            [SSHD, "-t", "-f", conf / "sshd_config"], check=True, capture_output=True, timeout=30
        )
        log = conf / "sshd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", conf / "sshd_config"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        _wait_for_banner(port, proc, log)
        yield Sshd(
            port=port,
            host_fp=ssh_keygen_fingerprint(conf / "host_ed25519.pub"),
            host_rsa_fp=ssh_keygen_fingerprint(conf / "host_rsa.pub"),
            keys=keys,
            stranger_key=str(stranger),
            log=log,
        )
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(conf, ignore_errors=True)


def _chown_to_git_user(path: Path) -> None:
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(path)], check=True, timeout=30)


@pytest.fixture
def served(tmp_path: Path, sshd: Sshd) -> Iterator[Path]:
    """A bare repository in the git user's home with one commit, refusing non-fast-forwards."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "example.com").write_text(ZONE)
    git(seed, "add", "example.com")
    git(seed, "commit", "-q", "-m", "zones")
    holder = Path(tempfile.mkdtemp(prefix="gitdns-test-", dir=HOME))
    bare = holder / "zones.git"
    try:
        git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
        git(tmp_path, "config", "--file", str(bare / "config"), "receive.denyNonFastForwards", "1")
        _chown_to_git_user(holder)
        yield bare
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@pytest.fixture
def opened() -> Iterator[list[GitRepo]]:
    repos: list[GitRepo] = []
    yield repos
    for r in repos:
        r.close()


def open_ssh(opened, sshd: Sshd, url: str, path: Path, key: str = "ed25519", **kw) -> GitRepo:
    kw.setdefault("ssh_authenticator", sshd.host_fp)
    r = GitRepo.open_or_clone(url, path, ssh_key=sshd.keys.get(key, key), **kw)
    opened.append(r)
    return r


def test_clone_over_ssh_with_the_pinned_key(tmp_path, sshd, served, opened):
    r = open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone")
    assert r.head() == git(served, "rev-parse", "main").encode()
    assert (tmp_path / "clone" / "example.com").read_text() == ZONE
    # The ~/ form, relative to the git user's home, as in the recipe.
    relative = served.relative_to(HOME)
    url = f"ssh://{USER}@127.0.0.1:{sshd.port}/~/{relative}"
    assert open_ssh(opened, sshd, url, tmp_path / "clone2").head() == r.head()


def test_commit_and_push_over_ssh(tmp_path, sshd, served, opened):
    r = open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone")
    c = commit_files(
        r, {"example.com": (ZONE + "www 300 IN A 192.0.2.1\n").encode()}, "add www", AUTHOR
    )
    result = push(r)
    assert result.ok, result
    assert git(served, "rev-parse", "main").encode() == c
    assert git(served, "log", "-1", "--format=%an|%s", "main") == "gitdns|add www"
    assert "www 300 IN A 192.0.2.1" in git(served, "show", "main:example.com")


def test_rejected_over_ssh_then_recovered(tmp_path, sshd, served, opened, monkeypatch):
    r = open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone")
    operator = tmp_path / "operator"
    git(tmp_path, "clone", "-q", str(served), str(operator))
    (operator / "other.zone").write_text("; operator\n")
    git(operator, "add", "other.zone")
    git(operator, "commit", "-q", "-m", "operator")
    git(operator, "push", "-q", "origin", "main")
    _chown_to_git_user(served)
    theirs = git(served, "rev-parse", "main").encode()

    mine = commit_files(r, {"example.com": b"; mine\n"}, "mine", AUTHOR)
    assert push(r).status == "rejected"  # client-side: the advertised tip is not ours
    with monkeypatch.context() as m:  # and the server's own check, git receive-pack's "ng"
        m.setattr(gitwrite, "check_diverged", lambda *a: None)
        result = push(r)
    assert result.status == "rejected", result
    assert "non-fast-forward" in result.error
    assert git(served, "rev-parse", "main").encode() == theirs

    r.fetch()
    assert reset_to_remote(r) == [mine]
    again = commit_files(r, {"example.com": b"; mine\n"}, "mine again", AUTHOR)
    assert push(r).ok
    assert git(served, "rev-parse", "main").encode() == again


def test_wrong_pin_is_refused_with_both_fingerprints(tmp_path, sshd, served, opened):
    with pytest.raises(GitError) as info:
        open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone", ssh_authenticator=OTHER_PIN)
    text = str(info.value)
    assert sshd.host_fp in text and OTHER_PIN in text
    assert "refusing to connect" in text
    assert not (tmp_path / "clone").exists()


def test_no_pin_is_refused_and_says_how_to_pin(tmp_path, sshd, served, opened):
    with pytest.raises(GitError) as info:
        open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone", ssh_authenticator=None)
    text = str(info.value)
    assert f"--ssh-authenticator {sshd.host_fp}" in text
    assert "never trusts an unknown host key" in text


def test_pinning_the_rsa_host_key_works_too(tmp_path, sshd, served, opened):
    """paramiko prefers the ed25519 host key; a pinned RSA fingerprint is found all the same."""
    r = open_ssh(
        opened,
        sshd,
        sshd.url(served),
        tmp_path / "clone",
        key="rsa",
        ssh_authenticator=sshd.host_rsa_fp,
    )
    assert r.head() == git(served, "rev-parse", "main").encode()
    commit_files(r, {"example.com": b"; rsa\n"}, "via rsa", AUTHOR)
    assert push(r).ok


def test_a_key_the_server_does_not_accept(tmp_path, sshd, served, opened):
    with pytest.raises(GitError) as info:
        open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone", key=sshd.stranger_key)
    text = str(info.value)
    assert "does not accept key SHA256:" in text and f"for user {USER}" in text
    assert "BEGIN OPENSSH" not in text


def test_the_seeds_ed25519_seed_key(tmp_path, sshd, served, opened):
    r = open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone", key="seed")
    commit_files(r, {"new.zone": b"; seed\n"}, "via seed key", AUTHOR)
    assert push(r).ok
    assert git(served, "show", "main:new.zone") == "; seed"


def test_push_with_a_host_key_problem_is_unreachable(tmp_path, sshd, served, opened, caplog):
    """A clone reopened with a wrong pin serves its local copy; its pushes report the host key
    problem and keep the commit local."""
    open_ssh(opened, sshd, sshd.url(served), tmp_path / "clone").close()
    with caplog.at_level(logging.WARNING, logger="gitdns.git"):
        r = open_ssh(
            opened, sshd, sshd.url(served), tmp_path / "clone", ssh_authenticator=OTHER_PIN
        )
    assert "serving from the local clone" in caplog.text
    c = commit_files(r, {"example.com": b"; offline\n"}, "offline", AUTHOR)
    result = push(r)
    assert result.status == "unreachable"
    assert sshd.host_fp in result.error and OTHER_PIN in result.error
    assert ahead_of_remote(r) == [c]


# -- smart HTTP with a login ---------------------------------------------------------------------


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """dulwich's smart-HTTP server in a thread on 127.0.0.1, behind HTTP basic auth (u:s3cret)."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "example.com").write_text(ZONE)
    git(seed, "add", "example.com")
    git(seed, "commit", "-q", "-m", "zones")
    bare = tmp_path / "zones.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    with http_git_server(bare, ("u", "s3cret")) as url:
        yield url, bare


def test_http_clone_commit_push_with_credentials_file(tmp_path, http_remote, opened, caplog):
    url, bare = http_remote
    creds = tmp_path / "creds"
    creds.write_text("u:s3cret\n")
    r = GitRepo.open_or_clone(url, tmp_path / "clone", credentials_file=str(creds))
    opened.append(r)
    assert r.head() == git(bare, "rev-parse", "main").encode()
    c = commit_files(r, {"example.com": b"; over http\n"}, "over http", AUTHOR)
    assert push(r).ok
    assert git(bare, "rev-parse", "main").encode() == c
    assert git(bare, "show", "main:example.com") == "; over http"

    # A wrong password: the clone is served as it is, pushes stay local, no secret is shown.
    creds.write_text("u:wr0ng\n")
    r.close()
    with caplog.at_level(logging.WARNING, logger="gitdns.git"):
        r = GitRepo.open_or_clone(url, tmp_path / "clone", credentials_file=str(creds))
    opened.append(r)
    assert "serving from the local clone" in caplog.text
    mine = commit_files(r, {"example.com": b"; refused\n"}, "refused", AUTHOR)
    result = push(r)
    assert result.status == "unreachable"
    assert ahead_of_remote(r) == [mine]
    assert "wr0ng" not in result.error and "wr0ng" not in caplog.text


def test_http_credentials_in_the_url_are_never_shown(tmp_path, http_remote, opened, caplog):
    url, bare = http_remote
    good = url.replace("http://", "http://u:s3cret@")
    with caplog.at_level(logging.INFO, logger="gitdns.git"):
        r = GitRepo.open_or_clone(good, tmp_path / "clone")
        opened.append(r)
        c = commit_files(r, {"example.com": b"; url login\n"}, "url login", AUTHOR)
        assert push(r).ok
    assert git(bare, "rev-parse", "main").encode() == c
    assert "s3cret" not in caplog.text and "u:***@127.0.0.1" in caplog.text

    bad = url.replace("http://", "http://u:wr0ng@")
    with pytest.raises(GitError) as info:
        GitRepo.open_or_clone(bad, tmp_path / "clone-bad")
    assert "wr0ng" not in str(info.value) and "u:***@127.0.0.1" in str(info.value)
    assert not (tmp_path / "clone-bad").exists()
    r.close()
    r = GitRepo.open_or_clone(bad, tmp_path / "clone")  # same remote, another password
    opened.append(r)
    commit_files(r, {"example.com": b"; refused\n"}, "refused", AUTHOR)
    result = push(r)
    assert result.status == "unreachable"
    assert "wr0ng" not in result.error and "u:***@127.0.0.1" in result.error
