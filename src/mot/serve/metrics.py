"""What the server counts, in the Prometheus text format (``GET /metrics``): requests by task and
status, their seconds, generated tokens and tokens per second by modality, the queue and the batch.

Updated from the scheduler's thread and the server's event loop, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Deque, Tuple

MODALITIES = ("text", "image", "speech")


class Metrics:
    """Counters and gauges of one server; ``window`` seconds for tokens per second."""

    def __init__(self, window: float = 10.0):
        self.window = window
        self.lock = threading.Lock()
        self.requests: Counter = Counter()  # (task, status) -> answered requests
        self.seconds: Counter = Counter()  # task -> seconds of the requests answered "ok"
        self.tokens: Counter = Counter()  # modality -> generated tokens
        self.recent: Deque[Tuple[float, str, int]] = deque()  # (time, modality, tokens) inside the window
        self.queue_length = self.running_requests = 0

    def queued(self, waiting: int) -> None:
        with self.lock:
            self.queue_length = waiting

    def running(self, running: int) -> None:
        with self.lock:
            self.running_requests = running

    def generated(self, modality: str, tokens: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.tokens[modality] += tokens
            self.recent.append((now, modality, tokens))
            self._forget(now)

    def finished(self, task: str, status: str, seconds: float) -> None:
        """A request of ``task`` was answered with ``status`` ("ok", "cancelled" or an HTTP code)."""
        with self.lock:
            self.requests[task, status] += 1
            if status == "ok":
                self.seconds[task] += seconds

    def failed(self, path: str, status: int) -> None:
        """A request to ``path`` answered with the error ``status``, counted under the task its path
        names (``/v1/images`` -> images)."""
        self.finished(path.rsplit("/", 1)[-1] or "page", str(status), 0.0)

    def tokens_per_second(self) -> dict:
        """Generated tokens per second of each modality over the last ``window`` seconds."""
        now = time.monotonic()
        with self.lock:
            self._forget(now)
            rates = Counter()
            for _, modality, tokens in self.recent:
                rates[modality] += tokens
        return {m: rates[m] / self.window for m in MODALITIES}

    def _forget(self, now: float) -> None:
        while self.recent and self.recent[0][0] < now - self.window:
            self.recent.popleft()

    def prometheus(self) -> str:
        """Every metric in the Prometheus text exposition format (version 0.0.4)."""
        rates = self.tokens_per_second()
        with self.lock:
            lines = _family("mot_requests_total", "counter", "Requests answered, by task and status.",
                            [(dict(task=t, status=s), n) for (t, s), n in sorted(self.requests.items())])
            lines += _family("mot_request_seconds_total", "counter",
                             "Seconds from arrival to answer of the requests answered ok, by task.",
                             [(dict(task=t), v) for t, v in sorted(self.seconds.items())])
            lines += _family("mot_generated_tokens_total", "counter", "Generated tokens, by modality.",
                             [(dict(modality=m), self.tokens[m]) for m in MODALITIES])
            lines += _family("mot_tokens_per_second", "gauge",
                             f"Generated tokens per second over the last {self.window:g} s, by modality.",
                             [(dict(modality=m), rates[m]) for m in MODALITIES])
            lines += _family("mot_queue_length", "gauge", "Requests waiting for the batch.", [({}, self.queue_length)])
            lines += _family("mot_running_requests", "gauge", "Requests in the batch.", [({}, self.running_requests)])
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str, samples) -> list:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{label_text}}} {value:g}" if label_text else f"{name} {value:g}")
    return lines
