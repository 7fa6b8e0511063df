"""Following one workitem over the event channel until it is final.

Open the channel, subscribe, then read the state: an event that happens after the read is
seen on the channel, and a workitem that was already final is reported without waiting for
an event that will never come. Duplicates after a reconnect (at-least-once) are dropped by
their content key.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from requester_cli import render
from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs.client import UpsClient
from upsrs.eventclient import EventChannel

FINAL = ("COMPLETED", "CANCELED")


def describe(event: Any) -> str:
    if event.type == ev.STATE_REPORT:
        return f"state {event.state} (inputs {event.readiness})"
    if event.type == ev.PROGRESS_REPORT:
        items = dj.items(event.dataset, 0x00741002)
        what = render.text(items[0], 0x00741006) if items else ""
        return f"progress {float(event.progress or 0):.0f}% {what}".rstrip()
    if event.type == ev.CANCEL_REQUESTED:
        items = dj.items(event.dataset, 0x00741002)
        why = render.text(items[0], 0x00741238) if items else render.text(event.dataset, 0x00741238)
        return f"cancellation requested{': ' + why if why else ''}"
    return event.name


async def follow(ups: UpsClient, uid: str, aet: str, say: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    """Events of ``uid`` printed through ``say`` until final; returns (state, workitem).

    The channel is opened first and the subscription made once it is connected (spec
    digest sec. 7 row 11: events for an AE with no open channel need not be kept), then
    the state is read: nothing that happens after the read can be missed."""
    subscribed = asyncio.Event()

    async def on_connect() -> None:
        await ups.subscribe(aet, uid)
        subscribed.set()

    channel = EventChannel(ups.channel_url(aet), on_connect=on_connect)
    events: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        async for event in channel:
            await events.put(event)

    reader = asyncio.create_task(pump())
    try:
        waiting = asyncio.create_task(subscribed.wait())
        await asyncio.wait({waiting, reader}, return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            waiting.cancel()
            reader.result()  # the channel failed for good: raise why
        ds = await ups.retrieve(uid)
        state = render.text(ds, 0x00741000)
        say(f"state {state} (inputs {render.text(ds, 0x00404041)})")
        seen: set[bytes] = set()
        while state not in FINAL:
            event = await events.get()
            if event.uid != uid or event.key in seen:
                continue
            seen.add(event.key)
            say(describe(event))
            if event.type == ev.STATE_REPORT and event.state in FINAL:
                ds = await ups.retrieve(uid)
                state = render.text(ds, 0x00741000)
        return state, ds
    finally:
        reader.cancel()
        await channel.close()
        try:
            await ups.unsubscribe(aet, uid)
        except Exception:  # a final workitem may already be gone; nothing to undo then
            pass
