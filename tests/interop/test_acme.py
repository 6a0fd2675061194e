"""Issue 8 end to end on loopback: pebble (ACME) validating DNS-01 against a gitdns primary,
a second name server (`gitdns secondary`; BIND where that command does not exist), `gitdns
letsencrypt` as hidden secondary and `gitdns certify` as the client. Every process is started
here and stopped by fixture finalizers."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding

from gitdns import certdns
from tests.interop.peers import (
    PEBBLE,
    TsigKey,
    free_port,
    start_gitdns,
    start_gitdns_secondary,
    start_letsencrypt,
    start_named_secondary,
    start_pebble,
)
from tests.interop.test_updates import git, remote_file, wait_for

# GITDNS_TEST_BIND_SECONDARY=1 runs the same tests with BIND as the second name server.
GITDNS_SECONDARY = not os.environ.get("GITDNS_TEST_BIND_SECONDARY") and subprocess.run(
    [sys.executable, "-m", "gitdns", "secondary", "--help"], capture_output=True, timeout=60
).returncode == 0
pytestmark = pytest.mark.skipif(
    not Path(PEBBLE).exists() or shutil.which("named") is None and
    not Path("/usr/sbin/named").exists(),
    reason="needs pebble and BIND (Debian packages pebble, bind9)")

SECRET = {n: base64.b64encode(n.encode().ljust(32, b"k")).decode()
          for n in ("personal", "letsencrypt", "secondary", "root")}
CLIENT_KEY = f"personal._update.example.test:hmac-sha256:{SECRET['personal']}"
SERVICE_KEY = f"letsencrypt._update.example.test:hmac-sha256:{SECRET['letsencrypt']}"
XFR_KEY = TsigKey("secondary._transfer", SECRET["secondary"])
ZONE = """$ORIGIN example.test.
$TTL 300
@       IN SOA  ns1 hostmaster ( 1 60 60 3600 60 )
        IN NS   ns1
        IN NS   ns2
ns1     IN A    127.0.0.1
ns2     IN A    127.0.0.1
www     IN A    127.0.0.1
"""
OTHER = """$ORIGIN other.test.
$TTL 300
@       IN SOA  ns1.example.test. hostmaster.example.test. ( 1 60 60 3600 60 )
        IN NS   ns1.example.test.
www     IN A    127.0.0.1
"""
KEYS = f"""personal._update.example.test. DNSKEY 0 3 163 {SECRET['personal']}
letsencrypt._update.example.test. DNSKEY 0 3 163 {SECRET['letsencrypt']}
secondary._transfer. DNSKEY 0 3 163 {SECRET['secondary']}
root._update. DNSKEY 0 3 163 {SECRET['root']}
"""  # the root keys may transfer (and update) every zone
ROOT_KEY = f"root._update.:hmac-sha256:{SECRET['root']}"


class Env:
    """The peers of one module: the primary (and its bare remote), BIND, pebble, the service."""

    def __init__(self, root: Path):
        self.root = root
        self.bare = make_bare(root)
        self.port = free_port()
        self.secondary_port = free_port()
        self.primary = start_gitdns(
            self.bare, self.port, root / "primary-data",
            ["--also-notify", f"127.0.0.1:{self.secondary_port}"],
            zones=["example.test", "other.test"])
        self.secondary = self.start_secondary()
        self.pebble = start_pebble(root / "pebble", self.port)
        self.service = self.start_service()

    def start_secondary(self):
        """The second name server of both zones, NOTIFYed by the primary (--also-notify)."""
        zones = ["example.test", "other.test"]
        if GITDNS_SECONDARY:
            return start_gitdns_secondary(
                self.root / "secondary-data", self.secondary_port,
                [f"{XFR_KEY.name}.:{XFR_KEY.algorithm}:{XFR_KEY.secret}"],
                primary=f"127.0.0.1:{self.port}", zones=zones, wait_for=zones)
        return start_named_secondary(self.root / "named", self.secondary_port, self.port, zones,
                                     XFR_KEY)

    def start_service(self, *extra: str, key: str = SERVICE_KEY, ready: str = "zone "):
        return start_letsencrypt(self.root / "letsencrypt", self.port, key, self.pebble,
                                 [self.port, self.secondary_port],
                                 ["--retry-min", "1", "--retry-max", "4",
                                  "--propagation-timeout", "15", *extra], ready=ready)

    def stop(self) -> None:
        for peer in (getattr(self, n, None) for n in ("service", "pebble", "secondary",
                                                      "primary")):
            if peer is not None:
                peer.stop()

    def certify(self, host: str, *args: str, timeout: float = 60,
                key: str = CLIENT_KEY) -> subprocess.CompletedProcess:
        out = self.root / "out"
        out.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "gitdns", "certify", host, "--server",
                f"127.0.0.1:{self.port}", "--key", key,
                "--key-file", str(out / f"{host}.key"), "--cert-file", str(out / f"{host}.pem"),
                "--timeout", str(timeout), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)

    def orders(self) -> int:
        """Orders pebble received (its log names every request)."""
        return self.pebble.log_text(100_000).count("POST /order-plz")

    def service_log(self) -> str:
        return self.service.log_text(100_000)


def make_bare(root: Path) -> Path:
    seed = root / "seed"
    seed.mkdir()
    git(seed, "init", "-q", "-b", "main")
    (seed / "example.test").write_text(ZONE)
    (seed / "other.test").write_text(OTHER)
    (seed / "_keys").write_text(KEYS)
    git(seed, "add", "-A")
    git(seed, "commit", "-q", "-m", "zones")
    bare = root / "zones.git"
    git(root, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("acme")
    e = Env.__new__(Env)
    try:
        Env.__init__(e, root)
        yield e
    finally:
        e.stop()


def tlsa(port: int, host: str) -> list:
    query = dns.message.make_query(certdns.tlsa_name(host), dns.rdatatype.TLSA)
    reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=3)
    return [rd for rrset in reply.answer for rd in rrset]


def txt(port: int, name: str):
    return dns.query.tcp(dns.message.make_query(name, "TXT"), "127.0.0.1", port=port, timeout=3)


def verify_chain(pem: bytes, root_pem: bytes) -> list[x509.Certificate]:
    """Check each signature up to pebble's issuing root, as `openssl verify` would."""
    certs = x509.load_pem_x509_certificates(pem)
    root = x509.load_pem_x509_certificate(root_pem)
    for child, parent in zip(certs, [*certs[1:], root], strict=True):
        assert child.issuer == parent.subject
        key = parent.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(child.signature, child.tbs_certificate_bytes,
                       ec.ECDSA(child.signature_hash_algorithm))
        else:
            key.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       child.signature_hash_algorithm)
    return certs


def test_certificate_issued_served_by_both_committed_and_challenge_gone(env):
    orders = env.orders()
    out = env.certify("www.example.test", "--additional", "web.example.test")
    assert out.returncode == 0, out.stdout + out.stderr + env.service_log()
    assert "issued" in out.stdout and "published at _letsencrypt._tcp.www.example.test" in \
        out.stdout
    assert env.orders() == orders + 1
    files = env.root / "out"
    key_pem = (files / "www.example.test.key").read_bytes()
    assert b"PRIVATE KEY" in key_pem and (files / "www.example.test.key").stat().st_mode & 0o77 == 0
    certs = verify_chain((files / "www.example.test.pem").read_bytes(), env.pebble.root_pem())
    assert len(certs) == 2  # leaf + pebble's intermediate
    leaf = certs[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"www.example.test",
                                                            "web.example.test"}
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, None)
    assert certdns.public_key_der(key) == certdns.parse_cert(
        leaf.public_bytes(serialization.Encoding.DER)).public_key
    der = leaf.public_bytes(serialization.Encoding.DER)
    # Both name servers serve leaf (3 0 0), chain (2 0 0) and the CSR (3 255 0).
    for port in (env.port, env.secondary_port):
        records = wait_for(lambda p=port: [r for r in tlsa(p, "www.example.test")
                                           if certdns.kind_of(r) == certdns.LEAF
                                           and r.cert == der] and tlsa(p, "www.example.test"),
                           what=f"the certificate on port {port}")
        kinds = sorted(certdns.kind_of(r) for r in records)
        assert kinds == [certdns.CHAIN, certdns.LEAF, certdns.CSR], kinds
        answer = txt(port, "_acme-challenge.www.example.test")
        assert answer.rcode() == dns.rcode.NXDOMAIN and not answer.answer
    # Committed and pushed to the zone repository, the challenge TXT gone from it too.
    text = wait_for(lambda: (t := remote_file(env.bare)).count(" TLSA 3 0 0 ") and t,
                    what="the certificate in git")
    assert re.search(r"_letsencrypt\._tcp\.www\s.*TLSA\s+3 0 0 ", text) or \
        "_letsencrypt._tcp.www" in text
    assert " TLSA 2 0 0 " in text and " TLSA 3 255 0 " in text
    assert "_acme-challenge" not in text
    log = git(env.bare, "--git-dir", str(env.bare), "log", "--format=%an %s", "main")
    assert "letsencrypt._update.example.test" in log  # its updates are its own commits
    # The service waited for both name servers before answering the challenge.
    log = env.service_log()
    assert re.search(r"published .*_acme-challenge\.www\.example\.test\. TXT", log), log
    assert "every name server serves the challenge (4 checks)" in log  # 2 servers x 2 names
    assert "WARNING" not in log and "ERROR" not in log, log


def test_second_certify_for_the_same_key_returns_at_once(env):
    first = env.certify("api.example.test")
    assert first.returncode == 0, first.stdout + first.stderr + env.service_log()
    orders = env.orders()
    started = time.monotonic()
    again = env.certify("api.example.test")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 10
    assert "reused from DNS" in again.stdout
    assert env.orders() == orders  # no new order
    pem = (env.root / "out" / "api.example.test.pem").read_bytes()
    verify_chain(pem, env.pebble.root_pem())


def test_csr_for_a_name_outside_the_keys_zones_is_refused(env):
    orders = env.orders()
    out = env.certify("shop.example.test", "--additional", "www.other.test", timeout=6)
    assert out.returncode == 1
    assert "no certificate at _letsencrypt._tcp.shop.example.test" in out.stderr
    wait_for(lambda: "www.other.test is in no zone that this key may transfer" in
             env.service_log(), what="the refusal in the log")
    assert "refused, not sent to the CA" in env.service_log()
    assert env.orders() == orders
    assert env.service.running()


def test_malformed_csr_is_logged_and_skipped(env):
    out = subprocess.run(
        [sys.executable, "-m", "gitdns", "update", "--server", f"127.0.0.1:{env.port}",
         "--key", CLIENT_KEY, "--zone", "example.test",
         "add", "_letsencrypt._tcp.bad", "3600", "TLSA", "3 255 0 3082deadbeef"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: "_letsencrypt._tcp.bad.example.test.: malformed CSR" in env.service_log(),
             what="the malformed CSR in the log")
    assert env.service.running()
    # ...and the service goes on working for everyone else.
    ok = env.certify("after-bad.example.test")
    assert ok.returncode == 0, ok.stderr + env.service_log()
    assert env.service_log().count("malformed CSR") == 1  # logged once, not on every change


def test_pebble_down_is_logged_retried_and_recovers(env):
    env.pebble.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitdns", "certify", "down.example.test", "--server",
         f"127.0.0.1:{env.port}", "--key", CLIENT_KEY,
         "--key-file", str(env.root / "out" / "down.key"),
         "--cert-file", str(env.root / "out" / "down.pem"), "--timeout", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(re.findall(r"down\.example\.test\.: certificate request failed "
                                        r"\(attempt \d\): cannot reach the ACME server: "
                                        r"connection refused; retrying in",
                                        env.service_log())) >= 2,
                 timeout=30, what="two failed attempts logged with the cause")
        assert env.service.running()
        env.pebble = start_pebble(env.root / "pebble", env.port, port=env.pebble.port,
                                  mgmt_port=env.pebble.mgmt_port)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr + env.service_log()
    verify_chain((env.root / "out" / "down.pem").read_bytes(), env.pebble.root_pem())
    # Nothing was left in the zone by the failed attempts (they failed before publishing).
    assert txt(env.port, "_acme-challenge.down.example.test").rcode() == dns.rcode.NXDOMAIN


def test_challenge_is_answered_only_once_every_name_server_serves_it(env):
    """The field's most common DNS-01 failure: the CA asks a name server that does not have the
    record yet. With the secondary down, the service publishes, waits, gives up after the
    propagation timeout, removes its TXT again, and succeeds once the secondary is back."""
    env.secondary.stop()
    challenges = env.pebble.log_text(100_000).count("POST /chalZ")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitdns", "certify", "lag.example.test", "--server",
         f"127.0.0.1:{env.port}", "--key", CLIENT_KEY,
         "--key-file", str(env.root / "out" / "lag.key"),
         "--cert-file", str(env.root / "out" / "lag.pem"), "--timeout", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: "published _acme-challenge.lag.example.test. TXT" in env.service_log(),
                 what="the challenge published")
        assert txt(env.port, "_acme-challenge.lag.example.test").answer  # on the primary...
        time.sleep(2)  # ...but the CA is not told while the secondary does not serve it
        assert env.pebble.log_text(100_000).count("POST /chalZ") == challenges
        failed = wait_for(lambda: re.search(
            r"lag\.example\.test\.: certificate request failed \(attempt 1\): not served in "
            rf"time: 127\.0\.0\.1:{env.secondary_port} _acme-challenge\.lag\.example\.test\. "
            r"TXT \(.*\); retrying in", env.service_log()), timeout=40, what="the give-up")
        assert failed
        # Nothing left behind: the TXT it added is removed again.
        wait_for(lambda: "removed _acme-challenge.lag.example.test. TXT" in env.service_log(),
                 what="the challenge removed")
        assert txt(env.port, "_acme-challenge.lag.example.test").rcode() == dns.rcode.NXDOMAIN
        env.secondary = env.start_secondary()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout + stderr + env.service_log()
    assert "issued" in stdout
    assert txt(env.port, "_acme-challenge.lag.example.test").rcode() == dns.rcode.NXDOMAIN


def test_primary_down_then_back(env):
    env.primary.stop()
    wait_for(lambda: re.search(rf"cannot connect to the primary 127\.0\.0\.1:{env.port}: "
                               r"connection refused; trying again in", env.service_log()),
             what="the lost primary in the log")
    assert env.service.running()
    env.primary = start_gitdns(
        env.bare, env.port, env.root / "primary-data",
        ["--also-notify", f"127.0.0.1:{env.secondary_port}"],
        zones=["example.test", "other.test"])
    out = env.certify("back.example.test")
    assert out.returncode == 0, out.stdout + out.stderr + env.service_log()


def test_renewal_when_the_certificate_is_close_to_expiry(env):
    first = env.certify("renew.example.test")
    assert first.returncode == 0, first.stderr + env.service_log()
    old = certdns.of_kind(tlsa(env.port, "renew.example.test"), certdns.LEAF)
    assert len(old) == 1
    # pebble issues 5-year certificates: a threshold longer than that makes every stored
    # certificate "close to expiry", which is what a restart with --renew-before shows.
    env.service.stop()
    env.service = env.start_service("--renew-before", "2000")
    new = wait_for(lambda: (n := certdns.of_kind(tlsa(env.port, "renew.example.test"),
                                                 certdns.LEAF)) and n != old and n,
                   timeout=60, what="a renewed certificate")
    assert len(new) == 1  # the old leaf was replaced, not kept beside the new one
    log = env.service_log()
    assert re.search(r"renew\.example\.test\.: the certificate expires .* within 2000 days; "
                     r"ordering", log), log
    # Renewed once, not in a loop: the fresh certificate is also "due", and is left alone.
    time.sleep(3)
    assert len(re.findall(r"renew\.example\.test\.: certificate stored", env.service_log())) == 1
    assert "right after we stored it" in env.service_log()
    again = env.certify("renew.example.test")
    assert again.returncode == 0 and "reused" in again.stdout
    pem = (env.root / "out" / "renew.example.test.pem").read_bytes()
    assert x509.load_pem_x509_certificates(pem)[0].serial_number == certdns.parse_cert(
        new[0]).serial


def test_a_root_key_service_watches_the_root_and_serves_every_zone(env):
    """The seeds' setup: a root `_update` key; the service asks for `.` SOA, the primary tells
    it of every zone at once, and a zone the earlier key did not cover is now served."""
    env.service.stop()
    env.service = env.start_service(key=ROOT_KEY, ready="zone other.test. serial")
    log = env.service_log()
    assert "registered for NOTIFY of ." in log and "zone example.test. serial" in log
    out = env.certify("www.other.test", key=ROOT_KEY)
    assert out.returncode == 0, out.stdout + out.stderr + env.service_log()
    verify_chain((env.root / "out" / "www.other.test.pem").read_bytes(), env.pebble.root_pem())
    # The earlier refusal is now acceptable: shop.example.test also names www.other.test.
    wait_for(lambda: "_letsencrypt._tcp.shop.example.test.: certificate stored" in
             env.service_log(), timeout=30, what="the formerly refused CSR served")
