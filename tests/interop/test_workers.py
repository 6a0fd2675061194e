"""`gitdns serve --workers 2` on loopback (workers.py): two processes answer on one port, every
version the main installs is served by both, deferred requests are relayed, a killed worker is
restarted, and the workers stop with the main."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from tests.interop.peers import free_port, make_git_repo, read_frame, start_gitdns

KEYNAME = "personal._update.example.test"
SECRET = base64.b64encode(b"w" * 32).decode()
ZONE = """$ORIGIN example.test.
$TTL 300
@       IN SOA  ns1 hostmaster 10 3600 600 86400 60
        IN NS   ns1
ns1     IN A    192.0.2.1
www     IN A    192.0.2.80
"""
KEYRING = dns.tsigkeyring.from_text({KEYNAME: ("hmac-sha256", SECRET)})
PORTS = 50
WORKER_LINE = "[worker 1 pid"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"worker 1 started \(pid (\d+)\)", log.read_text())]


@pytest.fixture
def served(tmp_path):
    repo = make_git_repo(tmp_path / "repo", {
        "example.test": ZONE, "_keys": f"{KEYNAME}. DNSKEY 0 3 163 {SECRET}\n"})
    port = free_port()
    log = tmp_path / "gitdns.log"
    peer = start_gitdns(repo, port, tmp_path / "data", ["--workers", "2", "--log-queries",
                        "--log-level", "debug", "--axfr-unauthenticated"],
                        zones=["example.test"], log_path=log)
    try:
        # The worker binds its sockets once it has loaded: wait for that.
        _wait(lambda: "worker 1 ready" in log.read_text(), 20, "the worker to serve")
        yield peer, port, repo, log
    finally:
        peer.stop()


def ask_from_ports(port: int, name: str, rdtype: str = "A", count: int = PORTS):
    """The answer to one query from each of `count` sockets (so `count` source ports)."""
    answers = []
    for _ in range(count):
        q = dns.message.make_query(name, rdtype)
        answers.append(dns.query.udp(q, "127.0.0.1", port=port, timeout=3))
    return answers


def addresses(answers) -> list[set[str]]:
    return [{rd.address for rrset in r.answer for rd in rrset} for r in answers]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.test", *args],
                   cwd=repo, check=True, capture_output=True, timeout=30)


def test_two_processes_answer_many_ports(served):
    _peer, port, _repo, log = served
    before = log.read_text().count(WORKER_LINE + "")
    answers = ask_from_ports(port, "www.example.test.", count=100)
    assert all(r.rcode() == dns.rcode.NOERROR for r in answers)
    assert addresses(answers) == [{"192.0.2.80"}] * 100
    text = _wait(lambda: (t := log.read_text()).count("www.example.test. A -> NOERROR") >= 100
                 and t, 5, "the query log")
    lines = [line for line in text.splitlines() if "www.example.test. A -> NOERROR" in line]
    by_worker = sum(WORKER_LINE in line for line in lines)
    assert 0 < by_worker < len(lines), "both processes answer"
    assert log.read_text().count(WORKER_LINE) > before


def test_update_seen_from_every_port_and_relayed(served):
    """Each UPDATE from its own source port; after each NOERROR, 50 ports all see the change.
    Some of the 12 come in through the worker (relayed; 2^-12 odds that none does)."""
    _peer, port, _repo, log = served
    for i in range(12):
        update = dns.update.UpdateMessage("example.test", keyring=KEYRING, keyname=KEYNAME,
                                          keyalgorithm="hmac-sha256")
        update.add(f"host{i}", 300, "A", f"198.51.100.{i + 1}")
        reply = dns.query.udp(update, "127.0.0.1", port=port, timeout=5)
        assert reply.rcode() == dns.rcode.NOERROR
        answers = ask_from_ports(port, f"host{i}.example.test.")
        assert addresses(answers) == [{f"198.51.100.{i + 1}"}] * PORTS
    assert "relaying a request from 127.0.0.1 over UDP" in log.read_text()


@pytest.mark.skipif(shutil.which("nsupdate") is None, reason="nsupdate comes with bind9-dnsutils")
def test_nsupdate_then_every_port(served):
    _peer, port, _repo, _log = served
    script = (f"server 127.0.0.1 {port}\nzone example.test\n"
              "update add nsu.example.test 300 A 203.0.113.7\nsend\n")
    out = subprocess.run(["nsupdate", "-y", f"hmac-sha256:{KEYNAME}:{SECRET}"], input=script,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert addresses(ask_from_ports(port, "nsu.example.test.")) == [{"203.0.113.7"}] * PORTS


def test_axfr_through_both_processes(served):
    """AXFRs over 16 connections (16 source ports): all complete, some through the worker."""
    _peer, port, _repo, log = served
    for _ in range(16):
        messages = list(dns.query.xfr("127.0.0.1", "example.test", port=port, timeout=5))
        names = {rrset.name.to_text() for m in messages for rrset in m.answer}
        assert "www" in names
    assert "relaying a request from 127.0.0.1 over TCP" in log.read_text()


def test_sighup_reload_seen_from_every_port(served):
    peer, port, repo, _log = served
    (repo / "example.test").write_text(ZONE.replace(" 10 3600", " 11 3600")
                                       + "fresh   IN A    192.0.2.99\n")
    _git(repo, "commit", "-qam", "fresh")
    os.kill(peer.proc.pid, signal.SIGHUP)
    _wait(lambda: all(a == {"192.0.2.99"} for a in addresses(
        ask_from_ports(port, "fresh.example.test.", count=10))), 10, "the reload")
    assert addresses(ask_from_ports(port, "fresh.example.test.")) == [{"192.0.2.99"}] * PORTS


def test_killed_worker_is_restarted(served):
    _peer, port, _repo, log = served
    first, = _worker_pids(log)
    os.kill(first, signal.SIGKILL)
    # Once it is gone (a query already queued on its socket went with it), and until the new
    # worker serves, the main answers alone.
    _wait(lambda: "ended (signal 9)" in log.read_text(), 5, "the main to see the death")
    assert addresses(ask_from_ports(port, "www.example.test.", count=20)) == [{"192.0.2.80"}] * 20
    _wait(lambda: len(_worker_pids(log)) == 2, 10, "a restart")
    second = _worker_pids(log)[1]
    assert second != first
    _wait(lambda: log.read_text().count("worker 1 ready") == 2, 20, "the new worker")
    assert addresses(ask_from_ports(port, "www.example.test.")) == [{"192.0.2.80"}] * PORTS
    # the new worker answers too
    text = log.read_text()
    assert f"[worker 1 pid {second}] gitdns.queries" in text


def test_sigterm_stops_every_process(served):
    peer, _port, _repo, log = served
    pid, = _worker_pids(log)
    assert Path(f"/proc/{pid}").exists()
    peer.proc.send_signal(signal.SIGTERM)
    assert peer.proc.wait(10) == 0
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 5, "the worker to end")


def test_worker_dies_with_a_killed_main(served):
    peer, port, _repo, log = served
    pid, = _worker_pids(log)
    peer.proc.kill()
    peer.proc.wait(10)
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 5, "the worker to end")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # nobody is left on the port
        probe.bind(("127.0.0.1", port))
    finally:
        probe.close()


def test_a_notified_secondary_finds_the_new_serial_on_every_port(tmp_path):
    """NOTIFY goes out once the workers serve the new version: a secondary that asks for the
    SOA the moment it is told (as BIND and Knot do) gets the new serial from every process."""
    repo = make_git_repo(tmp_path / "repo", {"example.test": ZONE})
    secondary = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    secondary.bind(("127.0.0.1", 0))
    secondary.settimeout(10)
    port = free_port()
    log = tmp_path / "gitdns.log"
    peer = start_gitdns(repo, port, tmp_path / "data",
                        ["--workers", "2", "--notify", "explicit", "--also-notify",
                         f"127.0.0.1:{secondary.getsockname()[1]}"],
                        zones=["example.test"], log_path=log)
    try:
        _wait(lambda: "worker 1 ready" in log.read_text(), 20, "the worker to serve")
        for serial in range(11, 17):
            (repo / "example.test").write_text(ZONE.replace(" 10 3600", f" {serial} 3600"))
            _git(repo, "commit", "-qam", f"serial {serial}")
            os.kill(peer.proc.pid, signal.SIGHUP)
            while True:  # NOTIFYs of older serials may still be retransmitted
                wire, sender = secondary.recvfrom(65535)
                notify = dns.message.from_wire(wire)
                secondary.sendto(dns.message.make_response(notify).to_wire(), sender)
                if notify.answer and notify.answer[0][0].serial == serial:
                    break
            serials = {r.answer[0][0].serial
                       for r in ask_from_ports(port, "example.test.", "SOA", count=20)}
            assert serials == {serial}
    finally:
        peer.stop()
        secondary.close()


def test_a_hidden_secondary_gets_its_answer_before_the_notifies(tmp_path):
    """A signed SOA query over TCP with a transfer key for `test.` (not served) registers the
    connection, and the NOTIFY for example.test follows the answer: through the worker too
    (the main sends the answer and the NOTIFY one after the other; the worker must write them
    in that order). 60 connections: some land on each process."""
    watch_key = "watch._transfer.test"
    watch_secret = base64.b64encode(b"h" * 32).decode()
    repo = make_git_repo(tmp_path / "repo", {
        "example.test": ZONE, "_keys": f"{watch_key}. DNSKEY 0 3 163 {watch_secret}\n"})
    port = free_port()
    log = tmp_path / "gitdns.log"
    peer = start_gitdns(repo, port, tmp_path / "data", ["--workers", "2", "--log-level", "debug"],
                        zones=["example.test"], log_path=log)
    keyring = dns.tsigkeyring.from_text({watch_key: ("hmac-sha256", watch_secret)})
    try:
        _wait(lambda: "worker 1 ready" in log.read_text(), 20, "the worker to serve")
        for _ in range(60):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                q = dns.message.make_query("test.", "SOA")
                q.use_tsig(keyring, watch_key, algorithm="hmac-sha256")
                s.sendall(q.to_wire(prepend_length=True))
                answer = dns.message.from_wire(read_frame(s), keyring=keyring, request_mac=q.mac)
                assert answer.id == q.id and answer.rcode() == dns.rcode.REFUSED
                notify = dns.message.from_wire(read_frame(s), keyring=keyring)
                assert notify.opcode() == dns.opcode.NOTIFY
        assert "relaying a request from 127.0.0.1 over TCP" in log.read_text()
    finally:
        peer.stop()
