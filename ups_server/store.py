"""Workitems in Redis: one hash per workitem, sorted-set indexes, and the event stream.

Every change goes through ``commit`` (``lua/commit.lua``): a compare-and-set on the
workitem's version that writes the workitem, its indexes and its events in one atomic
step. Callers re-read and re-decide when the version moved (``VersionConflict``), which is
how two concurrent claimers end with exactly one winner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ups_server.redisconn import Direct

EXISTS, MISSING, CONFLICT, STALE = -1, -2, -3, -4


class StaleSubscriptions(Exception):
    """The filtered subscriptions changed since they were read; read them again."""


class VersionConflict(Exception):
    """The workitem changed between read and commit; read it again."""


class AlreadyExists(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass
class Record:
    uid: str
    doc: bytes
    state: str
    tuid: str
    version: str
    seq: int
    index: list[str]

    def dataset(self) -> dict[str, Any]:
        return orjson.loads(self.doc)


@dataclass(frozen=True)
class Event:
    type: int
    body: bytes  # DICOM JSON of the event information (no command attributes)


def _pairs(res: list[Any], start: int) -> list[tuple[str, bytes | None]]:
    """(uid, value) pairs of a search script's reply from ``res[start]`` on."""
    return [(res[i].decode(), res[i + 1] or None) for i in range(start, len(res), 2)]


def _array(values: list[bytes]) -> bytes:
    """Stored JSON values as one JSON array (b"" for none: the reply is a 204)."""
    return b"[" + b",".join(values) + b"]" if values else b""


def _script(name: str) -> str:
    return resources.files("ups_server.lua").joinpath(name).read_text("utf-8")


class WorkitemStore:
    def __init__(self, redis: Redis, prefix: str = "aiw:", events_maxlen: int = 1_000_000):
        self.redis = redis
        self.direct = Direct(redis)  # the per-request commands, without execute_command's overhead
        self.prefix = prefix
        self.events_maxlen = events_maxlen
        self._commit = redis.register_script(_script("commit.lua"))
        self._search = redis.register_script(_script("search.lua"))
        self._purge = redis.register_script(_script("purge.lua"))
        self._hget_many = redis.register_script(_script("hget_many.lua"))
        p = prefix
        self.k_seq, self.k_events, self.k_gone = f"{p}seq", f"{p}events", f"{p}gone"
        self.k_final, self.k_start, self.k_all = f"{p}final", f"{p}start", f"{p}ix:all"
        self.k_active = f"{p}active"  # IN PROGRESS workitems scored by last commit time
        self.k_scratch, self.k_scratch_range = f"{p}tmp:search", f"{p}tmp:search:r"
        # SORT_RO's GET pattern puts the UID at the first "*": a prefix holding one cannot use it
        self._sorted_reads = "*" not in p

    def wi_key(self, uid: str) -> str:
        return f"{self.prefix}wi:{uid}"

    async def get(self, uid: str) -> Record | None:
        doc, state, tuid, ver, seq, ix = await self.direct("HMGET", self.wi_key(uid), "doc", "state", "tuid", "ver", "seq", "ix")
        if doc is None:
            return None
        return Record(uid, doc, state.decode(), (tuid or b"").decode(), ver.decode(), int(seq),
                      orjson.loads(ix) if ix else [])

    async def get_doc(self, uid: str) -> bytes | None:
        return await self.direct("HGET", self.wi_key(uid), "doc")

    async def get_docs(self, uids: Sequence[str], field: str = "doc") -> list[bytes | None]:
        """``field`` (the dataset, or ``proj`` its default search projection) of many
        workitems in one round trip."""
        if not uids:
            return []
        return [v if v else None for v in await self._hget_many(keys=[], args=[self.prefix, field, *uids])]

    async def get_seqs(self, uids: Sequence[str]) -> list[int | None]:
        pipe = self.redis.pipeline(transaction=False)
        for uid in uids:
            pipe.zscore(self.k_all, uid)
        return [None if s is None else int(s) for s in await pipe.execute()]

    async def was_purged(self, uid: str) -> bool:
        return await self.redis.zscore(self.k_gone, uid) is not None

    async def commit(self, uid: str, expected: Record | None, doc: bytes, proj: bytes, state: str, tuid: str,
                     index: set[str], start: float | None, final_at: float | None,
                     events: Sequence[Event], subscribers: dict[str, str] | None = None,
                     subver: bytes | None | str = "*") -> tuple[int, list[str]]:
        """Write one change atomically. ``expected`` None = create. Returns (version, event ids)."""
        old = set(expected.index) if expected else set()
        add = sorted(index - old)
        rem = sorted(old - index)
        keys = [self.wi_key(uid), self.k_seq, self.k_events, self.k_gone, self.k_final, self.k_start, *add, *rem]
        args: list[Any] = [uid, expected.version if expected else "", doc, proj, state, tuid, len(add), len(rem),
                           "" if start is None else repr(start), "" if final_at is None else repr(final_at),
                           self.events_maxlen, orjson.dumps(sorted(index)), len(events)]
        for ev in events:
            args += [ev.type, ev.body]
        args += [self.prefix, subver if isinstance(subver, str) else (subver or b"").decode(), len(subscribers or {})]
        for aet, code in (subscribers or {}).items():
            args += [aet, code]
        args.append(repr(time.time()))
        res = await self.direct.script(self._commit, keys, args)
        code = int(res[0])
        if code == EXISTS:
            raise AlreadyExists(uid)
        if code == MISSING:
            raise NotFound(uid)
        if code == CONFLICT:
            raise VersionConflict(uid)
        if code == STALE:
            raise StaleSubscriptions(uid)
        return code, [r.decode() if isinstance(r, bytes) else str(r) for r in res[2:]]

    async def append_events(self, entries: Sequence[tuple[str, int, int, bytes, str]]) -> list[str]:
        """Events that change no workitem: (uid, seq, type, body, to) — initial State
        Reports for one subscriber (``to`` = its AE) and SCP Status Changes (``to`` = *)."""
        pipe = self.redis.pipeline(transaction=True)
        for uid, seq, etype, body, to in entries:
            pipe.xadd(self.k_events, {"uid": uid, "seq": seq, "type": etype, "body": body, "to": to},
                      maxlen=self.events_maxlen, approximate=True)
        return [i.decode() for i in await pipe.execute()]

    async def all_with_seq(self) -> list[tuple[str, int]]:
        return [(u.decode(), int(s)) for u, s in await self.redis.zrange(self.k_all, 0, -1, withscores=True)]

    async def candidates(self, index_keys: Sequence[str], start_range: tuple[float | None, float | None] | None,
                         offset: int, count: int) -> tuple[int, list[str]]:
        """(total, uids[offset:offset+count]) of the workitems in every index (and the
        start-time range), in creation order; count -1 = all."""
        total, page = await self.page(index_keys, start_range, offset, count, "")
        return total, [u for u, _ in page]

    async def page(self, index_keys: Sequence[str], start_range: tuple[float | None, float | None] | None,
                   offset: int, count: int, field: str) -> tuple[int, list[tuple[str, bytes | None]]]:
        """Like ``candidates``, with ``field`` of each workitem on the page, in one round trip."""
        res = await self._run_search(index_keys, start_range, offset, count, field, False)
        if not field:
            return int(res[0]), [(u.decode(), None) for u in res[1:]]
        return int(res[0]), _pairs(res, 1)

    async def page_array(self, index_keys: Sequence[str], start_range: tuple[float | None, float | None] | None,
                         offset: int, count: int, field: str) -> tuple[int, int, bytes | None, list[tuple[str, bytes | None]]]:
        """``page`` for a reply that is the page's values as they are stored: (total, n,
        ``[v1,...,vn]``, []) — Redis sends the values alone, without their UIDs, and they are
        joined as they arrive (b"" for an empty page). When a workitem on the page lacks
        ``field`` (stored before projections were kept): (total, n, None, the page as
        ``page`` gives it), for the caller to make the missing values.

        When one sorted set answers (no range, at most one index: a performer's pull of
        SCHEDULED workitems of its code), the page is read by ``SORT_RO key BY nosort LIMIT
        ... GET {prefix}wi:*->field`` (the set's own order) beside its ``ZCARD``, in one
        MULTI: Redis reads the hash fields natively. Through the search script every value
        crosses Lua's string bridge twice, ~6 µs per 3 KB projection: a page of 50 cost
        Redis ~320 µs of CPU, with SORT_RO ~70 µs."""
        if start_range is None and len(index_keys) <= 1 and count > 0 and field and self._sorted_reads:
            key = index_keys[0] if index_keys else self.k_all
            try:
                *_, (total, values) = await self.direct.pipeline(
                    ("MULTI",), ("ZCARD", key),
                    ("SORT_RO", key, "BY", "nosort", "LIMIT", offset, count, "GET", f"{self.prefix}wi:*->{field}"),
                    ("EXEC",))
            except ResponseError:  # a Redis before 7.0: no SORT_RO
                self._sorted_reads = False
            else:
                if None not in values:
                    return total, len(values), _array(values), []
        res = await self._run_search(index_keys, start_range, offset, count, field, True)
        total, n = int(res[0]), int(res[1])
        if n >= 0:
            return total, n, _array(res[2:]), []
        page = _pairs(res, 2)
        return total, len(page), None, page

    async def _run_search(self, index_keys: Sequence[str], start_range: tuple[float | None, float | None] | None,
                          offset: int, count: int, field: str, join: bool) -> Any:
        # The scratch keys live only inside one run of the (atomic) script, which deletes
        # them: one fixed name per prefix serves every search.
        low = high = ""
        if start_range is not None:
            low = "" if start_range[0] is None else repr(start_range[0])
            high = "" if start_range[1] is None else repr(start_range[1])
        return await self.direct.script(self._search, [self.k_scratch, self.k_scratch_range, self.k_start, self.k_all,
                                                       *index_keys],
                                        [low, high, offset, count, field, self.prefix, "1" if join else ""])

    async def inactive_since(self, before: float, count: int = 100) -> list[str]:
        """IN PROGRESS workitems with no change since ``before`` (epoch seconds)."""
        return [u.decode() for u in await self.redis.zrangebyscore(self.k_active, "-inf", f"({before!r}",
                                                                      start=0, num=count)]

    async def last_activity(self, uid: str) -> float | None:
        return await self.redis.zscore(self.k_active, uid)

    async def purge(self, retention: float, gone: float, batch: int = 500) -> list[str]:
        now = time.time()
        res = await self._purge(keys=[self.k_final, self.k_gone, self.k_start, f"{self.prefix}gsub"],
                                args=[repr(now - retention), repr(now), self.prefix, batch, repr(now - gone)])
        return [u.decode() for u in res]
