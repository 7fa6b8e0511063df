"""The performer worker: an rq worker on the performer's queues, urgent queue first.

rq's default worker forks a work horse per job, so a model that leaks memory or crashes
takes only its job down; the job itself (``performers.job.perform``) ends the workitem
CANCELED when it fails, and the Task Manager's lease reschedules it when the whole worker
dies. More throughput = more workers, on more machines, on the same Redis.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker

from performers.settings import PerformerSettings


def make_worker(settings: PerformerSettings, name: str | None = None) -> Worker:
    redis = Redis.from_url(settings.queue_url)
    return Worker([Queue(n, connection=redis) for n in settings.queues], connection=redis, name=name)


def run_worker(settings: PerformerSettings, *, burst: bool = False, name: str | None = None) -> bool:
    """Serve jobs until stopped (or, with ``burst``, until the queues are empty)."""
    return make_worker(settings, name).work(burst=burst, logging_level="INFO", with_scheduler=False)
