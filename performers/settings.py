"""Performer settings (agent and worker): environment ``AIW_*``, the same names as the
``aiw performer`` flags. One object serves both processes so an operator configures a
performer once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PerformerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIW_", extra="ignore")

    ups_url: str = Field("http://127.0.0.1:8080", description="the Task Manager's UPS-RS service root")
    queue_url: str = Field("redis://127.0.0.1:6379/0", description="Redis of the rq job queues")
    queue_prefix: str = Field("aiw", description="names of the rq queues and cancel flags start with this")
    ae_title: str = Field("AIW_PERFORMER", description="the performer's AE title (subscriber of events)")
    station_code: str = Field("AIW-NODE-1", description="Performed Station Name Code Value")
    station_scheme: str = Field("99AIW", description="Performed Station Name Coding Scheme Designator")
    station_meaning: str = Field("aiw reference performer", description="Performed Station Name Code Meaning")
    models: list[str] = Field(default_factory=lambda: ["aiw-flair-lesions"],
                              description="models served (entry points of group aiw.models)")
    external_models: Path | None = Field(None, description="YAML file describing external (command) models")
    worklist_label: str | None = Field(None, description="serve only workitems of this Worklist Label")
    catchup_interval: float = Field(30.0, description="seconds between catch-up searches of the worklist")
    stow_url: str | None = Field(None, description="default STOW-RS URL when a workitem names no Output Destination")
    dicomweb_timeout: float = Field(60.0, description="seconds before a DICOMweb request times out")
    dicomweb_retries: int = Field(4, description="retries of a failed DICOMweb request (connection errors, 5xx)")
    dicomweb_backoff: float = Field(0.5, description="first retry delay in seconds (doubles each retry)")
    work_dir: Path | None = Field(None, description="where inputs are downloaded (a temporary dir per job)")
    heartbeat_seconds: float = Field(60.0, description="progress is re-sent this often during long stages "
                                                       "(keeps the Task Manager's lease)")
    segmentation_type: str = Field("BINARY", description="SEG type: BINARY or LABELMAP")
    job_timeout: int = Field(3600, description="seconds an rq job may run")

    @property
    def queues(self) -> list[str]:
        """Queue names, urgent first: an rq worker serves them in this order."""
        return [f"{self.queue_prefix}-high", f"{self.queue_prefix}-default"]

    def guard_key(self, uid: str) -> str:
        """Held from enqueue until the job ends: one job per workitem at a time."""
        return f"{self.queue_prefix}:job:{uid}"

    def cancel_key(self, uid: str) -> str:
        return f"{self.queue_prefix}:cancel:{uid}"
