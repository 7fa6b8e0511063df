"""Well-known UIDs of the UPS service class and UID generation."""

from __future__ import annotations

import uuid

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"
WELL_KNOWN_SUBSCRIPTION_UIDS = frozenset({GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION})


def new_uid() -> str:
    """A UUID-derived UID (PS3.5 B.2): unique without a registered root."""
    return f"2.25.{uuid.uuid4().int}"
