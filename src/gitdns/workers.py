"""`gitdns serve --workers N`: N processes answer on the same addresses (issue 3, every core).

The main process is the Primary (primary.py): it owns git, the journal, updates, NOTIFY,
transfers and keys, and answers on its own sockets like any worker. It starts N-1 worker
processes (`python -m gitdns.workers`, a fresh interpreter: no fork under a running loop), each
connected by a Unix socket pair (the control channel), each answering plain queries (fast path
and `core.handle`) on its own SO_REUSEPORT sockets; the kernel spreads clients over them.

Rules this module keeps:
- A worker serves exactly what the main serves. It builds its state from the git objects of
  the main's clone (read only) and from what the main sends: at its start the main's state as
  a recipe per zone (the blob it was loaded from, a raised serial, the nodes changed since, the
  blob now in git); then, in order, every change the main installs: a reload ("reload": the
  files read and the serials raised; the worker runs the same `load_repository` on its own
  copy), an update ("zone": the changed nodes, applied with `Zone.with_changes`, O(change)), a
  fold ("source"). Each is acknowledged; an UPDATE and a NOTIFY are answered only when every
  serving worker has acknowledged the version they made (`sync`, bounded by SYNC_TIMEOUT; a
  worker that does not is logged and killed, then restarted from the current state).
- A worker binds its sockets only after the main has seen it load the recipe ("loaded" ->
  "go"), and every change sent before "go" is applied before it; so no worker ever answers
  from a version older than one the main acknowledged.
- What `core.handle` defers in a worker (UPDATE, NOTIFY, AXFR/IXFR, a hidden secondary's
  watch) is relayed to the main with the client's address and transport and handled there as
  if it had come directly (keys and addresses checked by the main); the reply messages go
  back to the client through the worker. A hidden secondary's connection stays in the worker;
  the main pushes its NOTIFYs through the channel ("push").
- A worker that dies is restarted (at most MAX_RESTARTS in RESTART_WINDOW seconds a slot);
  the main and the other workers keep answering. Workers stop when the main stops (SIGTERM,
  SIGINT: "stop" on the channel) and die with it (end of the channel; PR_SET_PDEATHSIG).

Messages are pickled tuples, each framed by its 4-byte length; both ends are this program.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.name

from gitdns import core
from gitdns.fastpath import FastPath
from gitdns.querylog import log_query
from gitdns.repository import RepositoryState, load_repository
from gitdns.store import Store
from gitdns.zonecache import ZONE_CACHE, ZoneCache

log = logging.getLogger("gitdns.workers")

SYNC_TIMEOUT = 2.0  # seconds a worker has to apply a change before it is restarted
START_TIMEOUT = 120.0  # seconds a worker has to load the recipe
MAX_RESTARTS = 10  # restarts of one worker slot within RESTART_WINDOW seconds, at most
RESTART_WINDOW = 60.0
RELAY_TIMEOUT = 600.0  # a relayed request (a transfer of a big zone) gets this long
_LEN = struct.Struct("!I")


def default_workers() -> int:
    """The CPUs this process may run on (a taskset or a cgroup counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _frame(message: tuple) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> tuple | None:
    """The next message, or None at the end of the channel."""
    try:
        head = await reader.readexactly(_LEN.size)
        return pickle.loads(await reader.readexactly(_LEN.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@dataclass
class Recipe:
    """How a worker makes one served zone: the blob it was loaded from, the serial raised after
    loading (or None), the nodes changed since (name -> node, None: removed), the blob in git."""

    filename: str
    base: bytes
    bump: int | None
    changes: dict = field(default_factory=dict)
    source: bytes = b""


# -- the main's side ----------------------------------------------------------------------------


class _Worker:
    """One worker slot as the main sees it."""

    def __init__(self, index: int):
        self.index = index
        self.proc: subprocess.Popen | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.sent = 0  # sequence number of the last change sent
        self.acked = 0  # and of the last one applied
        self.ready = False  # serving (its changes are waited for)
        self.restarts: list[float] = []
        self.task: asyncio.Task | None = None

    def send(self, message: tuple) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(_frame(message))

    def change(self, message: tuple) -> None:
        self.sent += 1
        self.send(("change", self.sent, message))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


class RelayedConnection:
    """A client's TCP connection held by a worker, as the main's hidden-secondary code sees it."""

    def __init__(self, worker: _Worker, conn_id: int):
        self.worker = worker
        self.conn_id = conn_id
        self.closed = False
        self._persistent = False

    @property
    def open(self) -> bool:
        return not self.closed and self.worker.writer is not None and self.worker.ready

    @property
    def persistent(self) -> bool:
        return self._persistent

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._persistent = value
        self.worker.send(("persist", self.conn_id, value))

    def send(self, data: bytes | list[bytes]) -> None:
        self.worker.send(("push", self.conn_id, [data] if isinstance(data, bytes) else data))

    def close(self) -> None:
        self.closed = True


class WorkerPool:
    """The N-1 worker processes of a primary, and the recipe that rebuilds its state."""

    def __init__(self, primary, count: int):
        self.primary = primary
        self.count = count
        self.recipes: dict[dns.name.Name, Recipe] = {}
        self.key_files: dict[str, bytes] = {}
        self.workers = [_Worker(i) for i in range(1, count)]
        self.stopping = False
        self._acked = asyncio.Condition()
        self._connections: dict[tuple[int, int], RelayedConnection] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- keeping the recipe (called by the Primary on every install) -----------------------

    def on_install(self, state: RepositoryState, report, files: dict[str, bytes],
                   bumps: dict[dns.name.Name, int]) -> None:
        for origin in report.loaded:
            status = state.status[origin]
            self.recipes[origin] = Recipe(status.filename, status.source, bumps.get(origin),
                                          {}, status.source)
        for origin in report.dropped:
            self.recipes.pop(origin, None)
        self.key_files = dict(state.key_files)
        self._broadcast(("reload", dict(files), dict(bumps)))

    def on_zone(self, origin: dns.name.Name, old, new, diff, source: bytes | None) -> None:
        recipe = self.recipes.get(origin)
        if recipe is None:
            log.error("zone %s changed but has no recipe; restarting the workers", origin)
            self._restart_all()
            return
        if new is not old:
            if diff is not None:
                names = {r[0] for r in (*diff.deleted, *diff.added)} | {origin}
            else:  # a whole new version: every name whose node differs
                names = {n for n in {*old.nodes.keys(), *new.nodes.keys()}
                         if old.nodes.get(n) != new.nodes.get(n)} | {origin}
            changes = {}
            for name in names:
                node = new.nodes.get(name)
                changes[name] = dict(node) if node else None
            recipe.changes.update(changes)
        else:
            changes = {}
        if source:
            recipe.source = source
        if changes or source:
            self._broadcast(("zone", origin, changes, source))

    def on_source(self, origin: dns.name.Name, source: bytes) -> None:
        recipe = self.recipes.get(origin)
        if recipe is not None:
            recipe.source = source
        self._broadcast(("source", origin, source))

    def _broadcast(self, message: tuple) -> None:
        for w in self.workers:
            if w.writer is not None:
                w.change(message)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        for w in self.workers:
            self._spawn(w)

    def _argv(self, w: _Worker, fd: int) -> list[str]:
        cfg = self.primary.config
        argv = [sys.executable, "-m", "gitdns.workers", "--control-fd", str(fd),
                "--index", str(w.index), "--data-dir", str(cfg.data_dir),
                "--tcp-idle-timeout", str(cfg.tcp_idle_timeout),
                "--log-level", logging.getLevelName(logging.getLogger().getEffectiveLevel())]
        for addr in cfg.listen:
            argv += ["--listen", str(addr)]
        if cfg.log_queries:
            argv.append("--log-queries")
        if cfg.axfr_unauthenticated:
            argv.append("--axfr-unauthenticated")
        return argv

    def _spawn(self, w: _Worker) -> None:
        """Start the worker of slot `w` and send it the current recipe (on the loop thread:
        the child's PR_SET_PDEATHSIG follows the thread that started it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.proc = subprocess.Popen(self._argv(w, theirs.fileno()), pass_fds=(theirs.fileno(),),
                                      stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        w.sent = w.acked = 0
        w.ready = False
        w.restarts.append(time.monotonic())
        w.task = asyncio.ensure_future(self._serve(w, ours))

    async def _serve(self, w: _Worker, sock: socket.socket) -> None:
        """Read what worker `w` says until its channel ends; then restart it."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        w.writer = writer
        recipes = {o: dataclasses.replace(r, changes=dict(r.changes))
                   for o, r in self.recipes.items()}
        w.change(("state", recipes, dict(self.key_files)))
        started = time.monotonic()
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)
        loader = asyncio.get_running_loop().call_later(START_TIMEOUT, self._start_overdue, w)
        try:
            while True:
                message = await _read(reader)
                if message is None:
                    break
                kind = message[0]
                if kind == "ack":
                    w.acked = message[1]
                    async with self._acked:
                        self._acked.notify_all()
                elif kind == "loaded":
                    loader.cancel()
                    w.send(("go",))
                    w.ready = True
                    log.info("worker %d (pid %d) loaded in %.2f s; serving", w.index, w.proc.pid,
                             time.monotonic() - started)
                elif kind == "req":
                    self._spawn_task(self._relay(w, *message[1:]))
                elif kind == "closed":
                    conn = self._connections.pop((w.index, message[1]), None)
                    if conn is not None:
                        conn.close()
        finally:
            loader.cancel()
            w.ready = False
            w.writer = None
            writer.close()
            for key in [k for k in self._connections if k[0] == w.index]:
                self._connections.pop(key).close()
            async with self._acked:
                self._acked.notify_all()
        code = await asyncio.to_thread(w.proc.wait)
        if self.stopping:
            return
        log.error("worker %d (pid %d) ended (%s)", w.index, w.proc.pid,
                  f"signal {-code}" if code < 0 else f"exit {code}")
        now = time.monotonic()
        w.restarts = [t for t in w.restarts if now - t < RESTART_WINDOW]
        if len(w.restarts) >= MAX_RESTARTS:
            log.error("worker %d restarted %d times in %.0f s: not restarting it; the other "
                      "processes go on answering", w.index, len(w.restarts), RESTART_WINDOW)
            return
        await asyncio.sleep(min(2.0, 0.1 * len(w.restarts)))
        if not self.stopping:
            self._spawn(w)

    def _start_overdue(self, w: _Worker) -> None:
        log.error("worker %d did not load in %.0f s; killing it", w.index, START_TIMEOUT)
        w.kill()

    def _restart_all(self) -> None:
        for w in self.workers:
            w.kill()

    def _spawn_task(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Wait until every serving worker has applied every change sent so far; a worker that
        has not within `timeout` is killed (and restarted from the current state)."""
        targets = [(w, w.sent) for w in self.workers if w.ready]

        def done() -> bool:
            return all(w.acked >= sent or not w.ready for w, sent in targets)

        try:
            async with self._acked:
                await asyncio.wait_for(self._acked.wait_for(done), timeout)
        except TimeoutError:
            for w, sent in targets:
                if w.ready and w.acked < sent:
                    log.error("worker %d (pid %d) did not apply a change in %.1f s; killing it",
                              w.index, w.proc.pid if w.proc else 0, timeout)
                    w.ready = False
                    w.kill()

    async def _relay(self, w: _Worker, rid: int, wire: bytes, tcp: bool, peer, conn_id) -> None:
        """A request a worker deferred: handled here as if it had come directly."""
        connection = None
        if tcp and conn_id is not None:
            connection = self._connections.get((w.index, conn_id))
            if connection is None:
                connection = self._connections[(w.index, conn_id)] = RelayedConnection(w, conn_id)
        request = core.Request(tcp=tcp, peer=tuple(peer) if peer else None, connection=connection)
        messages: list[bytes] = []
        try:
            reply = self.primary.handle(wire, request)
            if reply is not None and not isinstance(reply, (bytes, list)):
                reply = await reply
            if isinstance(reply, bytes):
                messages = [reply]
            elif isinstance(reply, list):
                messages = reply
        except Exception:
            log.exception("a request relayed by worker %d failed", w.index)
        w.send(("rep", rid, messages))

    async def stop(self, timeout: float = 3.0) -> None:
        self.stopping = True
        for w in self.workers:
            w.send(("stop",))
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                await asyncio.to_thread(w.proc.wait, max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop; killing it", w.index)
                w.proc.kill()
                await asyncio.to_thread(w.proc.wait)
        for task in [*self._tasks, *(w.task for w in self.workers if w.task)]:
            task.cancel()


# -- the worker's side --------------------------------------------------------------------------


class _GitReader:
    """Blobs of the main's clone, read only; reopened when an object is new to it."""

    def __init__(self, path: Path):
        self.path = path
        self.repo = None

    def read(self, blob_id: bytes) -> bytes:
        from dulwich.repo import Repo

        for attempt in range(2):
            if self.repo is None or attempt:
                if self.repo is not None:
                    self.repo.close()
                self.repo = Repo(str(self.path))
            try:
                return self.repo.object_store[blob_id].as_raw_string()
            except KeyError:
                if attempt:
                    raise
        raise KeyError(blob_id)


class Worker:
    """One worker process: a copy of the main's state, its own sockets, a channel to the main."""

    def __init__(self, args: argparse.Namespace):
        from gitdns.net.server import ListenAddress

        self.args = args
        self.index = args.index
        self.listen = [ListenAddress.parse(a) for a in args.listen]
        self.git = _GitReader(Path(args.data_dir) / "repository")
        self.zone_cache = ZoneCache(Path(args.data_dir) / ZONE_CACHE, write=False)
        self.state = RepositoryState()
        self.store = Store()
        self.view = core.ServerState(self.store.zones)
        self.fast = FastPath(self.store.zones)
        self.server = None
        self.writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._connections: dict[int, object] = {}
        # Messages the main pushes on a connection whose relayed request is not answered yet
        # (a hidden secondary's NOTIFYs, sent right after the answer to its SOA query): they
        # wait for that answer, which reaches this process in the same stream just before them
        # but is written by the request's own task a little later.
        self._relaying: dict[int, int] = {}
        self._held_pushes: dict[int, list] = {}
        self._stop = asyncio.Event()

    # -- answering -------------------------------------------------------------------------

    def handle(self, wire: bytes, request: core.Request):
        log_queries = self.args.log_queries
        reply = self.fast.answer(wire, request.tcp) if request.tcp or log_queries else None
        if reply is not None:
            if log_queries:
                log_query(wire, reply, request)
            return reply
        outcome = core.handle(self.view, wire, request, int(time.time()))
        if isinstance(outcome, core.Deferred):
            return self._relay(wire, request)
        if log_queries:
            log_query(wire, outcome, request)
        return outcome

    async def _relay(self, wire: bytes, request: core.Request):
        rid = next(self._ids)
        conn_id = None
        if request.connection is not None:
            conn_id = id(request.connection)
            self._connections[conn_id] = request.connection
            if len(self._connections) > 1024:
                self._connections = {k: c for k, c in self._connections.items()
                                     if getattr(c, "open", False)}
        log.debug("relaying a request from %s over %s to the main process",
                  request.peer[0] if request.peer else "?", "TCP" if request.tcp else "UDP")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting[rid] = future
        self._send(("req", rid, wire, request.tcp, request.peer, conn_id))
        if conn_id is not None:
            self._relaying[conn_id] = self._relaying.get(conn_id, 0) + 1
        try:
            messages = await asyncio.wait_for(future, RELAY_TIMEOUT)
        finally:
            self._waiting.pop(rid, None)
            if conn_id is not None:
                left = self._relaying.pop(conn_id) - 1
                if left:
                    self._relaying[conn_id] = left
                else:
                    # After this step, in which the caller writes the answer.
                    loop.call_soon(self._release_pushes, conn_id)
        if not messages:
            return None
        return messages if request.tcp else messages[0]

    def _send(self, message: tuple) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(_frame(message))

    # -- applying the main's changes -------------------------------------------------------

    def _install(self, state: RepositoryState, update=None) -> None:
        self.state = state
        self.store.swap(state.zones)
        self.view = core.ServerState(state.zones, state.keys, self.args.axfr_unauthenticated)
        if update is not None:  # (origin, old, new, changed names): keep what still holds
            self.fast = self.fast.after_update(state.zones, *update)
        else:
            self.fast = FastPath(state.zones, previous=self.fast)

    def _with_zone(self, state: RepositoryState, origin, zone, source=None) -> RepositoryState:
        status = state.status[origin]
        status = dataclasses.replace(status, zone=zone, source=source or status.source)
        zones = state.zones.replace({origin: zone}) if zone is not None else state.zones
        return dataclasses.replace(state, zones=zones, status={**state.status, origin: status})

    async def apply(self, message: tuple) -> None:
        """One change from the main; loading runs in a thread, as in the main, so answering
        goes on meanwhile (changes still apply one at a time, in order)."""
        kind = message[0]
        if kind == "state":
            self._install(await asyncio.to_thread(self._load_recipes, message[1], message[2]))
        elif kind == "reload":
            files, bumps = message[1], message[2]
            self._install(await asyncio.to_thread(self._reload, files, bumps, self.state))
        elif kind == "zone":
            origin, changes, source = message[1], message[2], message[3]
            zone = self.state.zones.get(origin)
            if zone is None:
                raise RuntimeError(f"a change to zone {origin}, which this worker lacks")
            old = zone
            if changes:
                zone = zone.with_changes(changes)
            self._install(self._with_zone(self.state, origin, zone, source),
                          (origin, old, zone, list(changes)))
        elif kind == "source":
            origin, source = message[1], message[2]
            if origin in self.state.status:
                self.state = self._with_zone(self.state, origin, self.state.status[origin].zone,
                                             source)

    def _load_recipes(self, recipes: dict, key_files: dict) -> RepositoryState:
        from gitdns.updater import with_serial

        files = {r.filename: r.base for r in recipes.values()} | key_files
        state, _ = load_repository(files, self.git.read, None, self.zone_cache)
        for origin, r in recipes.items():
            status = state.status.get(origin)
            if status is None or status.zone is None:
                raise RuntimeError(f"zone {origin} did not load from {r.filename}")
            zone = with_serial(status.zone, r.bump) if r.bump is not None else status.zone
            if r.changes:
                zone = zone.with_changes(r.changes)
            state = self._with_zone(state, origin, zone, r.source)
        return state

    def _reload(self, files: dict, bumps: dict, previous: RepositoryState) -> RepositoryState:
        from gitdns.updater import with_serial

        state, _ = load_repository(files, self.git.read, previous, self.zone_cache)
        for origin, serial in bumps.items():
            zone = state.zones.get(origin)
            if zone is not None:
                state = self._with_zone(state, origin, with_serial(zone, serial))
        return state

    # -- the channel -----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(fileno=self.args.control_fd)
        reader, self.writer = await asyncio.open_unix_connection(sock=sock)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the main reloads, not us
        channel = asyncio.ensure_future(self._channel(reader))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({channel, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            channel.cancel()
            stopper.cancel()
            if self.server is not None:
                await self.server.stop()

    def _push(self, conn_id: int, data) -> None:
        conn = self._connections.get(conn_id)
        if conn is None or not getattr(conn, "open", False):
            self._send(("closed", conn_id))
        else:
            conn.send(data)

    def _release_pushes(self, conn_id: int) -> None:
        if self._relaying.get(conn_id):
            return  # another relayed request on it: they wait for that one's answer too
        for data in self._held_pushes.pop(conn_id, []):
            self._push(conn_id, data)

    async def _channel(self, reader: asyncio.StreamReader) -> None:
        from gitdns.net.server import DnsServer, bind_sockets

        while True:
            message = await _read(reader)
            if message is None:
                log.info("the main process is gone; stopping")
                return
            kind = message[0]
            if kind == "change":
                seq, change = message[1], message[2]
                if change[0] == "state":
                    started = time.monotonic()
                    await self.apply(change)
                    self._send(("loaded",))
                    log.debug("state loaded in %.2f s", time.monotonic() - started)
                else:
                    await self.apply(change)
                self._send(("ack", seq))
            elif kind == "go":
                sockets = bind_sockets(self.listen, reuse_port=True)
                self.server = DnsServer(self.handle, self.listen,
                                        idle_timeout=self.args.tcp_idle_timeout,
                                        fast=None if self.args.log_queries else self,
                                        udp_mode=self.args.udp)
                await self.server.start(sockets)
                log.info("worker %d ready: %d zones", self.index, len(self.store.zones))
            elif kind == "rep":
                future = self._waiting.get(message[1])
                if future is not None and not future.done():
                    future.set_result(message[2])
            elif kind == "push":
                if self._relaying.get(message[1]):
                    self._held_pushes.setdefault(message[1], []).append(message[2])
                else:
                    self._push(message[1], message[2])
            elif kind == "persist":
                conn = self._connections.get(message[1])
                if conn is not None:
                    conn.persistent = message[2]
            elif kind == "stop":
                return


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: SIGKILL when the main process ends, however it ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the main died before the line above
        return 1
    p = argparse.ArgumentParser(prog="gitdns.workers", description="a worker of gitdns serve "
                                "(started by it, never by hand)")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--tcp-idle-timeout", type=float, default=10.0)
    p.add_argument("--log-queries", action="store_true")
    p.add_argument("--axfr-unauthenticated", action="store_true")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--udp", default=None, help="UDP edge: mmsg, recvfrom or protocol")
    args = p.parse_args(argv)
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    logging.basicConfig(
        level=level if isinstance(level, int) else logging.INFO,
        format=f"%(asctime)s %(levelname)s [worker {args.index} pid %(process)d] "
               "%(name)s: %(message)s",
        stream=sys.stderr,
    )
    from gitdns.cli import _run

    try:
        _run(Worker(args).run())
    except KeyboardInterrupt:
        pass
    except Exception:
        log.exception("worker %d failed", args.index)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
