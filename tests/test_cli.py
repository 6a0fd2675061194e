"""The command line: init, check (and the README's pre-commit hook), keygen."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZONE = """$ORIGIN example.test.
$TTL 300
@ SOA ns hostmaster {serial} 3600 600 86400 60
@ NS ns
ns A 192.0.2.1
www A 192.0.2.{host}
"""


def gitdns(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gitdns", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )


def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )


def test_init_makes_a_repository_that_checks_and_holds_a_key(tmp_path):
    repo = tmp_path / "zones"
    out = gitdns("init", "zones", cwd=tmp_path)  # a relative path, as an operator types it
    assert out.returncode == 0, out.stderr
    assert "gitdns serve --remote" in out.stdout and "dig @127.0.0.1" in out.stdout
    log = git(repo, "log", "--format=%s")
    assert log.returncode == 0 and "gitdns init" in log.stdout
    assert git(repo, "status", "--porcelain").stdout == ""
    check = gitdns("check", str(repo / "example.test"))
    assert check.returncode == 0, check.stderr
    text = (repo / "example.test").read_text()
    for rtype in ("SOA", "NS", "A", "AAAA", "MX", "TXT", "CNAME"):
        assert re.search(rf"\sIN {rtype}\s", text), rtype
    assert "*.users" in text
    keyline = (repo / "_keys").read_text().splitlines()[-1].split()
    assert keyline[:5] == ["personal._update.example.test.", "DNSKEY", "0", "3", "163"]
    assert len(base64.b64decode(keyline[5])) == 32
    assert keyline[5] in out.stdout  # the printed key is the stored one
    # A second init never overwrites.
    again = gitdns("init", str(repo))
    assert again.returncode == 1 and "not empty" in again.stderr


def test_check_reports_file_and_line_and_fails(tmp_path):
    zone = tmp_path / "example.test"
    zone.write_text(ZONE.format(serial=1, host=1) + "www CNAME other.test.\nbad A 300.1.1.1\n")
    out = gitdns("check", str(zone))
    assert out.returncode == 1
    assert f"{zone}:8:" in out.stderr  # the syntax error comes first: the file does not parse


def test_check_rule_errors_name_the_line(tmp_path):
    zone = tmp_path / "example.test"
    zone.write_text(ZONE.format(serial=1, host=1) + "www CNAME other.test.\n")
    out = gitdns("check", str(zone))
    assert out.returncode == 1
    assert f"{zone}:7: CNAME at www.example.test. beside other data (A)" in out.stderr


def test_check_old_demands_a_serial_increase(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text(ZONE.format(serial=5, host=1))
    new.write_text(ZONE.format(serial=5, host=2))
    out = gitdns("check", str(new), "--zone", "example.test", "--old", str(old))
    assert out.returncode == 1 and "not greater than the old serial 5" in out.stderr
    new.write_text(ZONE.format(serial=6, host=2))
    assert gitdns("check", str(new), "--zone", "example.test", "--old", str(old)).returncode == 0
    # An unchanged zone needs no new serial.
    same = tmp_path / "same"
    same.write_text(ZONE.format(serial=5, host=1))
    assert gitdns("check", str(same), "--zone", "example.test", "--old", str(old)).returncode == 0


def _readme_hook() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```sh\n(#!/bin/sh\n.*?)```", readme, re.S)
    assert match, "the README shows the pre-commit hook"
    return match.group(1)


@pytest.mark.skipif(not os.path.exists("/usr/bin/git"), reason="needs the git program")
def test_readme_pre_commit_hook_refuses_bad_commits(tmp_path):
    repo = tmp_path / "zones"
    repo.mkdir()
    assert git(repo, "init", "-q", "-b", "main").returncode == 0
    hook = repo / ".git" / "hooks" / "pre-commit"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "gitdns"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m gitdns \"$@\"\n")
    shim.chmod(0o755)
    hook.write_text(_readme_hook())
    hook.chmod(0o755)
    env_path = f"{bindir}:{os.environ['PATH']}"

    def commit(msg: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", msg],
            cwd=repo, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PATH": env_path},
        )

    (repo / "example.test").write_text(ZONE.format(serial=1, host=1))
    git(repo, "add", "example.test")
    assert commit("good").returncode == 0
    (repo / "example.test").write_text(ZONE.format(serial=1, host=2))  # serial not raised
    git(repo, "add", "example.test")
    refused = commit("serial kept")
    assert refused.returncode != 0 and "not greater than the old serial 1" in refused.stderr
    (repo / "example.test").write_text(ZONE.format(serial=2, host=2) + "www CNAME x.test.\n")
    git(repo, "add", "example.test")
    refused = commit("cname clash")
    assert refused.returncode != 0 and ":7: CNAME at www.example.test." in refused.stderr
    (repo / "example.test").write_text(ZONE.format(serial=2, host=2))
    git(repo, "add", "example.test")
    assert commit("fixed").returncode == 0
    assert git(repo, "log", "--format=%s").stdout.split() == ["fixed", "good"]


def test_keygen_prints_the_three_forms(tmp_path):
    out = gitdns("keygen", "ns2._transfer.example.test", "--algorithm", "hmac-sha512")
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if not ln.startswith(";")]
    dnskey, ours, bind = lines
    secret = dnskey.split()[-1]
    assert dnskey.startswith("ns2._transfer.example.test. DNSKEY 0 3 165 ")
    assert len(base64.b64decode(secret)) == 64
    assert ours == f"ns2._transfer.example.test:hmac-sha512:{secret}"
    assert bind == f"hmac-sha512:ns2._transfer.example.test:{secret}"
    bad = gitdns("keygen", "x", "--algorithm", "md5")
    assert bad.returncode == 2 and "unknown TSIG algorithm" in bad.stderr


def test_ssh_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path):
    from cryptography.hazmat.primitives import serialization

    path = tmp_path / "id"
    out = gitdns("ssh-keygen", str(path))
    assert out.returncode == 0, out.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    public = [ln for ln in out.stdout.splitlines() if ln.startswith("ssh-ed25519 ")]
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH).decode()
    assert public and public[0].split()[:2] == derived.split()[:2]
    again = gitdns("ssh-keygen", str(path))
    assert again.returncode == 1 and "not overwritten" in again.stderr
