"""Task Manager settings: environment variables ``AIW_*``, the same names as the CLI flags."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIW_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    redis_url: str | None = Field(None, description="redis://host:port/db; none = embedded in-process store")
    key_prefix: str = Field("aiw:", description="prefix of every Redis key this server writes")
    path_prefix: str = Field("", description="service root path behind a proxy, e.g. /dicom-web")
    public_url: str | None = Field(None, description="service root URL as clients see it (Location, Warning)")
    max_body_bytes: int = Field(4 * 1024 * 1024, description="largest request body accepted (413 above)")
    default_worklist_label: str = Field("AIW", description="Worklist Label given to workitems created without one")
    retention_seconds: float = Field(7 * 24 * 3600, description="how long final workitems are kept (no locks)")
    gone_seconds: float = Field(30 * 24 * 3600, description="how long a purged UID still answers 410 Gone")
    purge_interval_seconds: float = Field(60.0, description="how often the retention purge runs")
    search_max_results: int = Field(1000, description="most results one search response returns")
    events_maxlen: int = Field(1_000_000, description="approximate length the event stream is trimmed to")
    default_requesting_ae: str = Field("UNKNOWN_AE", description="Requesting AE of a cancellation request that names none")
    heartbeat_interval: float = Field(10.0, description="seconds between WebSocket pings to each subscriber")
    heartbeat_timeout: float = Field(10.0, description="a subscriber whose pong is this late is disconnected")
    replay_max_events: int = Field(10_000, description="most events replayed to a reconnecting AE")
    replay_max_age_seconds: float = Field(24 * 3600, description="oldest event replayed to a reconnecting AE")
    connection_queue_max: int = Field(10_000, description="events queued for one slow connection before it is dropped")
    lease_seconds: float = Field(600.0, description="an IN PROGRESS workitem with no update for this long is canceled "
                                                   "and rescheduled (its performer died); 0 = never")
    lease_max_attempts: int = Field(3, description="most workitems in one chain of replacements")
    timezone_offset: str = Field("UTC", description="UTC offset for DT values that carry none, e.g. +0100")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable)")
    log_level: str = "info"
    log_file: str | None = Field(None, description="append log lines to this file instead of stdout")
