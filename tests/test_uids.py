"""``upsrs.uids.new_uid``: UUID-derived UIDs (PS3.5 B.2) from a random version-4 UUID."""

from __future__ import annotations

import uuid

from upsrs import vr
from upsrs.uids import new_uid


def test_new_uids_are_valid_distinct_version_4_uuids() -> None:
    uids = [new_uid() for _ in range(20_000)]
    assert len(set(uids)) == len(uids)
    for u in uids:
        assert u.startswith("2.25.") and len(u) <= 64 and vr.check_value("UI", u) is None, u
        as_uuid = uuid.UUID(int=int(u[5:]))
        assert as_uuid.version == 4 and as_uuid.variant == uuid.RFC_4122, u
    # the 122 random bits vary: each of them is set in some UID and clear in another
    ints = [int(u[5:]) for u in uids]
    random_bits = ~(0xF000 << 64) & ~(0xC000 << 48) & ((1 << 128) - 1)
    assert _or(ints) & random_bits == random_bits
    assert _and(ints) & random_bits == 0


def _or(xs: list[int]) -> int:
    out = 0
    for x in xs:
        out |= x
    return out


def _and(xs: list[int]) -> int:
    out = (1 << 128) - 1
    for x in xs:
        out &= x
    return out
