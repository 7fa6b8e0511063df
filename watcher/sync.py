"""Keeping the model in step with the Task Manager: subscription, events, catch-up, locks.

The AIW-I Watcher pattern (PS3.4 CC.2.4, spec sec. 4.4): a global subscription *with*
deletion lock, so no finished workitem is purged before we have read it; on a final State
Report, retrieve the workitem, record it, then release the lock by unsubscribing from that
workitem. Re-subscribing globally with lock would lock every released workitem again, so
the watcher subscribes once, and again only when the server says it lost its
subscriptions (COLD START).

Nothing is lost across outages: the server replays what this AE missed when its channel
reconnects, and after every (re)connection a catch-up search merges the whole worklist, so
workitems that changed beyond the replay window still appear — once, because the model
only moves states forward and drops duplicate events.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import httpx

from upsrs import events as ev
from upsrs.client import UpsClient, UpsError, WorkitemGone, WorkitemNotFound
from upsrs.eventclient import EventChannel, EventReport

from watcher.config import WatchSettings
from watcher.model import FINAL, Model

log = logging.getLogger("aiw.watcher")

# What the table needs beyond the default return keys: the server's change stamp and the
# performed procedure (performer and outputs of finished work).
SEARCH_FIELDS = ["00404010", "00741216", "00741002"]


class Status:
    """The connection as a person should read it: one word and one sentence."""

    def __init__(self) -> None:
        self.state = "connecting"  # connecting / connected / reconnecting / unreachable
        self.message = "connecting to the Task Manager"
        self.since = time.time()
        self.catch_ups = 0
        self.loaded = False  # the first full load finished

    def set(self, state: str, message: str) -> None:
        if (state, message) != (self.state, self.message):
            if state != self.state:
                self.since = time.time()
            self.state, self.message = state, message
            log.info("watcher %s: %s", state, message)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "since": self.since, "loaded": self.loaded}


class Watcher:
    def __init__(self, settings: WatchSettings, model: Model | None = None, *, rng: random.Random | None = None):
        self.settings = settings
        self.model = model or Model()
        self.status = Status()
        self.rng = rng or random.Random()
        self.subscribed = False
        self.fetch_queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._catch_up = asyncio.Event()
        self.loaded = asyncio.Event()  # the first catch-up finished: detail retrieves may start
        self.channel: EventChannel | None = None
        self.ups: UpsClient | None = None
        self.released = 0
        self.retrieved = 0

    # ------------------------------------------------------------------ running
    async def run(self, stop: asyncio.Event) -> None:
        async with UpsClient(self.settings.server, timeout=30.0) as ups:
            self.ups = ups
            await self._subscribe_until_done(stop)
            if stop.is_set():
                return
            self.channel = EventChannel(
                ups.channel_url(self.settings.ae_title), heartbeat_interval=self.settings.heartbeat_interval,
                heartbeat_timeout=self.settings.heartbeat_timeout, backoff_initial=self.settings.backoff_initial,
                backoff_max=self.settings.backoff_max, on_connect=self._on_connect, on_cold_start=self._on_cold_start,
                rng=self.rng)
            tasks = [asyncio.create_task(self._events(self.channel)), asyncio.create_task(self._catch_up_loop()),
                     asyncio.create_task(self._status_loop())]
            tasks += [asyncio.create_task(self._fetcher()) for _ in range(max(1, self.settings.fetch_concurrency))]
            try:
                await stop.wait()
            finally:
                await self.channel.close()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _subscribe_until_done(self, stop: asyncio.Event) -> None:
        """Subscribe globally with lock; while the server cannot be reached, say so and retry
        with capped exponential backoff (full jitter)."""
        attempt = 0
        while not stop.is_set():
            try:
                await self._subscribe()
                return
            except (httpx.HTTPError, OSError, UpsError) as exc:
                delay = self.rng.uniform(0.5, 1.0) * min(self.settings.backoff_max,
                                                         self.settings.backoff_initial * 2 ** attempt)
                attempt += 1
                what = "refused the subscription" if isinstance(exc, UpsError) else "is unreachable"
                self.status.set("unreachable", f"Task Manager {self.settings.server} {what} ({describe(exc)}); "
                                               f"retrying in {delay:.1f} s (attempt {attempt})")
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def _subscribe(self) -> None:
        assert self.ups is not None
        await self.ups.subscribe(self.settings.ae_title, deletion_lock=True)
        self.subscribed = True
        log.info("subscribed globally with deletion lock as %s", self.settings.ae_title)

    async def _on_connect(self) -> None:
        if not self.subscribed:
            try:
                await self._subscribe()
            except (httpx.HTTPError, OSError, UpsError) as exc:
                log.error("subscribe failed after reconnect: %s", describe(exc))
        self._catch_up.set()

    async def _on_cold_start(self) -> None:
        """The server lost its subscriptions: subscribe again (locks come back with it; each
        final workitem's initial report then leads to its release once more)."""
        self.subscribed = False
        await self._on_connect()

    # ------------------------------------------------------------------ events
    async def _events(self, channel: EventChannel) -> None:
        async for event in channel:
            try:
                self.handle(event)
            except Exception as exc:  # one bad event must never stop the watcher
                self.model.skipped += 1
                log.error("event handling failed for %s: %r", event.uid, exc)

    def handle(self, event: EventReport) -> None:
        self.model.apply(event)
        if event.type == ev.SCP_STATUS_CHANGE:
            if event.scp_status == "GOING DOWN":
                self.status.set("reconnecting", "the Task Manager is going down; will reconnect")
            else:
                self._catch_up.set()
            return
        target = self.model.rows.get(event.uid)
        if target is None:
            return
        if event.type == ev.STATE_REPORT and event.state in FINAL:
            if not target.final_recorded or not target.lock_released:
                self.want(event.uid)
        elif not target.detailed:
            self.want(event.uid)  # a new workitem: its patient, procedure... come with a retrieve

    def want(self, uid: str) -> None:
        if uid not in self._pending:
            self._pending.add(uid)
            self.fetch_queue.put_nowait(uid)

    async def _fetcher(self) -> None:
        while True:
            uid = await self.fetch_queue.get()
            try:
                await self.fetch(uid)
            except (httpx.HTTPError, OSError, UpsError) as exc:
                log.warning("retrieve of %s failed: %s; the catch-up search will bring it", uid, describe(exc))
            except Exception as exc:
                self.model.skipped += 1
                log.error("retrieve of %s failed: %r", uid, exc)
            finally:
                self._pending.discard(uid)

    async def fetch(self, uid: str) -> None:
        """Details of a new workitem; for a final one: retrieve, record, release the lock."""
        assert self.ups is not None
        row = self.model.rows.get(uid)
        if row is None:
            return
        if row.state not in FINAL and not self.loaded.is_set():
            await self.loaded.wait()  # the initial load may bring it: no retrieve storm at start
        final = row.state in FINAL
        if row.detailed and not final:
            return  # the search already told us
        if not (final and row.final_recorded):
            try:
                doc = await self.ups.retrieve(uid)
            except (WorkitemNotFound, WorkitemGone) as exc:
                row.timeline.append((time.time(), "gone", f"Workitem no longer on the server ({exc.status})"))
                return
            self.retrieved += 1
            self.model.merge(doc, "retrieve", uid=uid)
        if row.state in FINAL and row.final_recorded and not row.lock_released:
            try:
                await self.ups.unsubscribe(self.settings.ae_title, uid)
            except (WorkitemNotFound, WorkitemGone):
                pass  # purged already: nothing left to hold
            self.released += 1
            self.model.mark_released(uid)

    # ------------------------------------------------------------------ catch-up
    async def _catch_up_loop(self) -> None:
        while True:
            await self._catch_up.wait()
            self._catch_up.clear()
            attempt = 0
            while True:
                try:
                    await self.catch_up()
                    break
                except (httpx.HTTPError, OSError, UpsError) as exc:
                    attempt += 1
                    delay = self.rng.uniform(0.5, 1.0) * min(self.settings.backoff_max,
                                                             self.settings.backoff_initial * 2 ** attempt)
                    log.warning("catch-up search failed (%s); again in %.1f s", describe(exc), delay)
                    await asyncio.sleep(delay)

    async def catch_up(self) -> int:
        """Merge every workitem on the server; queue the final ones not yet recorded."""
        assert self.ups is not None
        n = 0
        async for ds in self.ups.search_all(includefield=SEARCH_FIELDS, page_size=1000):
            row = self.model.merge(ds, "search")
            n += 1
            if row is not None and row.state in FINAL and not (row.final_recorded and row.lock_released):
                self.want(row.uid)
            if n % 1000 == 0:
                await asyncio.sleep(0)  # let events and pages through during a large load
        self.status.catch_ups += 1
        self.status.loaded = True
        self.loaded.set()
        log.info("catch-up search merged %d workitems", n)
        return n

    async def _status_loop(self) -> None:
        """Mirror the event channel's state (it heals itself; we say what it is doing)."""
        while True:
            ch = self.channel
            if ch is not None:
                if ch.status == "connected":
                    loading = "" if self.status.loaded else "; loading the worklist"
                    self.status.set("connected", f"subscribed to {self.settings.server} as "
                                                 f"{self.settings.ae_title}{loading}")
                elif ch.status == "reconnecting":
                    self.status.set("reconnecting", f"connection to {self.settings.server} lost; reconnecting "
                                                    "(missed events are replayed on reconnect)")
                elif ch.status == "connecting":
                    self.status.set("connecting", f"opening the event channel to {self.settings.server}")
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ actions
    async def request_cancel(self, uid: str, reason: str, user: str) -> None:
        assert self.ups is not None
        await self.ups.request_cancellation(uid, reason=reason, contact_name=user[:64] or None,
                                            requester=self.settings.ae_title)


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
