"""A thin UPS-RS user agent over httpx, written from PS3.18 only (spec §1).

Raw methods (``create``, ``update``, ``change_state`` …) return the ``httpx.Response`` so
tests can assert on exactly what a client sees. The ``*_ok`` helpers and the workflow
helpers (``claim``, ``complete``, ``cancel``) assert success, because a test that needs a
workitem in some state must stop at once when it cannot get there.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pytest

from . import expect, tags
from .dicomjson import Dataset, first, new_uid
from .workitem import cancellation_reason, new_workitem, performed_procedure, state_change

DICOM_JSON = "application/dicom+json"

# Query forms for the Create workitem UID (spec §1.1 and §7 #1).
CREATE_UID_FORMS = ("workitem", "AffectedSOPInstanceUID", "bare", "body", "none")
# Query/dataset forms for the Update Transaction UID (spec §1.1 and §7 #3).
UPDATE_TUID_FORMS = ("transaction-uid", "transaction", "bare", "dataset")


def encode(value: str) -> str:
    """Percent-encode a query value, keeping the characters that carry matching semantics."""
    return quote(value, safe="*,-.^:")


class Ups:
    """UPS-RS client bound to one service root (``{base}/workitems`` is the resource)."""

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base = base_url.rstrip("/")

    # --- URLs and bodies -------------------------------------------------------------------
    def url(self, path: str = "") -> str:
        """Absolute URL of ``/workitems{path}`` under the service root."""
        return f"{self.base}/workitems{path}"

    @staticmethod
    def body(ds: Dataset | list[Dataset]) -> bytes:
        """Serialise DICOM JSON (attribute keys sorted, as F.2 asks)."""
        return json.dumps(ds, sort_keys=True).encode()

    def send(
        self, method: str, url: str, content: bytes | None = None,
        content_type: str | None = DICOM_JSON, **headers: str,
    ) -> httpx.Response:
        """Send one request with the DICOM JSON Accept header and an optional body."""
        hdrs = {"Accept": DICOM_JSON, **headers}
        if content is not None and content_type:
            hdrs["Content-Type"] = content_type
        return self.client.request(method, url, content=content, headers=hdrs)

    # --- Create (§1.3.1) ---------------------------------------------------------------------
    def create(
        self, ds: Dataset | None = None, *, uid: str | None = None, form: str = "workitem",
        as_array: bool = True,
    ) -> httpx.Response:
        """POST a workitem, passing ``uid`` in the given ``form`` (one of CREATE_UID_FORMS)."""
        ds = dict(ds if ds is not None else new_workitem())
        url = self.url()
        if uid is not None:
            if form == "workitem":
                url += f"?workitem={uid}"
            elif form == "AffectedSOPInstanceUID":
                url += f"?AffectedSOPInstanceUID={uid}"
            elif form == "bare":
                url += f"?{uid}"
            elif form == "body":
                ds[tags.SOP_INSTANCE_UID] = {"vr": "UI", "Value": [uid]}
            elif form != "none":
                raise ValueError(f"unknown create form {form!r}")
        return self.send("POST", url, self.body([ds] if as_array else ds))

    def location_uid(self, response: httpx.Response) -> str:
        """The workitem UID named by the Location header of a 201 (last path segment)."""
        location = response.headers.get("location")
        assert location, f"201 Created must carry a Location header (2024c 11.4.3.2): {expect.describe(response)}"
        absolute = urljoin(str(response.request.url), location)
        path = httpx.URL(absolute).path.rstrip("/")
        assert "/workitems/" in path, f"Location {location!r} does not name a workitem"
        return path.rsplit("/", 1)[-1]

    def create_ok(self, ds: Dataset | None = None, **kwargs: Any) -> str:
        """Create a workitem with a fresh UID; assert 201 and return the UID."""
        uid = kwargs.pop("uid", None) or new_uid()
        response = self.create(ds, uid=uid, **kwargs)
        expect.status(response, 201)
        assert self.location_uid(response) == uid, f"Location names another workitem: {expect.describe(response)}"
        return uid

    # --- Retrieve (§1.3.2) -------------------------------------------------------------------
    def retrieve(self, uid: str, **headers: str) -> httpx.Response:
        """GET the workitem."""
        return self.send("GET", self.url(f"/{uid}"), **headers)

    def get(self, uid: str) -> Dataset:
        """Retrieve a workitem and assert 200 with a DICOM JSON dataset."""
        response = self.retrieve(uid)
        expect.status(response, 200)
        expect.dicom_json_media_type(response)
        return expect.single_dataset(response)

    def get_final(self, uid: str) -> Dataset:
        """Retrieve a COMPLETED/CANCELED workitem.

        Without a deletion lock an SCP may purge final workitems at once (PS3.4 CC.2.4.3,
        spec §4.4): then 404/410 is conformant and the check that needed the content is
        skipped, with that reason, rather than passed.
        """
        response = self.retrieve(uid)
        if response.status_code in (404, 410):
            pytest.skip("server purged the final-state workitem (allowed without a deletion lock, spec §4.4)")
        expect.status(response, 200)
        return expect.single_dataset(response)

    def state_of(self, uid: str) -> str | None:
        """The current Procedure Step State as Retrieve shows it."""
        return first(self.get(uid), tags.PROCEDURE_STEP_STATE)

    # --- Update (§1.3.3) ---------------------------------------------------------------------
    def update(
        self, uid: str, ds: Dataset, *, tuid: str | None = None, form: str = "transaction-uid",
        as_array: bool = True,
    ) -> httpx.Response:
        """POST an Update; ``tuid`` travels in the given ``form`` (one of UPDATE_TUID_FORMS)."""
        ds = dict(ds)
        url = self.url(f"/{uid}")
        if tuid is not None:
            if form == "transaction-uid":
                url += f"?transaction-uid={tuid}"
            elif form == "transaction":
                url += f"?transaction={tuid}"
            elif form == "bare":
                url += f"?{tuid}"
            elif form == "dataset":
                ds[tags.TRANSACTION_UID] = {"vr": "UI", "Value": [tuid]}
            else:
                raise ValueError(f"unknown update form {form!r}")
        return self.send("POST", url, self.body([ds] if as_array else ds))

    def update_ok(self, uid: str, ds: Dataset, tuid: str | None = None) -> httpx.Response:
        """Update and assert 200 (PS3.18 11.6.3.1)."""
        response = self.update(uid, ds, tuid=tuid)
        expect.status(response, 200)
        return response

    # --- Change State (§1.3.4) ---------------------------------------------------------------
    def change_state(self, uid: str, state: str, tuid: str | None) -> httpx.Response:
        """PUT the new Procedure Step State with the Transaction UID (omitted when None)."""
        return self.send("PUT", self.url(f"/{uid}/state"), self.body(state_change(state, tuid)))

    def claim(self, uid: str) -> str:
        """Claim (→ IN PROGRESS) with a fresh Transaction UID; assert 200 and return it."""
        tuid = new_uid()
        expect.status(self.change_state(uid, "IN PROGRESS", tuid), 200)
        return tuid

    def complete(self, uid: str, tuid: str) -> None:
        """Fill the Performed Procedure Sequence (§3.2), then → COMPLETED; assert success."""
        self.update_ok(uid, performed_procedure(), tuid)
        expect.status(self.change_state(uid, "COMPLETED", tuid), 200)

    def cancel(self, uid: str, tuid: str) -> None:
        """Give a discontinuation reason, then → CANCELED; assert success."""
        self.update_ok(uid, cancellation_reason(), tuid)
        expect.status(self.change_state(uid, "CANCELED", tuid), 200)

    # --- Request Cancellation (§1.3.5) -------------------------------------------------------
    def request_cancel(
        self, uid: str, ds: Dataset | None = None, *, suffix: str = "", query: str = "",
    ) -> httpx.Response:
        """POST …/cancelrequest[/{aet}][?query] with an optional dataset."""
        url = self.url(f"/{uid}/cancelrequest{suffix}") + (f"?{query}" if query else "")
        if ds is None:
            return self.send("POST", url, b"", content_type=None)
        return self.send("POST", url, self.body([ds]))

    # --- Search (§1.3.6, §5) -----------------------------------------------------------------
    def search(self, query: str) -> httpx.Response:
        """GET /workitems?{query}; ``query`` is sent as written (already encoded)."""
        return self.send("GET", self.url() + (f"?{query}" if query else ""))

    def search_uids(self, query: str) -> list[str]:
        """The SOP Instance UIDs of the results, in server order (no-match forms → [])."""
        results = expect.result_list(self.search(query))
        uids = [first(result, tags.SOP_INSTANCE_UID) for result in results]
        assert all(uids), "every Search result must carry SOP Instance UID (return key type 1)"
        return uids
