"""Micro-batching: gather concurrent requests per adapter and run them on `--workers` worker threads.

One collector task, whenever a worker is free, takes the oldest waiting adapter, waits up to
`max_batch_wait_ms` (from the oldest request's arrival) for up to `max_batch_texts` texts of that adapter,
and runs the batch on that worker, off the event loop. A full queue raises `QueueFull` (the API answers 503 +
Retry-After) rather than growing without bound; `close()` drains: it refuses new work (`Draining`) and finishes
every queued request.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .adapters import Adapter
    from .settings import ServeSettings

# uvicorn configures this logger, so our lines appear beside its own.
log = logging.getLogger("uvicorn.error")


class QueueFull(Exception):
    """The batcher holds max_queue requests already."""


class Draining(Exception):
    """The server is shutting down and takes no new work."""


def _set_forward_threads(threads: int) -> None:
    # torch's thread count is per thread where it is set off the main thread (OpenMP), so the worker sets its own;
    # start-up sets the same count before compiling, since dynamo guards on it.
    if threads:
        import torch

        torch.set_num_threads(threads)


@dataclass
class _Job:
    adapter: Adapter
    texts: list[str]
    future: asyncio.Future
    arrived: float


class MicroBatcher:
    """Gathers concurrent requests per adapter into batches and runs them on `settings.workers` worker threads.

    One worker is the default: torch already spreads one forward pass over every core, as does an ONNX adapter's
    session (one intra-op thread per core), so one pass at a time keeps the cores from being oversubscribed.
    With --workers N (and --threads T, N x T <= cores) passes run side by side; adapters over one shared base
    still take turns (their group's lock: set_adapter is global to the model), a merged adapter does not.
    """

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._pending: dict[str, deque[_Job]] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="loraclf-infer",
                                            initializer=_set_forward_threads, initargs=(settings.threads,))
        self._free_workers = asyncio.Semaphore(settings.workers)
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self.batches_run = 0  # for /health and tests

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def draining(self) -> bool:
        return self._closing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="loraclf-batcher")

    def submit(self, adapter: Adapter, texts: list[str]) -> asyncio.Future:
        """Queue `texts` for `adapter`; the future resolves to their probabilities [n, k].

        Raises:
            Draining: shutdown has begun.
            QueueFull: max_queue requests are waiting already.
        """
        if self._closing:
            raise Draining()
        if self._queued >= self.settings.max_queue:
            raise QueueFull()
        loop = asyncio.get_running_loop()
        job = _Job(adapter, texts, loop.create_future(), loop.time())
        self._pending.setdefault(adapter.name, deque()).append(job)
        self._queued += 1
        self._wake.set()
        return job.future

    async def close(self) -> None:
        """Stop taking requests, finish every queued and running one, then stop the workers."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _oldest(self) -> str | None:
        heads = [(q[0].arrived, name) for name, q in self._pending.items() if q]
        return min(heads)[1] if heads else None

    def _pending_texts(self, name: str) -> int:
        return sum(len(j.texts) for j in self._pending[name])

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.settings.max_batch_wait_ms / 1000
        while True:
            name = self._oldest()
            if name is None:
                if self._closing:
                    await asyncio.gather(*self._running)
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._free_workers.locked():  # every worker is busy: requests gather until one is free
                async with self._free_workers:
                    pass
                continue
            if self.settings.batching and wait_s > 0:
                # Wait for company only while a worker is idle and the oldest request is young.
                deadline = self._pending[name][0].arrived + wait_s
                while not self._closing and self._pending_texts(name) < self.settings.max_batch_texts:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), remaining)
                    except asyncio.TimeoutError:
                        break
            await self._free_workers.acquire()
            task = loop.create_task(self._run(self._take(name)))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self, name: str) -> list[_Job]:
        queue, jobs, n = self._pending[name], [], 0
        while queue and (not jobs or (self.settings.batching and n + len(queue[0].texts) <= self.settings.max_batch_texts)):
            job = queue.popleft()
            self._queued -= 1
            if job.future.done():  # the client went away
                continue
            jobs.append(job)
            n += len(job.texts)
        return jobs

    async def _run(self, jobs: list[_Job]) -> None:
        try:
            await self._run_on_worker(jobs)
        finally:
            self._free_workers.release()

    async def _run_on_worker(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self._executor, jobs[0].adapter.predict_proba, texts)
        except Exception as e:  # a bug or an out-of-memory: fail these requests, keep serving
            log.exception("inference failed for adapter %s", jobs[0].adapter.name)
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        self.batches_run += 1
        start = 0
        for j in jobs:
            if not j.future.done():
                j.future.set_result(probs[start : start + len(j.texts)])
            start += len(j.texts)
