"""The server's scheduler: one worker thread owns the model and batches requests continuously.

Between two decoding steps, waiting requests join the batch (their prompts prefilled together) up
to ``max_batch``, and requests that ended, timed out or whose client went away leave it; then one
step runs every tower once on all of its tokens from every request in the batch (paper section
6.3: a mixed batch of text, image and speech requests keeps each tower's GEMM full). Transfusion
text -> image requests run between steps, all that are waiting at once.

``max_batch`` 1 serves requests one at a time, and ``padded_towers`` pads every tower's tokens to the
largest tower's and runs the towers as one batched matmul (:meth:`MoTModel.padded_towers`): the two
baselines of benchmarks/serving.py. Past ``max_queue`` waiting requests, :meth:`Scheduler.submit`
refuses (the server answers 429); while stopping, it refuses everything (503). The worker thread never dies of a request: a request's error
goes to that request.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, List, Optional

from ..errors import MotError
from ..generate.batching import DecodingBatch, LiveRequest
from ..generate.decoding import Request
from ..generate.logits import GenerationError
from .metrics import Metrics
from .served_model import DiffusionRequest, ServedModel

#: a job's events, in the worker thread: ("token", id) (streams only), ("done", result) or ("error", ServeError)
Notify = Callable[[str, object], None]


class ServeError(MotError):
    """A request the server answers with an error: ``status`` and a ``reason`` for the client."""

    def __init__(self, status: int, reason: str, kind: str = "invalid_request_error"):
        super().__init__(reason)
        self.status, self.reason, self.kind = status, reason, kind


@dataclass(eq=False)
class Job:
    """One request as the scheduler sees it: a decoding :class:`Request` or a :class:`DiffusionRequest`,
    its ``task`` (for metrics), where its events go and when it must be done by (``time.monotonic``)."""

    work: Request | DiffusionRequest
    task: str
    notify: Notify
    deadline: float
    stream: bool = False  # its tokens are sent as they come (else only its result)
    cancelled: bool = False
    live: Optional[LiveRequest] = None
    submitted: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """The client went away: the worker drops the job (and frees its cache rows) before its next step."""
        self.cancelled = True


class Scheduler:
    """Serves :class:`Job` s for ``model`` in a worker thread (see the module docstring)."""

    def __init__(self, model: ServedModel, metrics: Metrics, max_batch: int = 8, max_queue: int = 64,
                 padded_towers: bool = False):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and max_queue={max_queue} >= 0")
        self.model, self.metrics = model, metrics
        self.max_batch, self.max_queue = max_batch, max_queue
        torch_model = model.decoder.model
        self.tower_execution = torch_model.padded_towers if padded_towers else contextlib.nullcontext
        self.waiting: Deque[Job] = deque()
        self.running: List[Job] = []
        self.batch = DecodingBatch(model.decoder)
        self.condition = threading.Condition()
        self.stopping = self.closed = False
        self.thread = threading.Thread(target=self._work, name="mot-serve-scheduler", daemon=True)

    def start(self) -> "Scheduler":
        self.thread.start()
        return self

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`ServeError` 503 while stopping, 429 when the queue is full."""
        with self.condition:
            if self.stopping:
                raise ServeError(503, "the server is shutting down", "unavailable")
            if len(self.waiting) >= self.max_queue:
                raise ServeError(429, f"the queue is full ({self.max_queue} requests waiting); try again later",
                                 "overloaded")
            self.waiting.append(job)
            self.metrics.queued(len(self.waiting))
            self.condition.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, finish the running and waiting ones within ``timeout`` seconds, then
        answer whatever is left with 503."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join(timeout)
        with self.condition:
            self.closed = True  # a worker still busy returns before its next step
            left = list(self.waiting) + list(self.running)
            self.waiting.clear()
        for job in left:
            job.notify("error", ServeError(503, "the server shut down before the request was done", "unavailable"))

    @property
    def load(self) -> dict:
        return dict(running=len(self.running), waiting=len(self.waiting))

    # ---- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self.condition:
                while not (self.waiting or self.running or self.stopping):
                    self.condition.wait()
                if self.closed or (self.stopping and not (self.waiting or self.running)):
                    return
                joining = self._admit()
            try:
                self._drop_cancelled()
                with self.tower_execution():
                    self._join([job for job in joining if isinstance(job.work, Request)])
                    self._denoise([job for job in joining if isinstance(job.work, DiffusionRequest)])
                    self._step()
            except Exception as error:  # noqa: BLE001 - a bug must fail its requests, not the server
                self._fail_everything(error, joining)

    def _fail_everything(self, error: Exception, joining: List[Job]) -> None:
        """Answer every running and joining job with 500 and start again with an empty batch."""
        failed = self.running + [job for job in joining if job not in self.running]
        self.running = []
        self.batch = DecodingBatch(self.model.decoder)
        for job in failed:
            self._fail(job, ServeError(500, f"the model failed: {type(error).__name__}: {error}", "server_error"))
        self.metrics.running(0)

    def _admit(self) -> List[Job]:
        """Waiting jobs that fit in the batch, in arrival order (under the lock)."""
        joining, now = [], time.monotonic()
        while self.waiting and len(self.running) + len(joining) < self.max_batch:
            job = self.waiting.popleft()
            if job.cancelled:
                continue  # its client went away while it waited
            if now > job.deadline:
                self._fail(job, ServeError(504, "the request waited longer than its timeout", "timeout"))
            else:
                joining.append(job)
        self.metrics.queued(len(self.waiting))
        return joining

    def _drop_cancelled(self) -> None:
        now = time.monotonic()
        for job in list(self.running):
            if job.cancelled or now > job.deadline:
                self._remove(job)
                if not job.cancelled:
                    self._fail(job, ServeError(504, "the request ran out of time before it was done", "timeout"))

    def _join(self, jobs: List[Job]) -> None:
        """Prefill ``jobs`` together; a job whose request the decoder refuses fails alone."""
        fit = []
        for job in jobs:
            try:
                self.model.decoder.check_request("request", job.work)
                fit.append(job)
            except GenerationError as error:
                self._fail(job, ServeError(400, str(error)))
        if fit:
            for job, live in zip(fit, self.batch.join([job.work for job in fit])):
                job.live = live
                self.running.append(job)
            self.metrics.running(len(self.running))

    def _denoise(self, jobs: List[Job]) -> None:
        if not jobs:
            return
        self.running.extend(jobs)
        try:
            images = self.model.denoise([job.work for job in jobs])
        except GenerationError as error:
            for job in jobs:
                self._fail(job, ServeError(400, str(error)))
            return
        finally:
            self.running = [job for job in self.running if job not in jobs]
        for job, image in zip(jobs, images):
            self.metrics.generated("image", 1)
            self._finish(job, image)

    def _step(self) -> None:
        if not len(self.batch):
            return
        by_live = {id(job.live): job for job in self.running if job.live is not None}
        for live, token in self.batch.step():
            job = by_live[id(live)]
            self.metrics.generated(self.model.modality_of(token), 1)
            if job.stream:  # waking the event loop per token costs the others' time
                job.notify("token", token)
            if live.ended:
                self.running.remove(job)
                self._finish(job, live)
        self.metrics.running(len(self.running))

    def _remove(self, job: Job) -> None:
        if job in self.running:
            self.running.remove(job)
        if job.live is not None and not job.live.ended:
            self.batch.leave([job.live])
        self.metrics.running(len(self.running))

    # The server counts each request once, when it answers (serve/app.py), not here.

    def _finish(self, job: Job, result: object) -> None:
        job.notify("done", result)

    def _fail(self, job: Job, error: ServeError) -> None:
        job.notify("error", error)
