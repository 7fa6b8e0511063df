"""DICOM JSON (PS3.18 F.2) as plain dicts, the form workitems keep on the hot path.

pydicom Dataset round trips cost ~40x more on large workitems, so workitems stay dicts of
``{"GGGGEEEE": {"vr": .., "Value": [..]}}``; pydicom's data dictionary answers keyword, tag
and VR look-ups.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from pydicom import datadict

from upsrs.errors import DatasetError, Problem, format_tag

Dataset = dict[str, dict[str, Any]]


_KEY_CACHE: dict[int, str] = {}


def key(tag: int) -> str:
    """The DICOM JSON property name of a tag (cached: the hot path asks for the same few)."""
    k = _KEY_CACHE.get(tag)
    if k is None:
        k = f"{tag:08X}"
        if len(_KEY_CACHE) < 65536:
            _KEY_CACHE[tag] = k
    return k


@lru_cache(maxsize=4096)
def parse_attribute(name: str) -> int:
    """Tag of an attribute named by keyword or 8 hex digits (as in query parameters)."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    tag = datadict.tag_for_keyword(name)
    if tag is None:
        raise KeyError(name)
    return int(tag)


@lru_cache(maxsize=4096)
def keyword(tag: int) -> str:
    return datadict.keyword_for_tag(tag) or format_tag(tag)


@lru_cache(maxsize=4096)
def dictionary_vrs(tag: int) -> tuple[str, ...]:
    """The VR(s) the data dictionary allows for a tag; empty for unknown/private tags."""
    try:
        vr = datadict.dictionary_VR(tag)
    except KeyError:
        return ()
    return tuple(v.strip() for v in vr.split(" or "))


def element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element; with no values, the empty (type 2) form ``{"vr": vr}``."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def values(ds: Dataset, tag: int) -> list[Any]:
    """Values of an element; [] when absent, empty, or not a well-formed element (request
    datasets are read before they are validated, so any JSON may be here)."""
    el = ds.get(key(tag)) if isinstance(ds, dict) else None
    if not isinstance(el, dict):
        return []
    v = el.get("Value")
    return v if isinstance(v, list) else []


def first(ds: Dataset, tag: int, default: Any = None) -> Any:
    v = values(ds, tag)
    return v[0] if v else default


def items(ds: Dataset, tag: int) -> list[Dataset]:
    """Items of a sequence element (empty when absent or empty)."""
    return [i for i in values(ds, tag) if isinstance(i, dict)]


def has_value(el: dict[str, Any] | None) -> bool:
    if not isinstance(el, dict):
        return el not in (None, "", [], {})  # malformed but not empty: a value of some kind
    v = el.get("Value")
    if type(v) is list and v:
        first = v[0]
        if first is not None and first != "":
            return True
        return any(x is not None and x != "" for x in v)
    return "InlineBinary" in el or "BulkDataURI" in el


def set_value(ds: Dataset, tag: int, vr: str, *vals: Any) -> None:
    ds[key(tag)] = element(vr, *vals)


def sorted_dataset(ds: Dataset) -> Dataset:
    """Property names ascending, as F.2 requires (recursively into sequence items)."""
    out: Dataset = {}
    for k in sorted(ds):
        el = ds[k]
        if el.get("vr") == "SQ" and isinstance(el.get("Value"), list):
            el = {**el, "Value": [sorted_dataset(i) if isinstance(i, dict) else i for i in el["Value"]]}
        out[k] = el
    return out


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def parse_body(body: bytes) -> Dataset:
    """One dataset from a request body: a JSON object, or an array holding exactly one
    (dcm4chee and its examples send arrays; Microsoft required one; the standard shows an
    object). Anything else is a precise 400."""
    if not body.strip():
        raise DatasetError([Problem("", "the request has no dataset (empty body)", "0120")])
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DatasetError([Problem("", f"the body is not valid JSON: {exc}")]) from None
    if isinstance(doc, list):
        if len(doc) != 1:
            raise DatasetError([Problem("", f"expected one dataset, the array holds {len(doc)}")])
        doc = doc[0]
    if not isinstance(doc, dict):
        raise DatasetError([Problem("", "the body is not a DICOM JSON dataset (object)")])
    return doc
