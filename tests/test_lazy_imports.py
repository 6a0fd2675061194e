"""Start-up imports: what `gitdns serve` loads before it can answer must not include the
transports only some remotes need (paramiko and invoke for ssh, urllib3 for http) nor
dulwich.porcelain (a checkout or a push). Together they cost a start about 0.15 s, and the
start of a server with a big zone is measured against BIND's."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from dulwich.errors import NotGitRepository

from gitdns import gitrepo, sshvendor
from gitdns.gitrepo import GitRepo

SRC = Path(__file__).resolve().parent.parent / "src"

#: Imported only when a remote or an operation needs them.
LAZY = ("paramiko", "invoke", "urllib3", "dulwich.porcelain")


def _loaded_after(code: str, modules: tuple[str, ...] = LAZY) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after running `code` (a fresh one:
    this test process has imported them all long ago)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])


def test_serve_imports_no_remote_transport() -> None:
    assert _loaded_after("import gitdns.cli, gitdns.primary") == []


def test_the_command_line_parser_loads_no_certificate_code() -> None:
    """`gitdns serve` parses its options with the parser of every command: the certificate
    commands' modules (cryptography's x509 through certdns) are imported only to run them."""
    modules = ("gitdns.certify", "gitdns.letsencrypt", "gitdns.certdns", "cryptography.x509")
    code = "import gitdns.cli, gitdns.primary\ngitdns.cli.build_parser()"
    assert _loaded_after(code, modules) == []


def test_a_restart_on_a_local_remote_loads_none_of_them(tmp_path: Path) -> None:
    """Reopening the clone of a local path and reading its zones, as a restart does (no
    checkout: the remote has not moved), stays free of them as well."""
    remote, clone = tmp_path / "remote", tmp_path / "clone"
    remote.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(remote)]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (remote / "example.com").write_text("$ORIGIN example.com.\n@ 300 IN SOA ns h 1 2 3 4 5\n")
    subprocess.run([*git, "add", "example.com"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "zone"], check=True)
    GitRepo.open_or_clone(str(remote), clone).close()
    code = (
        "from gitdns.gitrepo import GitRepo\n"
        f"with GitRepo.open_or_clone({str(remote)!r}, {str(clone)!r}) as r:\n"
        "    assert r.read_blob(r.top_level_files()['example.com']).startswith(b'$ORIGIN')"
    )
    assert _loaded_after(code) == []


def test_transport_errors_include_the_loaded_transports() -> None:
    """Once paramiko and urllib3 are loaded (an ssh or http remote), their errors are caught."""
    import paramiko
    import urllib3.exceptions

    errors = gitrepo._transport_errors()
    assert paramiko.SSHException in errors
    assert urllib3.exceptions.HTTPError in errors
    for error in (OSError, NotGitRepository, sshvendor.HostKeyError, sshvendor.LoginError):
        assert issubclass(error, errors)
