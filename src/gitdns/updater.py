"""Dynamic updates written back to git: the edge around `update.apply_update`.

Rules this module keeps:
- Updates are applied one at a time, in arrival order, each on the newest accepted version;
  an update is answered NOERROR only once its journal entry is on disk (journal.py), and only
  then served. The journal is folded into git commits in the background (several updates may
  share a commit, whose message lists each), and replayed at start for what git lacks.
- Pushing runs in the background and never loses a committed update: a remote that is down is
  retried with backoff; a push rejected because the remote moved is replayed, change by change,
  on the remote's newest zone files; a change that cannot be replayed any more (its zone file is
  gone) is kept on a `gitdns/unmerged/...` branch and logged.
- The clone is repacked (housekeeping.py) when folds, pushes and pulls have made it due, after a
  burst of updates, never beside a push (which reads objects without the clone's lock) or a write.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from dulwich.objects import Blob

from gitdns import core, gitwrite
from gitdns.bulktext import bulk_zone_text
from gitdns.diff import ZoneDiff, names_diff, replay, zone_diff
from gitdns.fastload import parse_zone_fast
from gitdns.gitrepo import GitError
from gitdns.journal import Entry, Journal
from gitdns.repository import load_zone
from gitdns.serial import serial_gt, serial_increase
from gitdns.update import apply_update
from gitdns.zone import Zone
from gitdns.zoneedit import ZoneEditError, edit_zone_text
from gitdns.zonefile import ZoneLoadError, check_zone, parse_zone, render_zone
from gitdns.zonetext import ZoneText

if TYPE_CHECKING:
    from gitdns.primary import Primary

log = logging.getLogger("gitdns.update")
PUSH_RETRY_FIRST = 1.0
PUSH_RETRY_MAX = 60.0
# Pushes carry no durability (the journal does), and each one makes dulwich walk the history:
# during a burst of updates one push a second carries every commit made in between.
PUSH_MIN_INTERVAL = 1.0
# Likewise a fold: each commit compresses the whole zone file into a new blob, so at most one
# fold every half second takes every update answered in between (one commit listing each).
FOLD_MIN_INTERVAL = 0.5
# A fold or push of a big zone costs about a second of CPU (the whole file is rendered, hashed
# and compressed into a new blob); waiting BUSY_FACTOR times as long before the next keeps them
# under a fifth of a core, for answering queries and updates, whatever the zone's size.
BUSY_FACTOR = 4.0
# And both wait for a pause in the updates: a burst (DHCP, ACME for many names) is answered at
# the speed of the journal, and folded into one commit when it ends. The journal makes every
# answered update durable meanwhile; git and the remote get it at most FOLD_MAX_DELAY later.
UPDATES_QUIET = 0.2
FOLD_MAX_DELAY = 10.0


def default_committer() -> bytes:
    return f"gitdns <gitdns@{socket.gethostname()}>".encode()


@dataclass(frozen=True)
class Committed:
    """An update that is durable in the local clone, ready to be served."""

    origin: dns.name.Name
    zone: Zone
    diff: ZoneDiff
    source: bytes  # the new blob id of the zone file


class Updater:
    """Applies UPDATEs and serial bumps, commits them, and keeps the remote in step."""

    def __init__(self, primary: Primary, serial_policy: str = "increment",
                 committer: bytes | None = None):
        self.primary = primary
        self.serial_policy = serial_policy
        self.committer = committer or default_committer()
        self._push_wanted = asyncio.Event()
        self._fold_wanted = asyncio.Event()
        self._tidy_wanted = asyncio.Event()
        self.push_lock = asyncio.Lock()  # held around a push's network exchange
        self.apply_lock = asyncio.Lock()  # updates one at a time, each on the newest version
        self.journal: Journal
        self.pending: dict[dns.name.Name, Zone] = {}  # newest accepted version, maybe not durable
        self.git_zone: dict[dns.name.Name, Zone] = {}  # the version git has, while entries wait
        self.installed: dict[dns.name.Name, int] = {}  # journal number of the served version
        self.texts: dict[dns.name.Name, tuple[bytes, ZoneText]] = {}  # blob id -> indexed text
        self.last_update = 0.0  # (monotonic) when the last update was answered

    # -- UPDATE --------------------------------------------------------------------------------

    def open_journal(self, directory) -> None:
        self.journal = Journal(directory)

    async def update(self, job: core.Deferred) -> bytes:
        peer = job.request.peer[0] if job.request.peer else "?"
        keyname = job.key.name.to_text(omit_final_dot=True) if job.key else "?"
        origin = job.origin
        async with self.apply_lock:
            base = self.pending.get(origin) or self.primary.store.zones.get(origin)
            if base is None:  # dropped by a pull since the core looked
                return core.reply(job.query, dns.rcode.NOTAUTH, job.request)
            result = apply_update(base, job.query, serial_policy=self.serial_policy,
                                  today=datetime.date.today())
            origin_text = origin.to_text(omit_final_dot=True)
            if result.rcode != dns.rcode.NOERROR:
                log.warning("UPDATE of %s by %s from %s refused (%s): %s", origin_text, keyname,
                            peer, dns.rcode.to_text(result.rcode),
                            result.reason or "see the RFC 2136 rules")
                return core.reply(job.query, result.rcode, job.request)
            if result.zone is None or result.diff is None:
                log.info("UPDATE of %s by %s from %s changed nothing", origin_text, keyname, peer)
                return core.reply(job.query, dns.rcode.NOERROR, job.request)
            message = (f"update {origin_text} by {keyname} from {peer}: "
                       + ", ".join(result.summary))
            entry = self.journal.new_entry(
                origin, result.zone.serial, result.diff.deleted, result.diff.added, message,
                f"{keyname} <{keyname}@{peer}>")
            if origin not in self.pending:
                self.git_zone.setdefault(origin, base)  # the version git has, for the fold
            self.pending[origin] = result.zone
            durable = self.journal.append(entry)
        try:
            await durable
        except OSError:
            self.pending.pop(origin, None)
            return core.reply(job.query, dns.rcode.SERVFAIL, job.request)
        if entry.seq > self.installed.get(origin, 0):
            self.installed[origin] = entry.seq
            self.primary.install_zone(origin, result.zone, None, result.diff)
        log.info("UPDATE of %s by %s from %s accepted (journal %d), serial %d: %s", origin_text,
                 keyname, peer, entry.seq, result.zone.serial, ", ".join(result.summary))
        self.last_update = time.monotonic()
        self._fold_wanted.set()
        return core.reply(job.query, dns.rcode.NOERROR, job.request)

    async def _after_the_burst(self, since: float) -> None:
        """Return once no update came for UPDATES_QUIET seconds, or FOLD_MAX_DELAY after `since`
        (a fold or push is the whole zone file's worth of work: not in the middle of a burst)."""
        while True:
            now = time.monotonic()
            wait = min(self.last_update + UPDATES_QUIET, since + FOLD_MAX_DELAY) - now
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    # -- folding the journal into git ------------------------------------------------------------

    async def folder(self) -> None:
        """Fold durable journal entries into git commits whenever there are some."""
        while True:
            await self._fold_wanted.wait()
            await self._after_the_burst(time.monotonic())
            self._fold_wanted.clear()
            try:
                started = time.monotonic()
                await self.fold()
                took = time.monotonic() - started
                await asyncio.sleep(max(FOLD_MIN_INTERVAL, BUSY_FACTOR * took))
            except Exception:
                log.exception("folding the journal into git failed; the journal keeps the "
                              "updates and the fold is retried")
                await asyncio.sleep(PUSH_RETRY_FIRST)
                self._fold_wanted.set()

    async def fold(self) -> None:
        """Commit every durable journal entry (grouped by zone) to the local clone."""
        await self.journal.drain()
        async with self.primary.write_lock:
            # Only entries whose version is served (durable and installed) can be in the version
            # committed, and the marker means "every entry up to N is in git": so the longest
            # run of such entries, from the oldest, and no further.
            entries = []
            for entry in self.journal.unfolded():
                if entry.seq > self.installed.get(entry.origin, 0):
                    break
                entries.append(entry)
            if not entries:
                return
            last = entries[-1].seq
            by_zone: dict[dns.name.Name, list[Entry]] = {}
            for entry in entries:
                by_zone.setdefault(entry.origin, []).append(entry)
            for origin, group in by_zone.items():
                served = self.primary.store.zones.get(origin)
                before = self.git_zone.get(origin)
                status = self.primary.state.status.get(origin)
                if before is None and served is not None:
                    continue  # nothing to commit: git has these already (replayed at start)
                if served is None or before is None or status is None:
                    log.error("journal entries %d-%d for %s: the zone is gone; not folded",
                              group[0].seq, group[-1].seq, origin)
                    continue
                names = {r[0] for e in group for r in (*e.deleted, *e.added)}
                # In the thread too: thousands of names after a burst take a while to compare.
                committed = await asyncio.to_thread(self._diff_and_commit, origin, group,
                                                    before, served, names)
                self.primary.set_source(origin, committed)
                if not any(e.origin == origin and e.seq > last for e in self.journal.entries):
                    self.git_zone.pop(origin, None)
                    if self.pending.get(origin) is served:
                        self.pending.pop(origin, None)
                else:
                    self.git_zone[origin] = served
            self.journal.mark_folded(last)
        self.kick()
        self.tidy()

    def _indexed_text(self, origin: dns.name.Name, status) -> ZoneText:
        """The zone file's text, indexed for edits; kept between folds (keyed by its blob)."""
        cached = self.texts.pop(origin, None)
        if cached is not None and cached[0] == status.source:
            return cached[1]
        data = self.primary.repo.read_blob(status.source)
        # A big regular file is indexed in a second (bulktext); others by the general loader.
        return bulk_zone_text(data, origin) or parse_zone_fast(data, origin, status.filename)[2]

    def _diff_and_commit(self, origin: dns.name.Name, group: list[Entry], before: Zone,
                         after: Zone, names: set[dns.name.Name]) -> bytes:
        return self._commit_group(origin, group, before, after, names_diff(before, after, names))

    def _commit_group(self, origin: dns.name.Name, group: list[Entry], before: Zone,
                      after: Zone, diff: ZoneDiff) -> bytes:
        """In a worker thread: the zone file edited from `before` to `after`, committed.

        The text is edited through its index (zonetext.py) in time proportional to the change;
        where that is impossible the zone is written out whole, with a warning."""
        repo = self.primary.repo
        status = self.primary.state.status[origin]
        try:
            indexed: ZoneText | None = self._indexed_text(origin, status)
            indexed.apply(diff)
            new_text = indexed.text()
        except (ZoneEditError, ZoneLoadError) as e:
            log.warning("%s: %s; writing the zone file out whole", status.filename, e)
            indexed, new_text = None, render_zone(after)
        data = new_text.encode("utf-8")
        if len(group) == 1:
            message, author = group[0].message, group[0].author.encode()
        else:
            message = (f"update {origin.to_text(omit_final_dot=True)}: {len(group)} updates\n\n"
                       + "\n".join(e.message for e in group))
            authors = {e.author for e in group}
            author = authors.pop().encode() if len(authors) == 1 else self.committer
        gitwrite.commit_files(repo, {status.filename: data}, message, author, self.committer)
        blob = Blob.from_string(data).id
        if indexed is not None:
            self.texts[origin] = (blob, indexed)
        return blob

    async def recover(self) -> None:
        """At start: replay journal entries git does not have yet, then fold them."""
        entries = self.journal.unfolded()
        if not entries:
            return
        log.warning("replaying %d journal entries that git does not have yet", len(entries))
        for entry in entries:
            self.installed[entry.origin] = entry.seq  # what the fold may take from here on
            zone = self.primary.store.zones.get(entry.origin)
            if zone is None:
                kept = self.journal.keep_unmerged(entry)
                log.error("journal entry %d: zone %s is not served any more; its update (%s) "
                          "is kept in %s for the operator", entry.seq, entry.origin,
                          entry.message, kept)
                continue
            soa = (zone.origin, zone.soa.ttl, zone.soa[0])
            changed = replay(zone, ZoneDiff(soa, soa, entry.deleted, entry.added))
            if changed is None:
                continue
            serial = (entry.serial if serial_gt(entry.serial, zone.serial)
                      else serial_increase(zone.serial, self.serial_policy))
            new = with_serial(changed, serial)
            self.git_zone.setdefault(entry.origin, zone)
            self.primary.install_zone(entry.origin, new, None, zone_diff(zone, new))
        self._fold_wanted.set()  # the folder retries if this fold fails
        await self.fold()

    def _commit_zone(self, old: Zone, new: Zone, diff: ZoneDiff, message: str,
                     author: bytes) -> Committed:
        """Edit the zone file of `old` into `new`, commit it durably; the file keeps its layout."""
        repo = self.primary.repo
        assert repo is not None
        status = self.primary.state.status[old.origin]
        text = repo.read_blob(status.source).decode("utf-8")
        new_text = edit_text(text, old, new, diff, status.filename)
        data = new_text.encode("utf-8")
        gitwrite.commit_files(repo, {status.filename: data}, message, author, self.committer)
        return Committed(old.origin, new, diff, Blob.from_string(data).id)

    # -- serial bumps (content changed in git, serial not raised) -------------------------------

    async def bump_serial(self, origin: dns.name.Name, changed_from: Zone) -> None:
        """Commit the serial increase the primary already serves for `origin`."""
        await self.fold()
        async with self.primary.write_lock:
            zone = self.primary.store.zones.get(origin)
            status = self.primary.state.status.get(origin)
            if zone is None or status is None:
                return
            try:
                committed = await asyncio.to_thread(self._commit_bump, zone, status)
            except (GitError, ZoneEditError, OSError) as e:
                log.error("zone %s: could not commit the raised serial %d: %s", origin,
                          zone.serial, e)
                return
            if committed is not None:
                self.primary.install_zone(origin, committed.zone, committed.source, None)
        self.kick()
        self.tidy()

    def _commit_bump(self, zone: Zone, status) -> Committed | None:
        repo = self.primary.repo
        assert repo is not None
        in_git, _ = load_zone(repo.read_blob(status.source), zone.origin, status.filename)
        if in_git.serial == zone.serial:
            return None
        origin_text = zone.origin.to_text(omit_final_dot=True)
        message = (f"raise the serial of {origin_text} to {zone.serial}: its content changed "
                   f"without a serial increase (secondaries would not see the change)")
        return self._commit_zone(in_git, zone, zone_diff(in_git, zone), message, self.committer)

    # -- pushing ----------------------------------------------------------------------------------

    def kick(self) -> None:
        """Ask the pusher to deliver the local commits."""
        self._push_wanted.set()

    async def pusher(self) -> None:
        """Push local commits until the remote has them all; runs for the server's lifetime."""
        repo = self.primary.repo
        assert repo is not None
        delay = PUSH_RETRY_FIRST
        while True:
            await self._push_wanted.wait()
            self._push_wanted.clear()
            while True:
                await self._after_the_burst(time.monotonic())
                ahead = await asyncio.to_thread(gitwrite.ahead_of_remote, repo)
                if not ahead:
                    break
                started = time.monotonic()
                async with self.push_lock:  # no repack while the push reads objects
                    result = await asyncio.to_thread(gitwrite.push, repo)
                self.tidy()  # a push that failed for long leaves many commits' objects
                if result.ok:
                    delay = PUSH_RETRY_FIRST
                    log.info("pushed %d commit(s) to the remote", len(ahead))
                    took = time.monotonic() - started
                    await asyncio.sleep(max(PUSH_MIN_INTERVAL, BUSY_FACTOR * took))
                    continue  # updates committed meanwhile go next
                if result.status == "rejected":
                    log.warning("the remote moved on: replaying %d local commit(s) on it",
                                len(ahead))
                    async with self.apply_lock:  # no update may build on what is replaced
                        await self.fold()
                        async with self.primary.write_lock:
                            loaded = await asyncio.to_thread(self._replay)
                            if loaded is not None:
                                self.primary.install(*loaded)
                        self.forget_pending()
                    continue
                log.warning("%d commit(s) not pushed yet: %s; retrying in %.0f s (updates are "
                            "still accepted and committed locally)", len(ahead), result.error,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUSH_RETRY_MAX)

    # -- housekeeping ----------------------------------------------------------------------------

    def tidy(self) -> None:
        """Ask the keeper to look whether the clone needs a repack (cheap when it does not)."""
        self._tidy_wanted.set()

    async def keeper(self) -> None:
        """Repack the clone whenever housekeeping says it is due; runs for the server's life.

        Between bursts of updates (like a fold), holding the push lock (a push reads the clone
        through a Repo of its own, without the clone's lock) and the write lock (no fold, pull
        or replay meanwhile; updates are still answered, the journal keeps them), with every
        worker process done reading the objects it was sent. The repack itself runs in a
        thread under the clone's lock, so queries are answered throughout."""
        while True:
            await self._tidy_wanted.wait()
            self._tidy_wanted.clear()
            housekeeper = self.primary.housekeeper
            try:
                if housekeeper is None or await asyncio.to_thread(housekeeper.reason) is None:
                    continue
                await self._after_the_burst(time.monotonic())
                async with self.push_lock, self.primary.write_lock:
                    if self.primary.workers is not None:
                        await self.primary.workers.sync()
                    await asyncio.to_thread(housekeeper.run)
            except Exception:  # run() logs a failed repack itself; this is a bug's way out
                log.exception("housekeeping of the git clone failed; the clone is left as it is")

    def forget_pending(self) -> None:
        """After the tree moved under a pull or a replay (everything folded first)."""
        self.pending.clear()
        self.git_zone.clear()

    def _replay(self):
        """In a worker thread, under the write lock: redo the local commits on the remote tip."""
        repo = self.primary.repo
        assert repo is not None
        try:
            repo.fetch()
        except GitError as e:
            log.warning("replay: %s", e)
            return None
        ahead = gitwrite.ahead_of_remote(repo)
        work = [(c, self._changes_of(c)) for c in reversed(ahead)]  # oldest first
        gitwrite.reset_to_remote(repo)
        for commit, (author, lines, files) in work:
            for filename, (old, new) in files.items():
                self._replay_file(commit, author, lines, filename, old, new)
        return self.primary._read_repo()

    def _changes_of(self, commit: bytes):
        """(author, message lines, {file: (old bytes | None, new bytes | None)}) of a commit."""
        repo = self.primary.repo
        with repo.lock:
            r = repo.dulwich_repo()
            c = r[commit]
            parent_tree = r[r[c.parents[0]].tree] if c.parents else None
            author = c.author
        new_files = gitwrite.changed_files(repo, commit)
        files = {}
        for name, new in new_files.items():
            old = None
            if parent_tree is not None and name.encode() in parent_tree:
                with repo.lock:
                    old = repo.dulwich_repo()[parent_tree[name.encode()][1]].data
            files[name] = (old, new)
        return author, gitwrite.commit_message_lines(repo, commit), files

    def _replay_file(self, commit: bytes, author: bytes, lines: list[str], filename: str,
                     old: bytes | None, new: bytes | None) -> None:
        repo = self.primary.repo
        short = commit.decode()[:12]
        current_id = repo.top_level_files().get(filename)
        try:
            origin = dns.name.from_text(filename)
            if old is None or new is None or current_id is None:
                raise _CannotReplay(f"{filename} is {'gone' if current_id is None else 'new'}")
            old_zone, _ = parse_zone(old, origin, filename)
            new_zone, _ = parse_zone(new, origin, filename)
            current_text = repo.read_blob(current_id).decode("utf-8")
            current, _ = parse_zone(current_text, origin, filename)
            diff = zone_diff(old_zone, new_zone)
            changed = replay(current, diff)
            if changed is None:
                log.info("replay of %s: its change to %s is already on the remote", short,
                         filename)
                return
            serial = (new_zone.serial if serial_gt(new_zone.serial, current.serial)
                      else serial_increase(current.serial, self.serial_policy))
            result = with_serial(changed, serial)
            errors, _ = check_zone(result, filename)
            if errors:
                raise _CannotReplay("; ".join(str(e) for e in errors))
        except (_CannotReplay, ZoneLoadError, UnicodeDecodeError) as e:
            branch = f"{time.strftime('%Y%m%d-%H%M%S')}-{short}"
            saved = gitwrite.save_branch(repo, branch, commit)
            log.error("replay of %s (%s) is impossible: %s; kept on branch gitdns/unmerged/%s "
                      "(%s) for the operator to merge by hand", short, lines[0] if lines else "",
                      e, branch, "pushed" if saved.ok else "local only")
            return
        text = edit_text(current_text, current, result, zone_diff(current, result), filename)
        message = ("\n".join(lines)
                   + f"\n\n(replayed by gitdns after the remote moved on; was {short})")
        gitwrite.commit_files(repo, {filename: text.encode("utf-8")}, message, author,
                              self.committer)
        log.info("replayed %s on the remote's %s: serial %d", short, filename, serial)


class _CannotReplay(Exception):
    """A local change that no longer applies to the remote's files."""


def with_serial(zone: Zone, serial: int) -> Zone:
    """`zone` with its SOA serial set to `serial`."""
    soa = zone.soa[0].replace(serial=serial)
    rrset = dns.rrset.RRset(zone.soa.name, zone.soa.rdclass, dns.rdatatype.SOA)
    rrset.add(soa, zone.soa.ttl)
    apex = dict(zone.nodes[zone.origin])
    apex[(dns.rdatatype.SOA, 0)] = rrset
    return zone.with_changes({zone.origin: apex})  # O(1), not O(zone)


def edit_text(text: str, old: Zone, new: Zone, diff: ZoneDiff, filename: str) -> str:
    """The file edited in place; written out whole (with a warning) where it cannot be."""
    try:
        return edit_zone_text(text, old.origin, diff, old_zone=old)
    except ZoneEditError as e:
        log.warning("%s: %s; writing the zone file out whole", filename, e)
        return render_zone(new)
