"""Watcher settings: ``AIW_WATCH_*`` environment variables, a TOML file, CLI flags.

Sites differ in what "late" means (a stroke triage budget is minutes, a research volumetry
budget is hours), which viewer opens results, and who may cancel work; all of that is
configuration, never code. Precedence: CLI flag > environment > TOML file > default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ALL_COLUMNS = ["state", "priority", "procedure", "patient", "accession", "modality", "performer",
               "progress", "age", "in_state"]


class WatchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIW_WATCH_", extra="ignore")

    server: str = Field("http://127.0.0.1:8080", description="Task Manager service root (before /workitems)")
    ae_title: str = Field("AIW_WATCHER", description="the watcher's AE title (subscriber)")
    host: str = Field("127.0.0.1", description="interface the web console listens on")
    port: int = Field(8090, description="web console port")
    columns: list[str] = Field(default_factory=lambda: list(ALL_COLUMNS), description="table columns, in order")
    time_budget_seconds: dict[str, float] = Field(
        default_factory=dict, description="per procedure (label or workitem code value): seconds a HIGH priority "
                                          "item may take from scheduling to completion")
    default_time_budget_seconds: float = Field(900.0, description="budget of procedures not listed")
    stuck_minutes: float = Field(10.0, description="IN PROGRESS with no progress for this long = stuck")
    failed_window_hours: float = Field(24.0, description="how far back 'recently failed' looks")
    viewer_url_template: str = Field(
        "", description="IID-style URL opening a study in a viewer; placeholders {study_uid} {accession} "
                        "{patient_id} {series_uid} {workitem_uid}, e.g. "
                        "http://ohif.local/viewer?StudyInstanceUIDs={study_uid}")
    cancel_tokens: dict[str, str] = Field(
        default_factory=dict, description="token -> user name of people allowed to request cancellation")
    fetch_concurrency: int = Field(8, description="retrieves/unsubscribes in flight at once")
    heartbeat_interval: float = Field(10.0, description="WebSocket ping interval to the Task Manager")
    heartbeat_timeout: float = Field(10.0, description="a pong later than this = connection dead")
    backoff_initial: float = Field(0.5, description="first reconnect delay (seconds, full jitter)")
    backoff_max: float = Field(30.0, description="longest reconnect delay")
    push_interval: float = Field(0.1, description="seconds between pushes of changed rows to pages")

    def budget(self, procedure: str, code: str = "") -> float:
        return self.time_budget_seconds.get(procedure, self.time_budget_seconds.get(code, self.default_time_budget_seconds))


def load(config: Path | None = None, **overrides: Any) -> WatchSettings:
    """Settings from the TOML file (a ``[watch]`` table or top-level keys), the environment
    and ``overrides`` (CLI flags; None values are ignored)."""
    data: dict[str, Any] = {}
    if config is not None:
        raw = tomllib.loads(Path(config).read_text())
        data = dict(raw.get("watch", raw))
    env = WatchSettings()
    merged = {**data, **{k: v for k, v in env.model_dump(exclude_unset=True).items()},
              **{k: v for k, v in overrides.items() if v is not None}}
    return WatchSettings(**merged)
