"""An async UPS-RS client (httpx) for every workitem transaction.

Results are typed; refusals raise ``UpsError`` subclasses that carry the HTTP status and
the Warning text, so a performer can tell "lost the claim race" (400/409 with a
Transaction-UID or state text) from "no such workitem" (404) without parsing headers.
Bodies are sent as ``application/dicom+json`` objects; responses are accepted as an
object or an array of one (both occur in the field, spec digest sec. 7 row 14).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Mapping, Sequence
from urllib.parse import quote

import httpx
import orjson

from upsrs import dicomjson as dj
from upsrs.http import HttpHolder
from upsrs.uids import FILTERED_GLOBAL_SUBSCRIPTION, GLOBAL_SUBSCRIPTION, new_uid

DICOM_JSON = "application/dicom+json"
_WARNING = re.compile(r'^\s*\d{3}\s+\S+:\s?(.*)$')
_REMAINING = re.compile(r"There are (\d+) additional results")

Dataset = dict[str, Any]


def warning_texts(response: httpx.Response) -> list[str]:
    """The texts of ``Warning: 299 <service>: <text>`` headers."""
    out = []
    for value in response.headers.get_list("warning"):
        m = _WARNING.match(value)
        out.append(m.group(1).strip().strip('"') if m else value)
    return out


class UpsError(Exception):
    """A refused UPS-RS request."""

    def __init__(self, response: httpx.Response, transaction: str):
        self.status = response.status_code
        self.warnings = warning_texts(response)
        self.body = response.text
        self.transaction = transaction
        super().__init__(f"{transaction}: HTTP {self.status}: {self.warning or self.body.strip()[:200]}")

    @property
    def warning(self) -> str:
        return self.warnings[0] if self.warnings else ""


class BadRequest(UpsError):
    """400: invalid dataset or query, or a Transaction UID missing/incorrect."""


class WorkitemNotFound(UpsError):
    """404: no such workitem."""


class WorkitemGone(UpsError):
    """410: the workitem existed and was deleted after its retention period."""


class Conflict(UpsError):
    """409: duplicate UID, or the request is inconsistent with the workitem's state."""


_BY_STATUS: dict[int, type[UpsError]] = {400: BadRequest, 404: WorkitemNotFound, 409: Conflict, 410: WorkitemGone}


@dataclass
class Created:
    uid: str
    location: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class Done:
    status: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class Page:
    items: list[Dataset]
    remaining: int
    warnings: list[str] = field(default_factory=list)


def _one(payload: Any) -> Dataset:
    if isinstance(payload, list):
        if len(payload) != 1:
            raise ValueError(f"expected one dataset, got {len(payload)}")
        payload = payload[0]
    if not isinstance(payload, dict):
        raise ValueError("expected a DICOM JSON dataset")
    return payload


def _state_dataset(state: str, tuid: str | None) -> Dataset:
    ds: Dataset = {"00741000": dj.element("CS", state)}
    if tuid:
        ds["00081195"] = dj.element("UI", tuid)
    return ds


class UpsClient(HttpHolder):
    """``async with UpsClient("http://host:8080") as ups: ...`` — the base URL is the
    service root (the URL before ``/workitems``)."""

    def __init__(self, base_url: str, *, http: httpx.AsyncClient | None = None, timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None):
        super().__init__(http=http, timeout=timeout, headers=headers)
        self.base_url = base_url.rstrip("/")

    def workitem_url(self, uid: str) -> str:
        return f"{self.base_url}/workitems/{uid}"

    async def _send(self, transaction: str, method: str, url: str, *, body: Dataset | None = None,
                    params: Any = None, ok: Iterable[int]) -> httpx.Response:
        headers = {"accept": DICOM_JSON}
        content = None
        if body is not None:
            content = orjson.dumps(body)
            headers["content-type"] = DICOM_JSON
        resp = await self.http.request(method, url, content=content, params=params, headers=headers)
        if resp.status_code not in set(ok):
            raise _BY_STATUS.get(resp.status_code, UpsError)(resp, transaction)
        return resp

    # RAD-80
    async def create(self, workitem: Dataset, uid: str | None = None) -> Created:
        params = {"workitem": uid} if uid else None
        resp = await self._send("create", "POST", f"{self.base_url}/workitems", body=workitem, params=params, ok=(201,))
        location = resp.headers.get("location") or resp.headers.get("content-location") or ""
        return Created(uid or location.rstrip("/").rsplit("/", 1)[-1], location, warning_texts(resp))

    # RAD-83
    async def retrieve(self, uid: str) -> Dataset:
        resp = await self._send("retrieve", "GET", self.workitem_url(uid), ok=(200,))
        return _one(resp.json())

    # RAD-84
    async def update(self, uid: str, changes: Dataset, tuid: str | None = None) -> Done:
        params = {"transaction-uid": tuid} if tuid else None
        resp = await self._send("update", "POST", self.workitem_url(uid), body=changes, params=params, ok=(200,))
        return Done(resp.status_code, warning_texts(resp))

    # RAD-82 / RAD-85
    async def change_state(self, uid: str, state: str, tuid: str | None) -> Done:
        resp = await self._send("change-state", "PUT", f"{self.workitem_url(uid)}/state",
                                body=_state_dataset(state, tuid), ok=(200,))
        return Done(resp.status_code, warning_texts(resp))

    async def claim(self, uid: str, tuid: str | None = None) -> str:
        """Claim a SCHEDULED workitem with a new Transaction UID; returns that UID."""
        tuid = tuid or new_uid()
        await self.change_state(uid, "IN PROGRESS", tuid)
        return tuid

    async def complete(self, uid: str, tuid: str) -> Done:
        return await self.change_state(uid, "COMPLETED", tuid)

    async def cancel(self, uid: str, tuid: str) -> Done:
        return await self.change_state(uid, "CANCELED", tuid)

    # RAD-88
    async def request_cancellation(self, uid: str, *, reason: str | None = None,
                                   reason_code: tuple[str, str, str] | None = None, contact_uri: str | None = None,
                                   contact_name: str | None = None, requester: str | None = None) -> Done:
        body: Dataset = {}
        if reason:
            body["00741238"] = dj.element("LT", reason)
        if reason_code:
            value, scheme, meaning = reason_code
            body["0074100E"] = dj.element("SQ", {"00080100": dj.element("SH", value), "00080102": dj.element("SH", scheme),
                                                  "00080104": dj.element("LO", meaning)})
        if contact_uri:
            body["0074100A"] = dj.element("UR", contact_uri)
        if contact_name:
            body["0074100C"] = dj.element("LO", contact_name)
        params = {"requester": requester} if requester else None
        resp = await self._send("cancelrequest", "POST", f"{self.workitem_url(uid)}/cancelrequest",
                                body=body or None, params=params, ok=(202,))
        return Done(resp.status_code, warning_texts(resp))

    # RAD-86
    async def subscribe(self, aet: str, target: str | None = None, *, deletion_lock: bool = False,
                        filter: Mapping[str, str] | Sequence[tuple[str, str]] | None = None) -> str:
        """Subscribe ``aet`` to a workitem, or (target None) to the worklist — filtered when
        ``filter`` is given. Returns the event channel's WebSocket URL."""
        params: list[tuple[str, str]] = [("deletionlock", "true" if deletion_lock else "false")]
        if target is None:
            target = FILTERED_GLOBAL_SUBSCRIPTION if filter else GLOBAL_SUBSCRIPTION
        url = f"{self.workitem_url(target)}/subscribers/{aet}"
        query = "&".join(f"{k}={v}" for k, v in params)
        if filter:
            items = filter.items() if isinstance(filter, Mapping) else filter
            query += "&filter=" + ",".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in items)
        resp = await self._send("subscribe", "POST", f"{url}?{query}", ok=(201,))
        return resp.headers.get("content-location") or resp.headers.get("location") or ""

    async def unsubscribe(self, aet: str, target: str | None = None) -> Done:
        resp = await self._send("unsubscribe", "DELETE",
                                f"{self.workitem_url(target or GLOBAL_SUBSCRIPTION)}/subscribers/{aet}", ok=(200,))
        return Done(resp.status_code, warning_texts(resp))

    async def suspend(self, aet: str, filtered: bool = False) -> Done:
        target = FILTERED_GLOBAL_SUBSCRIPTION if filtered else GLOBAL_SUBSCRIPTION
        resp = await self._send("suspend", "POST", f"{self.workitem_url(target)}/subscribers/{aet}/suspend", ok=(200,))
        return Done(resp.status_code, warning_texts(resp))

    def channel_url(self, aet: str) -> str:
        """The event channel URL aiw serves (other servers: use what subscribe returns)."""
        base = self.base_url
        return ("wss" + base[5:] if base.startswith("https") else "ws" + base[4:]) + f"/subscribers/{aet}"

    # RAD-81
    async def search(self, match: Mapping[str, str] | Sequence[tuple[str, str]] = (), *,
                     includefield: Sequence[str] = (), limit: int | None = None, offset: int = 0,
                     fuzzy: bool | None = None) -> Page:
        params: list[tuple[str, str]] = list(match.items()) if isinstance(match, Mapping) else list(match)
        if includefield:
            params.append(("includefield", ",".join(includefield)))
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset:
            params.append(("offset", str(offset)))
        if fuzzy is not None:
            params.append(("fuzzymatching", "true" if fuzzy else "false"))
        resp = await self._send("search", "GET", f"{self.base_url}/workitems", params=params, ok=(200, 204))
        items = resp.json() if resp.status_code == 200 and resp.content.strip() else []
        warnings = warning_texts(resp)
        remaining = 0
        for w in warnings:
            m = _REMAINING.search(w)
            if m:
                remaining = int(m.group(1))
        return Page(items, remaining, warnings)

    async def search_all(self, match: Mapping[str, str] | Sequence[tuple[str, str]] = (), *,
                         includefield: Sequence[str] = (), page_size: int = 100) -> AsyncIterator[Dataset]:
        """Every match, page by page (offset/limit), in the server's stable order."""
        offset = 0
        while True:
            page = await self.search(match, includefield=includefield, limit=page_size, offset=offset)
            for item in page.items:
                yield item
            offset += len(page.items)
            if not page.remaining or not page.items:
                return
