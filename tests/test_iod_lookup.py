"""performers.iod_lookup: highdicom's IOD attribute lookup, memoised, answers exactly as
highdicom's own function does, and is what highdicom's multi-frame check now calls."""

from __future__ import annotations

from typing import Callable

from highdicom import _standard_utils as standard

import performers.results  # noqa: F401 - installs the shim, as every encode does
from performers import iod_lookup

ATTRIBUTES = ("NumberOfFrames", "PixelData", "FloatPixelData", "ContentDate", "ContentTime", "SeriesNumber",
              "NoSuchAttribute")


def test_installed_once_and_idempotent() -> None:
    memoised = standard.is_attribute_in_iod
    assert getattr(memoised, "_aiw_memoised", False)
    assert iod_lookup.install() is True
    assert standard.is_attribute_in_iod is memoised  # not wrapped twice


def outcome(f: Callable[..., bool], *args: object) -> tuple[object, ...]:
    """What a call gives: its answer, or its error (highdicom's tables lack a few modules)."""
    try:
        return ("answer", f(*args))
    except KeyError as exc:
        return ("KeyError", str(exc))


def test_same_answers_as_highdicom_for_every_sop_class() -> None:
    memoised = standard.is_attribute_in_iod
    original = memoised.unmemoised
    sop_classes = standard.get_sop_class_iod_map()
    assert len(sop_classes) > 50
    for sop_class in sop_classes:
        for attribute in ATTRIBUTES:
            want = outcome(original, attribute, sop_class)
            assert outcome(memoised, attribute, sop_class) == want, (attribute, sop_class)
            assert outcome(memoised, attribute, sop_class) == want  # the memoised answer too
        excluded = ["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"]
        assert outcome(memoised, "PixelSpacing", sop_class, excluded) == outcome(original, "PixelSpacing", sop_class,
                                                                                 excluded)


def test_unknown_sop_class_still_raises_highdicoms_error() -> None:
    for _ in range(2):  # an error is never memoised into an answer
        try:
            standard.is_attribute_in_iod("NumberOfFrames", "1.2.3.4.5")
        except KeyError as exc:
            assert "1.2.3.4.5" in str(exc)
        else:
            raise AssertionError("an unknown SOP Class UID must raise KeyError")


def test_highdicoms_multiframe_check_goes_through_it() -> None:
    from pydicom import Dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage: single frame
    before = standard.is_attribute_in_iod.__wrapped__  # functools.wraps keeps the original
    assert before is standard.is_attribute_in_iod.unmemoised
    assert standard.is_multiframe_image(ds) is False
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR: multi-frame
    assert standard.is_multiframe_image(ds) is True
