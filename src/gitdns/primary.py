"""The primary daemon: wires the git clone, the loader, the store, the core and the listeners.

Rules this module keeps:
- Git, parsing and transfers run in worker threads; the event loop answers and swaps versions,
  so a reload never stops answering: the old version answers until the new one is swapped in.
- Pulls run one at a time; every request for one (SIGHUP, NOTIFY, poll) is served by a pull
  that started after it arrived, so none is lost and a burst costs one or two pulls.
- Every zone change (and the start) is announced by NOTIFY to the zone's secondaries, once
  every worker serves it.
- With `workers` > 1, N-1 worker processes answer beside this one on SO_REUSEPORT sockets
  (workers.py); every version installed here is sent to them, and an UPDATE or a NOTIFY is
  acknowledged only once they all serve the version it made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import gc
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from gitdns import core
from gitdns.diff import zone_diff
from gitdns.fastpath import FastPath, changed_names
from gitdns.gitrepo import GitError, GitRepo
from gitdns.history import ZoneHistory, diffs_from_git
from gitdns.housekeeping import Housekeeper, Limits
from gitdns.net.client import send_notify
from gitdns.net.server import TCP_IDLE_TIMEOUT, DnsServer, ListenAddress, bind_sockets
from gitdns.notify import notify_message, notify_targets
from gitdns.querylog import log_query
from gitdns.repository import LoadReport, RepositoryState, load_repository
from gitdns.serial import serial_gt, serial_increase
from gitdns.store import Store
from gitdns.updater import Updater, with_serial
from gitdns.workers import WorkerPool
from gitdns.xfrout import serve_transfer
from gitdns.zone import Zone
from gitdns.zonecache import ZONE_CACHE, ZoneCache

log = logging.getLogger("gitdns.primary")
SWITCH_INTERVAL = 0.0005


@dataclass
class PrimaryConfig:
    remote: str
    data_dir: Path
    listen: list[ListenAddress] = field(default_factory=list)
    branch: str | None = None
    log_queries: bool = False
    poll: float | None = None
    tcp_idle_timeout: float = TCP_IDLE_TIMEOUT
    notify: str = "yes"
    also_notify: list[tuple[str, int]] = field(default_factory=list)
    axfr_unauthenticated: bool = False
    serial_policy: str = "increment"
    committer: bytes | None = None
    ssh_key: str | None = None
    ssh_authenticator: str | None = None
    credentials_file: str | None = None
    workers: int = 1  # processes answering (this one and workers-1 workers.py processes)

    @property
    def clone_dir(self) -> Path:
        return self.data_dir / "repository"


@dataclass
class _Watcher:
    """A hidden secondary: a TCP connection that asked for the SOA with a transfer key."""

    connection: object
    key: object
    origin: dns.name.Name


class Primary:
    """One running primary server."""

    def __init__(self, config: PrimaryConfig):
        self.config = config
        self.store = Store()
        self.state = RepositoryState()
        self.view = core.ServerState(
            self.store.zones, axfr_unauthenticated=config.axfr_unauthenticated
        )
        self.fast = FastPath(self.store.zones)
        self.history = ZoneHistory()
        self.repo: GitRepo | None = None
        self.housekeeper: Housekeeper | None = None  # repacks the clone (housekeeping.py)
        self.server: DnsServer | None = None
        self.watchers: list[_Watcher] = []
        self._stop = asyncio.Event()
        self._reload_wanted = asyncio.Event()
        self._pulls_requested = 0
        self._pulls_done = 0
        self._pull_done = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self.write_lock = asyncio.Lock()  # one git writer at a time: updates, bumps, pulls
        self.updater = Updater(self, config.serial_policy, config.committer)
        # Worker processes (workers.py), told of every version installed here.
        self.workers = WorkerPool(self, config.workers) if config.workers > 1 else None
        self.zone_cache = ZoneCache(config.data_dir / ZONE_CACHE, held=True)
        self._files_read: dict[int, dict[str, bytes]] = {}  # id(state) -> the files it read

    # -- answering -------------------------------------------------------------------------

    def handle(self, wire: bytes, request: core.Request):
        # Plain queries: spliced wire bytes. Over UDP without a query log the listener has
        # asked the fast path already, so it is not asked twice.
        reply = (self.fast.answer(wire, request.tcp)
                 if request.tcp or self.config.log_queries else None)
        if reply is not None:
            if self.config.log_queries:
                log_query(wire, reply, request)
            return reply
        outcome = core.handle(self.view, wire, request, int(time.time()))
        if isinstance(outcome, core.Deferred):
            return self._deferred(outcome)
        if self.config.log_queries:
            log_query(wire, outcome, request)
        return outcome

    async def _deferred(self, job: core.Deferred):
        try:
            return await self._run_deferred(job)
        except Exception:
            log.exception("%s for %s failed; answering SERVFAIL", job.kind, job.origin)
            return core.reply(job.query, dns.rcode.SERVFAIL, job.request, aa=False)

    async def _run_deferred(self, job: core.Deferred):
        peer = job.request.peer[0] if job.request.peer else "?"
        keyname = job.key.name if job.key else "no key"
        if job.kind == "notify":
            log.info("NOTIFY for %s from %s (%s): pulling", job.origin, peer, keyname)
            await self.pull()
            if self.workers is not None:
                await self.workers.sync()
            return core.reply(job.query, dns.rcode.NOERROR, job.request)
        if job.kind == "transfer":
            return await serve_transfer(job, self.history, self._diffs_from_git)
        if job.kind == "watch":
            self._watch(job)
            return job.reply
        if job.kind == "update":
            reply = await self.updater.update(job)
            if self.workers is not None:  # answered once every process serves the change
                await self.workers.sync()
            return reply
        return None

    def _diffs_from_git(self, zone, serial: int):
        status = self.state.status.get(zone.origin)
        if status is None or self.repo is None:
            return None
        try:
            diffs = diffs_from_git(self.repo, status.filename, zone.origin, zone, serial)
        except Exception:
            log.exception("reading the history of %s from git", zone.origin)
            return None
        if diffs:
            self.history.add_older(zone.origin, diffs)
        return diffs

    # -- hidden secondaries ----------------------------------------------------------------

    def _watch(self, job: core.Deferred) -> None:
        conn = job.request.connection
        self.watchers = [w for w in self.watchers if getattr(w.connection, "open", False)]
        if not any(w.connection is conn and w.origin == job.origin for w in self.watchers):
            self.watchers.append(_Watcher(conn, job.key, job.origin))
            conn.persistent = True  # kept open for NOTIFY, whatever the idle timeout
            log.info("hidden secondary %s registered for NOTIFY of %s (%s)",
                     job.request.peer[0] if job.request.peer else "?", job.origin, job.key.name)
        # Tell it at once of every other served zone at or below what it asked for that its key
        # may transfer (for a root key: every zone), right after the answer to its SOA query
        # (call_soon runs once that answer is written).
        asyncio.get_running_loop().call_soon(self._notify_zones_below, conn, job.key, job.origin,
                                             job.zone is not None)

    def _notify_zones_below(self, conn, key, origin: dns.name.Name, skip_origin: bool) -> None:
        for name, zone in self.store.zones.items():
            if skip_origin and name == origin:
                continue
            if name.is_subdomain(origin) and key.allows("transfer", name):
                conn.send(notify_message(name, zone.soa, key).to_wire())

    def _notify_watchers(self, origin: dns.name.Name) -> None:
        zone = self.store.zones.get(origin)
        self.watchers = [w for w in self.watchers if getattr(w.connection, "open", False)]
        for w in self.watchers:
            if origin.is_subdomain(w.origin) and w.key.allows("transfer", origin):
                message = notify_message(origin, zone.soa if zone else None, w.key)
                w.connection.send(message.to_wire())
                log.info("NOTIFY %s sent to a hidden secondary (%s)", origin, w.key.name)

    # -- loading ---------------------------------------------------------------------------

    def _read_repo(self) -> tuple[RepositoryState, LoadReport]:
        """In a worker thread: read HEAD's files and load what changed (nothing swapped yet)."""
        assert self.repo is not None
        files = self.repo.top_level_files()
        state, report = load_repository(files, self.repo.read_blob, self.state,
                                        self.zone_cache)
        if self.workers is not None:
            self._files_read[id(state)] = files  # the workers load the same files
        # The differences for IXFR, here rather than on the loop: comparing two versions of a
        # million-record zone takes a good part of a second.
        for origin in report.loaded:
            previous, new = self.state.zones.get(origin), state.zones.get(origin)
            if previous is not None and new is not None and serial_gt(new.serial,
                                                                       previous.serial):
                report.diffs[origin] = (previous, zone_diff(previous, new))
        return state, report

    def _set_state(self, state: RepositoryState, update=None) -> None:
        self.state = state
        self.store.swap(state.zones)
        self.view = core.ServerState(state.zones, state.keys, self.config.axfr_unauthenticated)
        if update is not None:  # (origin, old, new, changed names): keep what still holds
            self.fast = self.fast.after_update(state.zones, *update)
        else:
            self.fast = FastPath(state.zones, previous=self.fast)

    def install_zone(self, origin: dns.name.Name, zone: Zone, source: bytes | None,
                     diff=None) -> None:
        """On the loop: a new version of one zone from an update (durable in the journal or
        in git; `source`, when given, is the zone file's new git blob)."""
        old = self.state.zones.get(origin)
        if self.workers is not None:
            self.workers.on_zone(origin, old, zone, diff, source)
        current = self.state.status[origin]
        status = dataclasses.replace(current, source=source or current.source, zone=zone,
                                     errors=[], broken_source=None)
        state = dataclasses.replace(self.state, zones=self.state.zones.replace({origin: zone}),
                                    status={**self.state.status, origin: status})
        self._set_state(state, None if old is None else
                        (origin, old, zone, changed_names(old, zone, diff)))
        if old is not None:
            self.history.record(old, zone, diff)
        self.notify_secondaries(origin)

    def set_source(self, origin: dns.name.Name, source: bytes) -> None:
        """The zone file of `origin` is now the git blob `source` (the journal was folded)."""
        status = dataclasses.replace(self.state.status[origin], source=source)
        self.state = dataclasses.replace(self.state, status={**self.state.status, origin: status})
        if self.workers is not None:
            self.workers.on_source(origin, source)

    @staticmethod
    def _reload_change(old: RepositoryState, state: RepositoryState, report: LoadReport):
        """A reload that changed one zone, with its difference worked out: the fast path keeps
        what does not depend on the changed names, as after an update (a reload of a big zone
        would otherwise send every question to the reference path at once)."""
        if len(report.loaded) != 1 or report.dropped or old.zones.keys() != state.zones.keys():
            return None
        origin = report.loaded[0]
        early = report.diffs.get(origin)
        previous, new = old.zones.get(origin), state.zones.get(origin)
        if early is None or previous is None or new is None or early[0] is not previous \
                or early[1].new_serial != new.serial:
            return None
        return origin, previous, new, changed_names(previous, new, early[1])

    def install(self, state: RepositoryState, report: LoadReport) -> None:
        """On the loop: swap the new version in, remember history, tell the secondaries."""
        old = self.state
        files = self._files_read.pop(id(state), None)
        state, bumps = self._raise_unchanged_serials(old, state, report)
        self._set_state(state, self._reload_change(old, state, report))
        if self.workers is not None:
            if files is None:  # not read by _read_repo: what the state says it was made of
                files = {s.filename: s.source for s in state.status.values() if s.zone}
                files |= state.key_files
            self.workers.on_install(state, report, files, bumps)
        for origin in report.loaded:
            previous = old.zones.get(origin)
            new = state.zones.get(origin)
            if previous is not None and new is not None:
                early = report.diffs.get(origin)
                if early is not None and early[0] is previous and \
                        early[1].new_serial == new.serial:
                    self.history.record(previous, new, early[1])
                else:
                    self.history.record(previous, new)
        for origin in report.dropped:
            self.history.forget(origin)
        if report.changed or report.failed or report.keys_changed:
            log.info(
                "serving %d zones, %d keys at commit %s (%d loaded, %d dropped, %d with errors)",
                len(state.zones), len(state.keys), self.repo.head().decode()[:12] if self.repo
                else "?", len(report.loaded), len(report.dropped), len(report.failed),
            )
        for origin in report.loaded:
            self.notify_secondaries(origin)

    def _raise_unchanged_serials(self, old: RepositoryState, state: RepositoryState,
                                 report: LoadReport) -> tuple[RepositoryState, dict]:
        """A zone whose content changed in git without a serial increase is served with its
        serial raised (so secondaries see the change), and the raise is committed and pushed.
        Also returns the serials raised, by zone."""
        bumped = {}
        for origin in report.loaded:
            previous, new = old.zones.get(origin), state.zones.get(origin)
            if previous is None or new is None or serial_gt(new.serial, previous.serial):
                continue
            serial = serial_increase(previous.serial, self.config.serial_policy)
            log.warning("zone %s changed in git but its serial %d is not above the served %d: "
                        "serving it as serial %d and committing that", origin, new.serial,
                        previous.serial, serial)
            bumped[origin] = with_serial(new, serial)
            self._spawn(self.updater.bump_serial(origin, previous))
        if not bumped:
            return state, {}
        status = {o: dataclasses.replace(s, zone=bumped.get(o, s.zone))
                  for o, s in state.status.items()}
        return (dataclasses.replace(state, zones=state.zones.replace(bumped), status=status),
                {o: z.serial for o, z in bumped.items()})

    def notify_secondaries(self, origin: dns.name.Name) -> None:
        if self.workers is not None:
            # A secondary asks for the SOA as soon as it is told: a worker still serving the
            # version before would answer the old serial, and the secondary would wait for its
            # next refresh. So the workers serve the new version first.
            self._spawn(self._notify_when_in_step(origin))
            return
        self._notify_now(origin)

    async def _notify_when_in_step(self, origin: dns.name.Name) -> None:
        assert self.workers is not None
        await self.workers.sync()
        self._notify_now(origin)

    def _notify_now(self, origin: dns.name.Name) -> None:
        zone = self.store.zones.get(origin)
        if zone is None:
            return
        for target in notify_targets(zone, self.state.keys, self.config.also_notify,
                                     self.config.notify):
            self._spawn(send_notify(target, origin, zone.soa))
        self._notify_watchers(origin)

    async def _start_workers(self, writing: list) -> None:
        """Once the compiled copies are written: the workers start from them (a big zone in
        half a second, rather than each parsing the file again)."""
        assert self.workers is not None
        for thread in writing:
            await asyncio.to_thread(thread.join, 120)
        if not self.workers.stopping:
            self.workers.start()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pull(self) -> tuple[RepositoryState, LoadReport] | None:
        assert self.repo is not None
        try:
            moved = self.repo.fast_forward()
        except GitError as e:
            log.error("pull: %s; still serving commit %s", e, self.repo.head().decode()[:12])
            return None
        log.info("pull: repository %s %s", "moved to" if moved else "unchanged at",
                 self.repo.head().decode()[:12])
        return self._read_repo()

    def request_reload(self) -> int:
        """Ask for a pull and reload (SIGHUP, NOTIFY, poll); returns a ticket for `pull()`."""
        self._pulls_requested += 1
        self._reload_wanted.set()
        return self._pulls_requested

    async def pull(self) -> None:
        """Request a pull and wait until one that started after this call has finished."""
        ticket = self.request_reload()
        async with self._pull_done:
            await self._pull_done.wait_for(lambda: self._pulls_done >= ticket)

    async def _reloader(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            target = self._pulls_requested
            try:
                # No update may build on a version the pull replaces; git gets every accepted
                # update before the tree moves.
                async with self.updater.apply_lock:
                    await self.updater.fold()
                    async with self.write_lock:
                        loaded = await asyncio.to_thread(self._pull)
                        if loaded is not None:
                            self.install(*loaded)
                    self.updater.forget_pending()
                self.updater.tidy()  # a fetch adds a pack
            except Exception:
                log.exception("reload failed; still serving the previous data")
            self._pulls_done = target
            async with self._pull_done:
                self._pull_done.notify_all()

    async def _poller(self) -> None:
        assert self.config.poll
        while True:
            await asyncio.sleep(self.config.poll)
            self.request_reload()

    # -- life cycle ------------------------------------------------------------------------

    def _lock_data_dir(self) -> None:
        """One gitdns per data directory; holding the lock, a killed run's git locks can go."""
        path = self.config.data_dir / "gitdns.lock"
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise GitError(f"another gitdns is using the data directory {self.config.data_dir}; "
                           "give each server its own --data-dir") from None
        git_dir = self.config.clone_dir / ".git"
        if git_dir.is_dir():
            for stale in git_dir.rglob("*.lock"):  # refs, index, objects being written
                log.warning("removing %s, left by a gitdns that was killed while writing", stale)
                stale.unlink(missing_ok=True)

    async def run(self) -> None:
        cfg = self.config
        sockets = bind_sockets(cfg.listen)  # fail early, before cloning, on a taken port
        if self.workers is not None:
            # Shared with the workers: bound again with SO_REUSEPORT, now that the first bind
            # (without it) showed that no other server has the port.
            for _a, u, t in sockets:
                u.close()
                t.close()
            sockets = bind_sockets(cfg.listen, reuse_port=True)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock_data_dir()
            self.repo = await asyncio.to_thread(
                lambda: GitRepo.open_or_clone(
                    cfg.remote, cfg.clone_dir, cfg.branch, ssh_key=cfg.ssh_key,
                    ssh_authenticator=cfg.ssh_authenticator,
                    credentials_file=cfg.credentials_file)
            )
            self.install(*await asyncio.to_thread(self._read_repo))
            # One count of the clone's objects; from here on commits tell it what they add.
            self.housekeeper = await asyncio.to_thread(Housekeeper, self.repo, Limits.from_env())
            self.updater.open_journal(cfg.data_dir / "journal")
            try:
                await self.updater.recover()
            except Exception:
                log.exception("replaying the journal into git failed; the journal keeps the "
                              "updates (they are served) and the fold is retried")
        except BaseException:
            for _a, u, t in sockets:
                u.close()
                t.close()
            raise
        # Without a query log, UDP asks the fast path (`self.fast`) before anything else.
        self.server = DnsServer(self.handle, cfg.listen, idle_timeout=cfg.tcp_idle_timeout,
                                fast=None if cfg.log_queries else self)
        await self.server.start(sockets)
        writing = self.zone_cache.release()  # compiled copies written once answering
        if self.workers is not None:
            self._spawn(self._start_workers(writing))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        tasks = [asyncio.create_task(self._reloader()), asyncio.create_task(self.updater.pusher()),
                 asyncio.create_task(self.updater.folder()),
                 asyncio.create_task(self.updater.keeper())]
        # Commits a previous run made but could not push (a kill -9, a remote that was down).
        self.updater.kick()
        self.updater.tidy()  # a clone that a previous run (or version) left unpacked
        if cfg.poll:
            tasks.append(asyncio.create_task(self._poller()))
        # The loaded zones live as long as the server: keep the cyclic collector from walking
        # them again and again (an update on a 1.2M-record zone costs 5x more without this).
        gc.freeze()
        # Folds, pushes and journal writes run in threads; by default a thread keeps the GIL
        # for 5 ms before the loop may answer again, which stalls every query in flight.
        sys.setswitchinterval(SWITCH_INTERVAL)
        log.info("gitdns primary ready: %d zones from %s", len(self.store.zones), cfg.remote)
        try:
            await self._stop.wait()
        finally:
            log.info("stopping")
            for task in [*tasks, *self._tasks]:
                task.cancel()
            if self.housekeeper is not None:
                self.housekeeper.abort()  # a repack under way fails now, losing nothing
            if self.workers is not None:
                await self.workers.stop()
            try:  # what the journal holds goes to git now rather than at the next start
                await asyncio.wait_for(self.updater.fold(), 30)
            except Exception:
                log.warning("the journal could not be folded into git before stopping; it will "
                            "be at the next start")
            await self.server.stop()
            if self.repo is not None:
                self.repo.close()

    def stop(self) -> None:
        self._stop.set()

