"""Issue 5 against the real programs: nsupdate and dig on a primary whose remote is a local bare
repository, an sshd on loopback or an http server; operator pushes racing updates, a remote that
is down, kill -9 after an acknowledged update; bad updates that change nothing."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from tests.interop.peers import free_port, http_git_server, start_gitdns
from tests.interop.test_git_remotes import HOME, _chown_to_git_user, sshd  # noqa: F401

NSUPDATE = shutil.which("nsupdate")
pytestmark = pytest.mark.skipif(NSUPDATE is None, reason="nsupdate comes with bind9-dnsutils")
KEYNAME = "personal._update.example.test"
SECRET = base64.b64encode(b"p" * 32).decode()
KEY = f"hmac-sha256:{KEYNAME}:{SECRET}"
ZONE = """; the operator's zone file: comments and layout must survive updates
$ORIGIN example.test.
$TTL 300
@       IN SOA  ns1 hostmaster (
                10         ; serial
                3600 600 86400 60 )
        IN NS   ns1
ns1     IN A    192.0.2.1   ; the name server
www     IN A    192.0.2.80
"""


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=operator", "-c", "user.email=op@example.test",
         "-c", "safe.directory=*", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def make_bare(tmp_path: Path, where: Path | None = None) -> Path:
    seed = tmp_path / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "example.test").write_text(ZONE)
    (seed / "_keys").write_text(f"{KEYNAME}. DNSKEY 0 3 163 {SECRET}\n")
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "zones")
    bare = (where or tmp_path) / "zones.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    git(tmp_path, "config", "--file", str(bare / "config"), "receive.denyNonFastForwards", "true")
    return bare


def nsupdate(port: int, commands: str, *args: str) -> subprocess.CompletedProcess:
    script = f"server 127.0.0.1 {port}\nzone example.test\n{commands}\nsend\n"
    return subprocess.run([NSUPDATE, *args], input=script, capture_output=True, text=True,
                          timeout=60)


def ask(port: int, name: str, rdtype: str = "A"):
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)


def serial(port: int) -> int:
    return ask(port, "example.test", "SOA").answer[0][0].serial


def remote_log(bare: Path, fmt: str = "%s") -> list[str]:
    return git(bare, "--git-dir", str(bare), "log", f"--format={fmt}", "main").splitlines()


def remote_file(bare: Path, name: str = "example.test") -> str:
    return git(bare, "--git-dir", str(bare), "show", f"main:{name}")


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (AssertionError, OSError, dns.exception.DNSException):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def operator_push(tmp_path: Path, bare: Path, edit) -> None:
    """An operator clones, edits the zone file, commits and pushes (without telling gitdns)."""
    work = tmp_path / f"operator-{time.monotonic_ns()}"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    edit(work)
    git(work, "commit", "-q", "-am", "operator edit")
    git(work, "push", "-q", "origin", "main")


def changed_lines(bare: Path, rev: str = "main") -> list[str]:
    diff = git(bare, "--git-dir", str(bare), "show", "--format=", rev)
    return [ln for ln in diff.splitlines()
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


@pytest.fixture
def primary(tmp_path):
    bare = make_bare(tmp_path)
    port = free_port()
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    yield peer, bare, port
    peer.stop()


def test_nsupdate_add_is_served_committed_and_pushed_with_a_two_line_diff(primary):
    peer, bare, port = primary
    out = nsupdate(port, "update add www2.example.test 300 A 192.0.2.7", "-y", KEY)
    assert out.returncode == 0, out.stderr
    assert ask(port, "www2.example.test").answer[0][0].address == "192.0.2.7"
    assert serial(port) == 11
    wait_for(lambda: len(remote_log(bare)) == 2, what="the commit on the remote")
    assert remote_log(bare, "%an <%ae>|%s")[0] == (
        f"{KEYNAME} <{KEYNAME}@127.0.0.1>|update example.test by {KEYNAME} from 127.0.0.1: "
        "+www2 300 A 192.0.2.7")
    lines = changed_lines(bare)
    assert len(lines) == 3, lines  # the serial (one line out, one in) and the new record
    assert re.fullmatch(r"-\s+10\s+; serial", lines[0]) and re.fullmatch(r"\+\s+11\s+; serial",
                                                                        lines[1]), lines
    # The TTL equals the $TTL in force, so the file's style leaves it out.
    assert re.fullmatch(r"\+www2\s+IN\s+A\s+192\.0\.2\.7", lines[2]), lines
    assert "; the operator's zone file" in remote_file(bare)


def test_nsupdate_over_tcp_with_a_key_file_and_delete(primary, tmp_path):
    peer, bare, port = primary
    keyfile = tmp_path / "k.key"
    keyfile.write_text(f'key "{KEYNAME}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};\n')
    out = nsupdate(port, "update delete www.example.test A\nupdate add mail.example.test 600 "
                         "MX 10 www.example.test.", "-v", "-k", str(keyfile))
    # The MX points at www whose address was deleted: www is inside the zone, so the loader's
    # rule (an MX target needs an address) refuses the whole update.
    assert out.returncode != 0 and "REFUSED" in out.stdout + out.stderr
    assert ask(port, "www.example.test").answer  # nothing changed
    assert "refused" in peer.log_text(300) and "has no address" in peer.log_text(300)
    out = nsupdate(port, "update delete www.example.test A", "-v", "-k", str(keyfile))
    assert out.returncode == 0, out.stderr
    assert ask(port, "www.example.test").rcode() == dns.rcode.NXDOMAIN
    wait_for(lambda: "www" not in remote_file(bare).split("name server")[-1],
             what="the deletion on the remote")
    assert [ln[0] for ln in changed_lines(bare)] == ["-", "+", "-"]  # serial out/in, www out


def test_gitdns_update_tool_sends_several_changes_at_once(primary):
    peer, bare, port = primary
    out = subprocess.run(
        [sys.executable, "-m", "gitdns", "update", "--server", f"127.0.0.1:{port}",
         "--key", f"{KEYNAME}:hmac-sha256:{SECRET}", "--zone", "example.test",
         "add", "a", "300", "A", "192.0.2.10", "add", "t", "60", "TXT", '"hello world"',
         "delete", "www", "A"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "update of example.test. accepted" in out.stdout
    assert ask(port, "a.example.test").answer[0][0].address == "192.0.2.10"
    assert ask(port, "t.example.test", "TXT").answer[0][0].strings == (b"hello world",)
    assert serial(port) == 11  # one update, one serial step
    wait_for(lambda: len(remote_log(bare)) == 2, what="one commit for the update")


def test_bad_updates_change_nothing(primary):
    peer, bare, port = primary
    before_local = serial(port)
    # unsigned: REFUSED
    u = dns.update.UpdateMessage("example.test")
    u.add("x", 300, "A", "192.0.2.1")
    assert dns.query.tcp(u, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.REFUSED
    # wrong secret: NOTAUTH/BADSIG (dnspython raises on the unsigned error answer)
    bad = dns.tsigkeyring.from_text({KEYNAME: base64.b64encode(b"x" * 32).decode()})
    u = dns.update.UpdateMessage("example.test", keyring=bad, keyname=KEYNAME)
    u.add("x", 300, "A", "192.0.2.1")
    with pytest.raises(dns.tsig.PeerBadSignature):
        dns.query.tcp(u, "127.0.0.1", port=port, timeout=5)
    good = dns.tsigkeyring.from_text({KEYNAME: SECRET})
    # a zone we do not serve: NOTAUTH
    u = dns.update.UpdateMessage("other.test", keyring=good, keyname=KEYNAME)
    u.add("x", 300, "A", "192.0.2.1")
    assert dns.query.tcp(u, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NOTAUTH
    # a record outside the zone: NOTZONE
    u = dns.update.UpdateMessage("example.test", keyring=good, keyname=KEYNAME)
    u.add("x.other.test.", 300, "A", "192.0.2.1")
    assert dns.query.tcp(u, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NOTZONE
    # a prerequisite that does not hold: NXRRSET, and its add is not applied
    u = dns.update.UpdateMessage("example.test", keyring=good, keyname=KEYNAME)
    u.present("nothere", "A")
    u.add("x", 300, "A", "192.0.2.1")
    assert dns.query.tcp(u, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NXRRSET
    # a CNAME beside data is ignored (RFC 2136 3.4.2.2): NOERROR, no change
    u = dns.update.UpdateMessage("example.test", keyring=good, keyname=KEYNAME)
    u.add("www", 300, "CNAME", "ns1")
    assert dns.query.tcp(u, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.NOERROR
    # malformed: FORMERR
    u = dns.update.UpdateMessage("example.test", keyring=good, keyname=KEYNAME)
    u.add("x", 300, "A", "192.0.2.1")
    wire = bytearray(u.to_wire())
    wire[5] = 2  # ZOCOUNT 2: the message no longer parses
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(len(wire).to_bytes(2, "big") + bytes(wire))
        size = int.from_bytes(s.recv(2), "big")
        reply = s.recv(size)
    assert reply[3] & 0xF == dns.rcode.FORMERR
    time.sleep(0.5)
    assert serial(port) == before_local
    assert len(remote_log(bare)) == 1
    assert ask(port, "x.example.test").rcode() == dns.rcode.NXDOMAIN


def test_operator_push_between_two_updates_is_merged_and_nothing_lost(primary, tmp_path):
    peer, bare, port = primary
    assert nsupdate(port, "update add one.example.test 300 A 192.0.2.11", "-y",
                    KEY).returncode == 0
    wait_for(lambda: len(remote_log(bare)) == 2, what="the first update on the remote")

    def edit(work: Path):
        path = work / "example.test"
        text = path.read_text().replace("11         ; serial", "20         ; serial")
        path.write_text(text + "op      IN A    192.0.2.99 ; added by the operator\n")

    operator_push(tmp_path, bare, edit)  # gitdns is not told
    assert nsupdate(port, "update add two.example.test 300 A 192.0.2.12", "-y",
                    KEY).returncode == 0
    wait_for(lambda: len(remote_log(bare)) == 4, what="the second update replayed and pushed")
    text = remote_file(bare)
    for needle in ("one", "two", "op      IN A    192.0.2.99 ; added by the operator"):
        assert needle in text
    assert re.search(r"\b21\s+; serial", text), text  # raised above the operator's 20
    assert "operator edit" in remote_log(bare)[1]
    wait_for(lambda: ask(port, "op.example.test").answer, what="the operator's record served")
    assert ask(port, "two.example.test").answer[0][0].address == "192.0.2.12"
    assert "replaying 1 local commit" in peer.log_text(500)


def test_remote_down_for_a_while_then_back(primary, tmp_path):
    peer, bare, port = primary
    away = tmp_path / "away.git"
    bare.rename(away)
    for i in range(3):
        out = nsupdate(port, f"update add d{i}.example.test 300 A 192.0.2.{30 + i}", "-y", KEY)
        assert out.returncode == 0, out.stderr  # accepted and committed locally meanwhile
    assert ask(port, "d2.example.test").answer
    wait_for(lambda: "not pushed yet" in peer.log_text(500), what="the push failure logged")
    away.rename(bare)
    # Updates that arrive together may share a commit (its message lists each of them).

    def all_three():
        text = remote_file(bare)
        return all(re.search(rf"^d{i}\s", text, re.M) for i in range(3))

    wait_for(all_three, timeout=40, what="all three updates pushed")
    messages = git(bare, "--git-dir", str(bare), "log", "--format=%B", "main")
    assert all(f"+d{i} 300 A 192.0.2.{30 + i}" in messages for i in range(3))


def test_kill_9_after_an_acknowledged_update_loses_nothing(tmp_path):
    bare = make_bare(tmp_path)
    port = free_port()
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    away = tmp_path / "away.git"
    try:
        bare.rename(away)  # the push cannot happen before the kill
        assert nsupdate(port, "update add k.example.test 300 A 192.0.2.40", "-y",
                        KEY).returncode == 0
        peer.proc.send_signal(signal.SIGKILL)
        peer.proc.wait(10)
    finally:
        peer.stop()
    away.rename(bare)
    assert len(remote_log(bare)) == 1
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    try:
        assert ask(port, "k.example.test").answer[0][0].address == "192.0.2.40"
        wait_for(lambda: len(remote_log(bare)) == 2, what="the update pushed after restart")
        assert re.search(r"^k\s+IN\s+A\s+192\.0\.2\.40$", remote_file(bare), re.M)
    finally:
        peer.stop()
    # Kill -9 right after the acknowledgement with the remote up: also nothing lost.
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    try:
        assert nsupdate(port, "update add k2.example.test 300 A 192.0.2.41", "-y",
                        KEY).returncode == 0
        os.kill(peer.proc.pid, signal.SIGKILL)
        peer.proc.wait(10)
    finally:
        peer.stop()
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    try:
        wait_for(lambda: "k2" in remote_file(bare), what="k2 on the remote")
        assert ask(port, "k2.example.test").answer
    finally:
        peer.stop()


def test_update_that_cannot_be_replayed_is_kept_on_a_branch(primary, tmp_path):
    peer, bare, port = primary
    away = tmp_path / "away.git"
    bare.rename(away)
    assert nsupdate(port, "update add lost.example.test 300 A 192.0.2.50", "-y",
                    KEY).returncode == 0
    # Meanwhile the operator deletes the zone from the repository.
    work = tmp_path / "op"
    git(tmp_path, "clone", "-q", str(away), str(work))
    git(work, "rm", "-q", "example.test")
    git(work, "commit", "-q", "-m", "drop example.test")
    git(work, "push", "-q", "origin", "main")
    away.rename(bare)
    branches = wait_for(
        lambda: [b for b in git(bare, "--git-dir", str(bare), "branch", "--list",
                                "gitdns/unmerged/*").split() if b.startswith("gitdns/")],
        timeout=40, what="the unmerged branch on the remote")
    kept = git(bare, "--git-dir", str(bare), "show", f"{branches[0]}:example.test")
    assert "lost" in kept
    assert "is impossible" in peer.log_text(500) and "gitdns/unmerged/" in peer.log_text(500)


def test_updates_over_an_ssh_remote_with_a_pinned_host_key(tmp_path, sshd):  # noqa: F811
    import tempfile

    holder = Path(tempfile.mkdtemp(prefix="gitdns-upd-", dir=HOME))
    try:
        bare = make_bare(tmp_path, holder)
        _chown_to_git_user(holder)
        port = free_port()
        with start_gitdns(sshd.url(bare), port, tmp_path / "data",
                          ["--ssh-key", sshd.keys["ed25519"], "--ssh-authenticator",
                           sshd.host_fp], zones=["example.test"]) as peer:
            assert nsupdate(port, "update add s.example.test 300 A 192.0.2.60", "-y",
                            KEY).returncode == 0
            wait_for(lambda: len(remote_log(bare)) == 2, what="the commit on the ssh remote")
            assert remote_log(bare, "%an|%s")[0].startswith(f"{KEYNAME}|update example.test")
            assert len(changed_lines(bare)) == 3
            # The server stops accepting our key: updates are still accepted, the push is
            # retried and the log says why; once the key is accepted again, it goes through.
            auth = Path(sshd.log).parent / "authorized_keys"
            saved = auth.read_text()
            auth.write_text("")
            try:
                assert nsupdate(port, "update add s2.example.test 300 A 192.0.2.61", "-y",
                                KEY).returncode == 0
                wait_for(lambda: "not pushed yet" in peer.log_text(500), what="push failure")
                assert ask(port, "s2.example.test").answer
            finally:
                auth.write_text(saved)
            wait_for(lambda: len(remote_log(bare)) == 3, timeout=40, what="s2 pushed")
            assert "s2" in remote_file(bare)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def test_updates_over_an_http_remote(tmp_path):
    bare = make_bare(tmp_path)
    creds = tmp_path / "creds"
    creds.write_text("u:s3cret\n")
    with http_git_server(bare, ("u", "s3cret")) as url:
        port = free_port()
        with start_gitdns(url, port, tmp_path / "data", ["--credentials-file", str(creds)],
                          zones=["example.test"]) as peer:
            assert nsupdate(port, "update add h.example.test 300 A 192.0.2.70", "-y",
                            KEY).returncode == 0
            wait_for(lambda: len(remote_log(bare)) == 2, what="the commit on the http remote")
            assert re.search(r"^h\s+IN\s+A\s+192\.0\.2\.70$", remote_file(bare), re.M)
            assert "s3cret" not in peer.log_text(1000)


def test_content_changed_without_a_serial_increase_is_served_raised_and_committed(primary,
                                                                                   tmp_path):
    peer, bare, port = primary

    def edit(work: Path):  # a new record, the serial (10) left as it was
        path = work / "example.test"
        path.write_text(path.read_text() + "forgot  IN A    192.0.2.123\n")

    operator_push(tmp_path, bare, edit)
    out = subprocess.run(
        [sys.executable, "-m", "gitdns", "notify", "example.test", "--server",
         f"127.0.0.1:{port}", "--key", f"{KEYNAME}:hmac-sha256:{SECRET}"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert ask(port, "forgot.example.test").answer[0][0].address == "192.0.2.123"
    assert serial(port) == 11  # served with the serial raised, so secondaries see the change
    wait_for(lambda: re.search(r"\b11\s+; serial", remote_file(bare)),
             what="the raised serial committed and pushed")
    assert remote_log(bare)[0].startswith("raise the serial of example.test to 11")
    assert [ln[0] for ln in changed_lines(bare)] == ["-", "+"]  # the serial alone
    assert "its serial 10 is not above the served 10" in peer.log_text(500)


def test_updates_over_a_git_protocol_remote(tmp_path):
    """git:// (git daemon on loopback, receive-pack enabled)."""
    if not shutil.which("git"):
        pytest.skip("the git program runs git daemon")
    bare = make_bare(tmp_path)
    gport = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--enable=receive-pack",
         "--listen=127.0.0.1", f"--port={gport}", f"--base-path={tmp_path}", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", gport), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        port = free_port()
        with start_gitdns(f"git://127.0.0.1:{gport}/zones.git", port, tmp_path / "data",
                          zones=["example.test"]) as peer:
            assert nsupdate(port, "update add g.example.test 300 A 192.0.2.80", "-y",
                            KEY).returncode == 0
            wait_for(lambda: len(remote_log(bare)) == 2, what="the commit over git://")
            assert re.search(r"^g\s+IN\s+A\s+192\.0\.2\.80$", remote_file(bare), re.M)
            assert "Traceback" not in peer.log_text(500)
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_kill_9_in_the_middle_of_a_burst_of_concurrent_updates(tmp_path):
    """Eight clients updating at once; SIGKILL after 100 acknowledgements; every acknowledged
    update is in git after the restart (the journal, its fold and its replay at start)."""
    import asyncio

    keyring = dns.tsigkeyring.from_text({KEYNAME: SECRET})
    bare = make_bare(tmp_path)
    port = free_port()
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    acked: list[str] = []

    async def client(c: int):
        for i in range(10_000):
            u = dns.update.UpdateMessage("example.test", keyring=keyring, keyname=KEYNAME)
            name = f"b{c}x{i}"
            u.add(name, 300, "A", "192.0.2.1")
            try:
                reply = await asyncio.to_thread(dns.query.tcp, u, "127.0.0.1", port=port,
                                                timeout=5)
            except (OSError, EOFError, dns.exception.DNSException):
                return
            if reply.rcode() == dns.rcode.NOERROR:
                acked.append(name)

    async def burst():
        tasks = [asyncio.ensure_future(client(c)) for c in range(8)]
        deadline = time.monotonic() + 60
        while len(acked) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        os.kill(peer.proc.pid, signal.SIGKILL)
        await asyncio.gather(*tasks)

    try:
        asyncio.run(burst())
    finally:
        peer.stop()
    assert len(acked) >= 100
    peer = start_gitdns(bare, port, tmp_path / "data", zones=["example.test"])
    try:
        def all_in_git():
            owners = {line.split()[0] for line in remote_file(bare).splitlines()
                      if line[:1] == "b"}
            return not [n for n in acked if n not in owners]

        wait_for(all_in_git, timeout=60, what="every acknowledged update in git")
        for name in acked[:5] + acked[-5:]:
            assert ask(port, f"{name}.example.test").answer
    finally:
        peer.stop()
