"""Inference workers: one thread and one FIFO queue per loaded model.

Requests become :class:`Job` objects. A job waits its turn in its model's queue (its
position is reported so the page can say "queued"); when the queue already holds
``queue_cap`` jobs a new one is refused at once with :class:`Busy`. A job's events go to
its own queue, read by the websocket or HTTP handler; cancelling a job (Stop button,
disconnected client) is seen by the engine between two tokens or two prefill chunks, and
the worker moves on to the next job.
"""

from __future__ import annotations

import itertools
import queue
import threading
import traceback
from collections import deque
from typing import Any, Callable, Iterator

from .chat import backend_loader
from .errors import ChatError
from .events import Event
from .config import Registry
from .process import release_free_memory

JobFn = Callable[[Any, Callable[[], bool]], Iterator[Event]]

DEFAULT_QUEUE_CAP = 8


class Busy(RuntimeError):
    """The model's queue is full; try again later."""


class Job:
    """One request: a function of (backend, cancel) that yields events."""

    _ids = itertools.count(1)

    def __init__(self, fn: JobFn, model: str) -> None:
        self.id = next(self._ids)
        self.fn = fn
        self.model = model
        self.events: queue.Queue[Event | None] = queue.Queue()
        self._cancel = threading.Event()
        self.state = "queued"

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def iter_events(self, timeout: float = 600.0) -> Iterator[Event]:
        """Events until the job ends (``None`` sentinel); gives up after ``timeout`` idle seconds."""
        while True:
            try:
                ev = self.events.get(timeout=timeout)
            except queue.Empty:
                self.cancel()
                yield {"type": "error", "message": "the model did not answer in time"}
                return
            if ev is None:
                return
            yield ev


class Worker:
    """A thread serving one model's jobs in FIFO order."""

    def __init__(self, name: str, loader: Callable[[], Any], queue_cap: int = DEFAULT_QUEUE_CAP) -> None:
        self.name = name
        self.loader = loader
        self.queue_cap = queue_cap
        self.backend: Any = None
        self.load_error = ""
        self.state = "loading"
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self.current: Job | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: JobFn) -> Job:
        job = Job(fn, self.name)
        with self._cond:
            if len(self._jobs) >= self.queue_cap:
                raise Busy(f"model {self.name!r} is busy: {len(self._jobs)} requests are waiting")
            self._jobs.append(job)
            position = len(self._jobs) + (1 if self.current is not None else 0) - 1
            self._cond.notify()
        if position > 0 or self.state == "loading":
            job.events.put({"type": "queued", "position": position, "state": self.state})
        return job

    def queue_length(self) -> int:
        with self._cond:
            return len(self._jobs)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            for job in self._jobs:
                job.cancel()
            self._cond.notify_all()
        if self.current is not None:
            self.current.cancel()

    def _run(self) -> None:
        try:
            self.backend = self.loader()
            self.state = "ready"
        except Exception as err:  # reported to every job, the server lives on
            self.load_error = str(err) if isinstance(err, (ChatError, FileNotFoundError, KeyError, ValueError)) \
                else f"{type(err).__name__}: {err}"
            self.state = "error"
        while True:
            with self._cond:
                while not self._jobs and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._jobs.popleft()
                self.current = job
            self._serve(job)
            with self._cond:
                self.current = None
                idle = not self._jobs
            if idle:
                release_free_memory()

    def _serve(self, job: Job) -> None:
        job.state = "running"
        try:
            if job.cancelled:
                job.events.put({"type": "done", "finish_reason": "cancelled", "stats": {}, "content": ""})
            elif self.state == "error":
                job.events.put({"type": "error", "message": self.load_error})
            else:
                for ev in job.fn(self.backend, lambda: job.cancelled):
                    job.events.put(ev)
        except ChatError as err:
            job.events.put({"type": "error", "message": str(err)})
        except Exception as err:  # never let one request kill the worker
            traceback.print_exc()
            job.events.put({"type": "error", "message": f"internal error: {type(err).__name__}: {err}"})
        finally:
            job.state = "done"
            job.events.put(None)


class ModelManager:
    """Loads models on demand (one worker each) from the registry."""

    def __init__(self, registry: Registry, queue_cap: int = DEFAULT_QUEUE_CAP,
                 backend_factories: dict[str, Callable[[Any], Any]] | None = None) -> None:
        self.registry = registry
        self.queue_cap = queue_cap
        self.workers: dict[str, Worker] = {}
        self._lock = threading.Lock()
        self.backend_factories = backend_factories or {}

    def worker(self, name: str | None) -> Worker:
        entry = self.registry.get(name)
        with self._lock:
            w = self.workers.get(entry.name)
            if w is None or (w.state == "error" and not w.queue_length()):
                loader = backend_loader(entry, self.backend_factories)
                w = Worker(entry.name, loader, self.queue_cap)
                self.workers[entry.name] = w
            return w

    def submit(self, name: str | None, fn: JobFn) -> Job:
        return self.worker(name).submit(fn)

    def state(self, name: str | None) -> str:
        try:
            entry = self.registry.get(name)
        except KeyError:
            return "missing"
        w = self.workers.get(entry.name)
        return w.state if w is not None else "unloaded"

    def shutdown(self) -> None:
        for w in list(self.workers.values()):
            w.stop()
