"""What one server accepts: sizes of prompts, outputs and bodies, how many requests run and wait,
and how long a request may take. ``mot serve`` sets them from its options."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, check_number


@dataclass(frozen=True)
class ServeLimits:
    """Limits of a server; a request beyond one gets an error that names it."""

    max_prompt_tokens: int = 256  # ids of a prompt (an image or speech input counts its codes/units)
    max_new_tokens: int = 512  # ids a request may ask for (an image needs its codes; speech its units)
    max_body_bytes: int = 2 * 1024 * 1024  # an upload (image, WAV) or a JSON body
    max_batch: int = 8  # requests decoded together (1: one at a time)
    max_queue: int = 64  # requests waiting for the batch; past it, 429
    timeout_seconds: float = 120.0  # from arrival to answer; past it, 504
    shutdown_seconds: float = 30.0  # on shutdown, how long running and waiting requests may finish

    def __post_init__(self) -> None:
        for name in ("max_prompt_tokens", "max_new_tokens", "max_body_bytes", "max_batch", "max_queue"):
            value, least = getattr(self, name), 0 if name == "max_queue" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name}={value!r}: must be an integer >= {least}")
        check_number("timeout_seconds", self.timeout_seconds, "must be a number > 0", lambda v: v > 0)
        check_number("shutdown_seconds", self.shutdown_seconds, "must be a number >= 0", lambda v: v >= 0)
