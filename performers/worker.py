"""The performer worker: an rq worker on the performer's queues, urgent queue first.

rq's default worker forks a work horse per job, so a model that leaks memory or crashes
takes only its job down; the job itself (``performers.job.perform``) ends the workitem
CANCELED when it fails, and the Task Manager's lease reschedules it when the whole worker
dies. More throughput = more workers, on more machines, on the same Redis.
"""

from __future__ import annotations

from rq import Queue, SimpleWorker, Worker
from rq.timeouts import TimerDeathPenalty

from performers.connections import is_memory, sync_redis
from performers.settings import PerformerSettings


class ThreadWorker(SimpleWorker):
    """Jobs in the worker's own process, in a thread that is not the main one (``aiw
    demo``). rq installs signal handlers, which only the main thread may do: here the
    owner stops the worker instead (``request_stop``), and job timeouts use a timer
    thread instead of SIGALRM."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:  # noqa: D401 - rq hook
        pass


def make_worker(settings: PerformerSettings, name: str | None = None, *, in_thread: bool = False) -> Worker:
    """A forking rq worker; in-process (no fork) for the in-memory queue, whose state a
    forked child would not share, or when ``in_thread``."""
    redis = sync_redis(settings.queue_url)
    cls = ThreadWorker if in_thread else (SimpleWorker if is_memory(settings.queue_url) else Worker)
    return cls([Queue(n, connection=redis) for n in settings.queues], connection=redis, name=name)


def preload(settings: PerformerSettings, *, warm: bool = True) -> None:
    """Import the job code and load the models once, before rq forks its work horses: a
    horse inherits them instead of importing highdicom and the models again for every job
    (measured: ~0.85 s of a job's end-to-end time, bench/performer.py). With ``warm``,
    also run the data path once (``performers.warmup``: ~0.5 s of every job's encode)."""
    import httpx

    from performers.job import models
    from performers.warmup import warm as warm_data_path
    from upsrs.http import tls_context

    models(tuple(settings.models), settings.external_models)
    httpx.AsyncClient(verify=tls_context())  # the first client imports httpx's transports (~0.14 s)
    if warm:
        warm_data_path(settings.segmentation_type)


def run_worker(settings: PerformerSettings, *, burst: bool = False, name: str | None = None) -> bool:
    """Serve jobs until stopped (or, with ``burst``, until the queues are empty)."""
    preload(settings, warm=not is_memory(settings.queue_url))  # only forked horses start cold
    return make_worker(settings, name).work(burst=burst, logging_level="INFO", with_scheduler=False)
