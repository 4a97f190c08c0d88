"""Running the app: :func:`serve` in the foreground (``mot serve``; Ctrl-C or SIGTERM shuts down
gracefully: no new connections, running and waiting requests finish within the limit), and
:class:`BackgroundServer` on a free loopback port in a thread (tests, benchmarks/serving.py)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Optional

import torch
import uvicorn

from .app import create_app
from .limits import ServeLimits
from .served_model import ServedModel


def _config(model: ServedModel, host: str, port: int, limits: ServeLimits, token: Optional[str],
            log_level: str, padded_towers: bool = False) -> uvicorn.Config:
    return uvicorn.Config(create_app(model, limits, token, padded_towers), host=host, port=port, log_level=log_level,
                          timeout_graceful_shutdown=int(limits.shutdown_seconds), lifespan="on")


def serving_threads() -> int:
    """Torch's CPU threads while serving: every core but one, which the HTTP side (parsing, JSON,
    images and audio in and out) keeps. Measured on 2 cores: one torch thread decodes as fast as two
    at MoT-Tiny's size, and the server's throughput at 8 concurrent requests rose by a third
    (docs/serving.md)."""
    return max(1, (os.cpu_count() or 1) - 1)


def serve(model: ServedModel, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits = ServeLimits(),
          token: Optional[str] = None, threads: Optional[int] = None) -> None:
    """Serve ``model`` until interrupted, with ``threads`` torch CPU threads (default
    :func:`serving_threads`)."""
    torch.set_num_threads(threads or serving_threads())
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler that
    # was there before it: this one makes that a clean exit (status 0) instead of a kill
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.Server(_config(model, host, port, limits, token, "info")).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)


class BackgroundServer:
    """``with BackgroundServer(model) as server:`` the server runs at ``server.url`` (127.0.0.1, a
    free port) until the block ends, then shuts down gracefully."""

    def __init__(self, model: ServedModel, limits: ServeLimits = ServeLimits(), token: Optional[str] = None,
                 padded_towers: bool = False):
        with socket.socket() as probe:  # a free port; uvicorn binds it right after
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(_config(model, "127.0.0.1", self.port, limits, token, "warning", padded_towers))
        self.thread = threading.Thread(target=self.server.run, name="mot-serve", daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def app(self):
        return self.server.config.app

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(120)
