"""highdicom's "is this attribute in that IOD?" answered once per question, not per call.

``highdicom._standard_utils.is_attribute_in_iod`` walks every module of the IOD and every
attribute of each module for each call (~0.4 ms). highdicom asks it, through
``is_multiframe_image``, once per source image when it builds a SEG, once per image when
it computes a series' volume positions, and once per evidence instance when it builds an
SR: ~320 calls, ~0.13 s of a 160-slice job's encode stage (~40% of it). The answer
depends only on the arguments and the standard's tables, which never change in a
process, so :func:`install` memoises it.

A well-kept library is preferred to our own code, so this is a shim around highdicom's
function rather than a copy of it: same function, same answers (a test compares them over
every SOP class highdicom knows). It touches a private module, so it checks what it finds
and does nothing when highdicom has changed: jobs are then only slower. Calls with
``exclude_path_elements`` (a list, not hashable) are passed through unmemoised.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import structlog

log = structlog.get_logger("aiw.performer")

_MARK = "_aiw_memoised"


def install() -> bool:
    """Memoise highdicom's IOD attribute lookup; True when it is (now or already) in place."""
    try:
        from highdicom import _standard_utils as standard
    except ImportError:  # highdicom reorganised: nothing to speed up
        return False
    original: Callable[..., bool] | None = getattr(standard, "is_attribute_in_iod", None)
    if original is None or not callable(original):
        log.info("highdicom has no is_attribute_in_iod; IOD lookups stay unmemoised")
        return False
    if getattr(original, _MARK, False):
        return True

    @functools.lru_cache(maxsize=4096)
    def answer(attribute: str, sop_class_uid: str) -> bool:
        return original(attribute, sop_class_uid)

    @functools.wraps(original)
    def memoised(attribute: str, sop_class_uid: str, exclude_path_elements: Sequence[str] | None = None,
                 *args: Any, **kwargs: Any) -> bool:
        if exclude_path_elements is not None or args or kwargs:
            return original(attribute, sop_class_uid, exclude_path_elements, *args, **kwargs)
        return answer(str(attribute), str(sop_class_uid))

    setattr(memoised, _MARK, True)
    memoised.unmemoised = original  # type: ignore[attr-defined]
    standard.is_attribute_in_iod = memoised
    return True
