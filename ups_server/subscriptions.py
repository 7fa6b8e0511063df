"""Subscriptions of AEs to workitems: PS3.4 Table CC.2.3-2 over Redis.

Per-workitem states live in ``subs:{uid}`` (AE -> L lock, N no lock, X explicitly not
subscribed). Global subscriptions are held *lazily*: ``gsub`` maps an AE to its lock flag
and, once suspended, the creation sequence it was suspended at; it covers every workitem
created up to then (all of them while active) unless the workitem has an explicit record.
So a thousand global subscribers cost nothing per workitem. Filtered global subscriptions
(``fsub``) are materialised: a workitem that matches the filter when it is created (or when
the filter is subscribed) gets an explicit record, because the filter is matched then, not
at every later change.

Every change of the global records bumps ``subver`` so that each replica's cached copy is
refreshed before the next event it delivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import orjson
from redis.asyncio import Redis

from upsrs import dicomjson as dj
from upsrs import subscriptions as table
from upsrs.matching import Matcher, build_matchers

CODE = {table.LOCK: "L", table.NOLOCK: "N", table.NONE: "X"}
STATE = {"L": table.LOCK, "N": table.NOLOCK, "X": table.NONE}


@dataclass(frozen=True)
class GlobalSub:
    lock: bool
    suspended_seq: int | None = None  # None: active, covers future workitems too

    def covers(self, seq: int) -> bool:
        return self.suspended_seq is None or seq <= self.suspended_seq

    def encode(self) -> str:
        return f"{'L' if self.lock else 'N'}:{'-' if self.suspended_seq is None else self.suspended_seq}"

    @classmethod
    def decode(cls, raw: bytes | str) -> "GlobalSub":
        text = raw.decode() if isinstance(raw, bytes) else raw
        flag, _, seq = text.partition(":")
        return cls(flag == "L", None if seq in ("-", "") else int(seq))


@dataclass(frozen=True)
class FilteredSub:
    lock: bool
    filter: tuple[tuple[str, str], ...]
    matchers: tuple[Matcher, ...]

    def matches(self, ds: dj.Dataset) -> bool:
        return all(m.matches(ds) for m in self.matchers)


def effective(aet: str, explicit: dict[str, str], globals_: dict[str, GlobalSub], seq: int) -> str:
    """The AE's subscription state for one workitem (Table CC.2.3-2 states)."""
    rec = explicit.get(aet)
    if rec is not None:
        return STATE[rec]
    g = globals_.get(aet)
    if g is not None and g.covers(seq):
        return table.LOCK if g.lock else table.NOLOCK
    return table.NONE


class Subscriptions:
    def __init__(self, redis: Redis, prefix: str):
        self.redis = redis
        self.prefix = prefix
        self.k_gsub, self.k_fsub, self.k_ver = f"{prefix}gsub", f"{prefix}fsub", f"{prefix}subver"
        self._cache: tuple[bytes | None, dict[str, GlobalSub], dict[str, FilteredSub]] | None = None

    def k_subs(self, uid: str) -> str:
        return f"{self.prefix}subs:{uid}"

    def k_aesubs(self, aet: str) -> str:
        return f"{self.prefix}aesubs:{aet}"

    # ------------------------------------------------------------ reading
    async def global_records(self) -> tuple[dict[str, GlobalSub], dict[str, FilteredSub]]:
        ver = await self.redis.get(self.k_ver)
        if self._cache is not None and self._cache[0] == ver:
            return self._cache[1], self._cache[2]
        return await self._load()

    async def _load(self) -> tuple[dict[str, GlobalSub], dict[str, FilteredSub]]:
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(self.k_ver)
        pipe.hgetall(self.k_gsub)
        pipe.hgetall(self.k_fsub)
        ver, graw, fraw = await pipe.execute()
        globals_ = {k.decode(): GlobalSub.decode(v) for k, v in graw.items()}
        filtered = {}
        for k, v in fraw.items():
            rec = orjson.loads(v)
            pairs = tuple((a, b) for a, b in rec["filter"])
            filtered[k.decode()] = FilteredSub(rec["lock"], pairs, tuple(build_matchers(pairs)))
        self._cache = (ver, globals_, filtered)
        return globals_, filtered

    async def explicit(self, uid: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in (await self.redis.hgetall(self.k_subs(uid))).items()}

    async def explicit_many(self, uids: Iterable[str]) -> dict[str, dict[str, str]]:
        uids = list(dict.fromkeys(uids))
        pipe = self.redis.pipeline(transaction=False)
        for uid in uids:
            pipe.hgetall(self.k_subs(uid))
        res = await pipe.execute()
        return {u: {k.decode(): v.decode() for k, v in r.items()} for u, r in zip(uids, res)}

    async def state_of(self, aet: str, uid: str, seq: int) -> str:
        globals_, _ = await self.global_records()
        return effective(aet, await self.explicit(uid), globals_, seq)

    async def subscribers(self, uid: str, seq: int) -> dict[str, str]:
        """Every AE subscribed to the workitem, with its state (LOCK / NOLOCK)."""
        globals_, _ = await self.global_records()
        explicit = await self.explicit(uid)
        out = {aet: STATE[c] for aet, c in explicit.items() if c != "X"}
        for aet, g in globals_.items():
            if aet not in explicit and g.covers(seq):
                out[aet] = table.LOCK if g.lock else table.NOLOCK
        return out

    async def has_any(self, aet: str) -> bool:
        globals_, filtered = await self.global_records()
        return aet in globals_ or aet in filtered or bool(await self.redis.scard(self.k_aesubs(aet)))

    async def for_new_workitem(self, ds: dj.Dataset, refresh: bool = False) -> tuple[bytes | None, dict[str, str]]:
        """Explicit records a new workitem gets — the filtered subscribers it matches — and
        the subscription version they were read at. From the cache without a round trip;
        the create's commit checks the version and says if it moved (``refresh`` then)."""
        if refresh or self._cache is None:
            await self.global_records()
        assert self._cache is not None
        ver, _, filtered = self._cache
        return ver, {aet: ("L" if f.lock else "N") for aet, f in filtered.items() if f.matches(ds)}

    # ------------------------------------------------------------ writing
    async def _set_explicit(self, pairs: Iterable[tuple[str, str, str]]) -> None:
        """(aet, uid, code) records; code None-like 'D' deletes."""
        pipe = self.redis.pipeline(transaction=True)
        for aet, uid, code in pairs:
            if code == "D":
                pipe.hdel(self.k_subs(uid), aet)
                pipe.srem(self.k_aesubs(aet), uid)
            else:
                pipe.hset(self.k_subs(uid), aet, code)
                pipe.sadd(self.k_aesubs(aet), uid)
        await pipe.execute()

    async def subscribe_workitem(self, aet: str, uid: str, seq: int, lock: bool) -> table.Step:
        current = await self.state_of(aet, uid, seq)
        step = table.step("subscribe lock" if lock else "subscribe nolock", current)
        await self._set_explicit([(aet, uid, CODE[step.state])])
        return step

    async def unsubscribe_workitem(self, aet: str, uid: str, seq: int) -> table.Step:
        current = await self.state_of(aet, uid, seq)
        step = table.step("unsubscribe", current)
        globals_, _ = await self.global_records()
        g = globals_.get(aet)
        # explicit X only where a global subscription would otherwise still cover it
        await self._set_explicit([(aet, uid, "X" if g is not None and g.covers(seq) else "D")])
        return step

    async def apply_global(self, aet: str, event: str, existing: list[tuple[str, int]],
                           new_global: GlobalSub | None, filtered: FilteredSub | None = None,
                           only: set[str] | None = None) -> list[str]:
        """Apply a global-subscription event (Table CC.2.3-2) to the existing workitems
        [(uid, seq)], set the AE's global record, and return the UIDs that get an initial
        State Report. ``only``: the workitems the event concerns (a filter's matches)."""
        globals_, _ = await self.global_records()
        old = globals_.get(aet)
        explicit_uids = {u.decode() for u in await self.redis.smembers(self.k_aesubs(aet))}
        explicit = {u: r.get(aet) for u, r in (await self.explicit_many(explicit_uids)).items()}
        writes: list[tuple[str, str, str]] = []
        reports: list[str] = []

        def implied(g: GlobalSub | None, seq: int) -> str:
            if g is not None and g.covers(seq):
                return table.LOCK if g.lock else table.NOLOCK
            return table.NONE

        for uid, seq in existing:
            if only is not None and uid not in only:
                continue
            rec = explicit.get(uid)
            current = STATE[rec] if rec else implied(old, seq)
            step = table.step(event, current)
            if step.report:
                reports.append(uid)
            if filtered is not None:  # filtered subscriptions are always explicit
                if step.state != current:
                    writes.append((aet, uid, CODE[step.state]))
                continue
            # an explicit record only where the new global record does not imply the state
            want = None if step.state == implied(new_global, seq) else CODE[step.state]
            if want != rec:
                writes.append((aet, uid, want or "D"))
        if event == "global-unsubscribe":  # also workitems no longer listed (purged)
            writes = [(aet, u, "D") for u in explicit]
        for i in range(0, len(writes), 1000):
            await self._set_explicit(writes[i:i + 1000])
        pipe = self.redis.pipeline(transaction=True)
        if filtered is not None:
            pipe.hset(self.k_fsub, aet, orjson.dumps({"lock": filtered.lock, "filter": list(filtered.filter)}))
        elif new_global is not None:
            pipe.hset(self.k_gsub, aet, new_global.encode())
        else:
            pipe.hdel(self.k_gsub, aet)
        pipe.incr(self.k_ver)
        await pipe.execute()
        return reports

    async def remove_filtered(self, aet: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.k_fsub, aet)
        pipe.incr(self.k_ver)
        removed, _ = await pipe.execute()
        return bool(removed)

    async def global_record(self, aet: str) -> GlobalSub | None:
        return (await self.global_records())[0].get(aet)
