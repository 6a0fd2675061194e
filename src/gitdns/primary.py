"""The primary daemon: wires the git clone, the loader, the store, the core and the listeners.

Rules this module keeps:
- Git and parsing run in a worker thread; the event loop only answers and swaps versions, so a
  reload never stops answering: the old version answers until the new one is swapped in whole.
- Reloads run one at a time; a request arriving during a reload causes exactly one more.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype

from gitdns import core
from gitdns.gitrepo import GitError, GitRepo
from gitdns.net.server import TCP_IDLE_TIMEOUT, DnsServer, ListenAddress, bind_sockets
from gitdns.repository import RepositoryState, load_repository
from gitdns.store import Store

log = logging.getLogger("gitdns.primary")
qlog = logging.getLogger("gitdns.queries")


@dataclass
class PrimaryConfig:
    remote: str
    data_dir: Path
    listen: list[ListenAddress] = field(default_factory=list)
    branch: str | None = None
    log_queries: bool = False
    poll: float | None = None
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT

    @property
    def clone_dir(self) -> Path:
        return self.data_dir / "repository"


class Primary:
    """One running primary server."""

    def __init__(self, config: PrimaryConfig):
        self.config = config
        self.store = Store()
        self.state = RepositoryState()
        self.repo: GitRepo | None = None
        self.server: DnsServer | None = None
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._reloads_done = 0

    # -- answering -------------------------------------------------------------------------

    def handle(self, wire: bytes, request: core.Request):
        reply = core.handle(self.store.zones, wire, request)
        if self.config.log_queries:
            _log_query(wire, reply, request)
        return reply

    # -- loading ---------------------------------------------------------------------------

    def _load_from_repo(self) -> None:
        """In a worker thread: read HEAD's files and load what changed."""
        assert self.repo is not None
        files = self.repo.top_level_files()
        state, report = load_repository(files, self.repo.read_blob, self.state)
        self.state = state
        self.store.swap(state.zones)
        if report.changed or report.failed:
            log.info(
                "serving %d zones at commit %s (%d loaded, %d dropped, %d with errors)",
                len(state.zones), self.repo.head().decode()[:12],
                len(report.loaded), len(report.dropped), len(report.failed),
            )

    def _pull_and_load(self) -> None:
        assert self.repo is not None
        try:
            moved = self.repo.fast_forward()
        except GitError as e:
            log.error("reload: %s; still serving commit %s", e, self.repo.head().decode()[:12])
            return
        if moved:
            log.info("reload: repository moved to %s", self.repo.head().decode()[:12])
        else:
            log.info("reload: repository unchanged at %s", self.repo.head().decode()[:12])
        self._load_from_repo()

    def request_reload(self) -> None:
        """Ask for a pull and reload (SIGHUP, NOTIFY, poll timer); never runs two at once."""
        self._reload_wanted.set()

    async def _reloader(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            try:
                await asyncio.to_thread(self._pull_and_load)
            except Exception:
                log.exception("reload failed; still serving the previous data")
            self._reloads_done += 1

    async def _poller(self) -> None:
        assert self.config.poll
        while True:
            await asyncio.sleep(self.config.poll)
            self.request_reload()

    # -- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        cfg = self.config
        sockets = bind_sockets(cfg.listen)  # fail early, before cloning, on a taken port
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.repo = await asyncio.to_thread(
                GitRepo.open_or_clone, cfg.remote, cfg.clone_dir, cfg.branch
            )
            await asyncio.to_thread(self._load_from_repo)
        except BaseException:
            for _a, u, t in sockets:
                u.close()
                t.close()
            raise
        self.server = DnsServer(self.handle, cfg.listen, idle_timeout=cfg.tcp_idle_timeout)
        await self.server.start(sockets)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [asyncio.create_task(self._reloader())]
        if cfg.poll:
            tasks.append(asyncio.create_task(self._poller()))
        log.info("gitdns primary ready: %d zones from %s", len(self.store.zones), cfg.remote)
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            for task in tasks:
                task.cancel()
            await self.server.stop()
            if self.repo is not None:
                self.repo.close()

    def stop(self) -> None:
        self._stop.set()


def _log_query(wire: bytes, reply: bytes | None, request: core.Request) -> None:
    who = request.peer[0] if request.peer else "?"
    proto = "TCP" if request.tcp else "UDP"
    try:
        q = dns.message.from_wire(wire, ignore_trailing=True)
        question = f"{q.question[0].name} {dns.rdatatype.to_text(q.question[0].rdtype)}"
    except Exception:
        question = f"<{len(wire)} bytes, unparsable>"
    if isinstance(reply, bytes) and len(reply) >= 4:
        outcome = dns.rcode.to_text(reply[3] & 0xF) + (" TC" if reply[2] & 0x02 else "")
    else:
        outcome = "no reply"
    qlog.info("%s %s %s -> %s", who, proto, question, outcome)
