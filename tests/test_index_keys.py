"""``indexes.index_keys`` (the commit's index set, computed at every change) gives the
same keys as the plain formulation it replaced, on any dataset shape."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ups_server import indexes


def _reference(prefix: str, ds: Any) -> set[str]:
    """index_keys as first written: every path through ``_values`` and ``_strings``."""
    keys = {f"{prefix}ix:all"}
    found: dict[str, set[str]] = {}
    for name, k in indexes._TOP:
        vals = indexes._strings(indexes._values(ds, k))
        if vals:
            found[name] = vals
    for name, seq, k in indexes._NESTED:
        vals = set()
        for item in indexes._values(ds, seq):
            if isinstance(item, dict):
                vals |= indexes._strings(indexes._values(item, k))
        if vals:
            found[name] = vals
    for name, vals in found.items():
        keys.update(f"{prefix}ix:{name}:{v}" for v in vals)
    for s in found.get("state", ()):
        keys.update(f"{prefix}ix:sw:{s}|{code}" for code in found.get("wcode", ()))
    return keys


SCALARS = st.one_of(st.sampled_from(["SCHEDULED", "IN PROGRESS", "AIW-MSL", "", " ", "A ", "x" * 128, "y" * 129, "  z"]),
                    st.none(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=5))
STRINGS = st.sampled_from(["SCHEDULED", "IN PROGRESS", "AIW-MSL", "AIW-PE", "", " ", "A ", "x" * 128, "y" * 129])
VALUES = st.one_of(st.lists(STRINGS, min_size=1, max_size=3), st.lists(SCALARS, max_size=3), SCALARS,
                   st.dictionaries(st.text(max_size=2), SCALARS, max_size=1))
WELL_FORMED = st.fixed_dictionaries({"vr": st.just("CS"), "Value": VALUES})
ELEMENTS = st.one_of(WELL_FORMED, WELL_FORMED, WELL_FORMED, st.just({"vr": "CS"}), SCALARS, st.lists(SCALARS, max_size=2))
ITEMS = st.one_of(st.dictionaries(st.sampled_from(["00080100", "00080050", "00080102"]), ELEMENTS, max_size=2), SCALARS)
SEQUENCE = st.fixed_dictionaries({"vr": st.just("SQ"), "Value": st.lists(ITEMS, max_size=3)})
SEQUENCES = st.one_of(SEQUENCE, SEQUENCE, ELEMENTS)
TOP_KEYS = [f"{p[0]:08X}" for p in indexes.INDEXED_PATHS.values() if len(p) == 1]
SEQ_KEYS = [f"{p[0]:08X}" for p in indexes.INDEXED_PATHS.values() if len(p) == 2]
DATASETS = st.one_of(
    st.dictionaries(st.sampled_from(TOP_KEYS), ELEMENTS, min_size=1, max_size=7).flatmap(
        lambda top: st.dictionaries(st.sampled_from(SEQ_KEYS), SEQUENCES, max_size=3).map(lambda seqs: {**top, **seqs})),
    SCALARS, st.just([]))


@settings(max_examples=3000, deadline=None)
@given(DATASETS)
def test_index_keys_as_the_reference_computes_them(ds: Any) -> None:
    assert indexes.index_keys("p:", ds) == _reference("p:", ds)


def test_index_keys_of_a_typical_workitem() -> None:
    from tests.factory import workitem
    ds = {**workitem(), "00741000": {"vr": "CS", "Value": ["SCHEDULED"]}}
    keys = indexes.index_keys("aiw:", ds)
    assert keys == _reference("aiw:", ds) and "aiw:ix:sw:SCHEDULED|AIW-MSL" in keys and len(keys) > 10
