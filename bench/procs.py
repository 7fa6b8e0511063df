"""Client processes for the benchmarks: spawned once, kept for the whole run, each driven
over a pipe, so the load never shares a process (or a GIL) with the server measured."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable


class ProcessPool:
    def __init__(self, target: Callable[[Any], None], processes: int):
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            a, b = ctx.Pipe()
            p = ctx.Process(target=target, args=(b,), daemon=True)
            p.start()
            self.pipes.append(a)
            self.procs.append(p)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid]

    def stop(self) -> None:
        """Ask every process to end (``None`` on its pipe); terminate the ones that do not."""
        for a in self.pipes:
            try:
                a.send(None)
            except OSError:
                pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
