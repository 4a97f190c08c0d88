"""What one server accepts: sizes of prompts, outputs and bodies, how many requests run and wait,
and how long a request may take. ``mot serve`` sets them from its options."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..config import ConfigError


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
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name.endswith("_seconds"):  # a time: > 0 (shutdown: >= 0)
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    value >= 0 if field.name == "shutdown_seconds" else value > 0)
                rule = ">= 0" if field.name == "shutdown_seconds" else "> 0"
            else:  # a count: >= 1 (the queue: >= 0)
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= (field.name != "max_queue")
                rule = "an integer >= " + ("0" if field.name == "max_queue" else "1")
            if not ok:
                raise ConfigError(f"{field.name}={value!r}: must be {rule if rule[0] == 'a' else 'a number ' + rule}")
