"""Dynamic updates written back to git: the edge around `update.apply_update`.

Rules this module keeps:
- Updates (and pulls) run one at a time, in arrival order, under the primary's write lock; an
  update is answered NOERROR only once its commit is durable on the local disk.
- Pushing runs in the background and never loses a committed update: a remote that is down is
  retried with backoff; a push rejected because the remote moved is replayed, change by change,
  on the remote's newest zone files; a change that cannot be replayed any more (its zone file is
  gone) is kept on a `gitdns/unmerged/...` branch and logged.
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
from gitdns.diff import ZoneDiff, replay, zone_diff
from gitdns.gitrepo import GitError
from gitdns.serial import serial_gt, serial_increase
from gitdns.update import apply_update
from gitdns.zone import Zone
from gitdns.zoneedit import ZoneEditError, edit_zone_text
from gitdns.zonefile import ZoneLoadError, check_zone, parse_zone, render_zone

if TYPE_CHECKING:
    from gitdns.primary import Primary

log = logging.getLogger("gitdns.update")
PUSH_RETRY_FIRST = 1.0
PUSH_RETRY_MAX = 60.0


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

    # -- UPDATE --------------------------------------------------------------------------------

    async def update(self, job: core.Deferred) -> bytes:
        peer = job.request.peer[0] if job.request.peer else "?"
        keyname = job.key.name.to_text(omit_final_dot=True) if job.key else "?"
        async with self.primary.write_lock:
            zone = self.primary.store.zones.get(job.origin)
            if zone is None:  # dropped by a pull since the core looked
                return core.reply(job.query, dns.rcode.NOTAUTH, job.request)
            outcome = await asyncio.to_thread(self._apply_and_commit, zone, job, peer, keyname)
            if isinstance(outcome, int):
                return core.reply(job.query, outcome, job.request)
            self.primary.install_zone(outcome.origin, outcome.zone, outcome.source, outcome.diff)
        self.kick()
        return core.reply(job.query, dns.rcode.NOERROR, job.request)

    def _apply_and_commit(self, zone: Zone, job: core.Deferred, peer: str,
                          keyname: str) -> Committed | int:
        """In a worker thread: the update on `zone`, its file edited and committed durably."""
        origin_text = zone.origin.to_text(omit_final_dot=True)
        result = apply_update(zone, job.query, serial_policy=self.serial_policy,
                              today=datetime.date.today())
        if result.rcode != dns.rcode.NOERROR:
            log.warning("UPDATE of %s by %s from %s refused (%s): %s", origin_text, keyname, peer,
                        dns.rcode.to_text(result.rcode), result.reason or "see the RFC 2136 rules")
            return result.rcode
        if result.zone is None or result.diff is None:
            log.info("UPDATE of %s by %s from %s changed nothing", origin_text, keyname, peer)
            return dns.rcode.NOERROR
        message = (f"update {origin_text} by {keyname} from {peer}: "
                   + ", ".join(result.summary))
        author = f"{keyname} <{keyname}@{peer}>".encode()
        committed = self._commit_zone(zone, result.zone, result.diff, message, author)
        log.info("UPDATE of %s by %s from %s committed, serial %d: %s", origin_text, keyname,
                 peer, result.zone.serial, ", ".join(result.summary))
        return committed

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

    def _commit_bump(self, zone: Zone, status) -> Committed | None:
        repo = self.primary.repo
        assert repo is not None
        text = repo.read_blob(status.source).decode("utf-8")
        in_git, _ = parse_zone(text, zone.origin, status.filename)
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
                ahead = await asyncio.to_thread(gitwrite.ahead_of_remote, repo)
                if not ahead:
                    break
                result = await asyncio.to_thread(gitwrite.push, repo)
                if result.ok:
                    delay = PUSH_RETRY_FIRST
                    log.info("pushed %d commit(s) to the remote", len(ahead))
                    continue  # updates committed meanwhile go next
                if result.status == "rejected":
                    log.warning("the remote moved on: replaying %d local commit(s) on it",
                                len(ahead))
                    async with self.primary.write_lock:
                        loaded = await asyncio.to_thread(self._replay)
                        if loaded is not None:
                            self.primary.install(*loaded)
                    continue
                log.warning("%d commit(s) not pushed yet: %s; retrying in %.0f s (updates are "
                            "still accepted and committed locally)", len(ahead), result.error,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, PUSH_RETRY_MAX)

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
    rrset = dns.rrset.RRset(zone.origin, zone.soa.rdclass, dns.rdatatype.SOA)
    rrset.add(soa, zone.soa.ttl)
    rrsets = [rrset, *(r for r in zone.rrsets() if r.rdtype != dns.rdatatype.SOA)]
    return Zone(zone.origin, rrsets, zone.outside)


def edit_text(text: str, old: Zone, new: Zone, diff: ZoneDiff, filename: str) -> str:
    """The file edited in place; written out whole (with a warning) where it cannot be."""
    try:
        return edit_zone_text(text, old.origin, diff, old_zone=old)
    except ZoneEditError as e:
        log.warning("%s: %s; writing the zone file out whole", filename, e)
        return render_zone(new)
