"""Well-known UIDs of the UPS service class and UID generation."""

from __future__ import annotations

import os

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"
WELL_KNOWN_SUBSCRIPTION_UIDS = frozenset({GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION})


# A random (version 4, RFC 4122 variant) UUID as one integer, as ``uuid.uuid4().int`` is,
# without building the UUID object (half the time; every create without a UID makes one)
_UUID4_KEEP = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uid() -> str:
    """A UUID-derived UID (PS3.5 B.2): unique without a registered root."""
    return f"2.25.{int.from_bytes(os.urandom(16), 'big') & _UUID4_KEEP | _UUID4_SET}"
