"""Housekeeping in the running server: `gitdns serve` with a low repack limit (set through
GITDNS_REPACK_LOOSE_OBJECTS) repacks its clone between folds while signed updates go on being
answered; every update acknowledged before, during or after a repack is in git, locally and on
the remote, and the clone passes `git fsck --strict`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from tests.interop.peers import free_port, start_gitdns
from tests.interop.test_updates import KEYNAME, SECRET, git, make_bare, remote_file, wait_for

KEYRING = dns.tsigkeyring.from_text({KEYNAME: SECRET})


def update(port: int, name: str, address: str) -> int:
    """One signed UPDATE adding `name` A `address`; the rcode of the answer."""
    u = dns.update.UpdateMessage("example.test", keyring=KEYRING, keyname=KEYNAME)
    u.add(name, 300, "A", address)
    return dns.query.tcp(u, "127.0.0.1", port=port, timeout=10).rcode()


def clone_file(clone: Path) -> str:
    return git(clone, "-c", "safe.directory=*", "show", "HEAD:example.test")


def repacks(peer) -> int:
    return peer.log_text(10_000).count("repacked the clone")


@pytest.fixture
def primary(tmp_path, monkeypatch):
    # Three objects a commit (blob, tree, commit): a repack after every third fold, and the
    # packs merged into one when there are more than three.
    monkeypatch.setenv("GITDNS_REPACK_LOOSE_OBJECTS", "8")
    monkeypatch.setenv("GITDNS_REPACK_PACKS", "3")
    bare = make_bare(tmp_path)
    port = free_port()
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    yield peer, bare, port, tmp_path / "data" / "repository"
    peer.stop()


def test_updates_around_repacks_are_all_in_git(primary):
    peer, bare, port, clone = primary
    names = []

    def paced(name: str, address: str) -> None:
        """One update, then wait for its fold (its commit in the clone)."""
        assert update(port, name, address) == dns.rcode.NOERROR
        names.append(name)
        wait_for(lambda: f"\n{name}" in clone_file(clone), what=f"{name} in the clone")

    # One update per fold: a repack comes every third, a merge of the packs every fourth.
    for i in range(12):
        paced(f"paced{i}", f"192.0.2.{i + 1}")
    wait_for(lambda: repacks(peer) >= 3, what="three repacks")
    # A burst, answered at once while the fold and the push catch up behind it.
    for i in range(30):
        name = f"burst{i}"
        assert update(port, name, f"198.51.100.{i + 1}") == dns.rcode.NOERROR
        names.append(name)
    # And more updates, one a fold, until a repack comes after the burst.
    done = repacks(peer)
    for i in range(8):  # bounded: three folds make a repack due
        paced(f"after{i}", f"203.0.113.{i + 1}")
        if repacks(peer) > done:
            break
    wait_for(lambda: repacks(peer) > done, what="a repack after the burst")

    def all_on_the_remote() -> bool:
        text = remote_file(bare)
        return all(f"\n{n}" in text for n in names)

    wait_for(all_on_the_remote, timeout=60, what="every update on the remote")
    text = clone_file(clone)
    assert all(f"\n{n}" in text for n in names)
    # Served too, and the clone is sound and small.
    reply = dns.query.udp(dns.message.make_query("burst29.example.test", "A"), "127.0.0.1",
                          port=port, timeout=3)
    assert reply.answer[0][0].address == "198.51.100.30"
    fsck = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(clone), "fsck", "--strict",
                           "--no-progress", "--no-dangling"],
                          capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0 and fsck.stdout == "", fsck.stdout + fsck.stderr
    counts = dict(line.split(": ") for line in git(clone, "-c", "safe.directory=*",
                                                   "count-objects", "-v").splitlines())
    assert int(counts["count"]) <= 8 + 3 and 1 <= int(counts["packs"]) <= 4, counts
    log = peer.log_text(10_000)
    assert "housekeeping of the clone" not in log and "Traceback" not in log
    assert "with git:" in log and "packs (more than 3 new)" in log  # loose packed, packs merged
