"""Sampling for autoregressive generation as composable logits processors.

A batch's next-token logits ``[B, V]`` pass through a :class:`LogitsProcessorList` (repetition
penalty, temperature, top-k, top-p, allowed tokens; :func:`guided` mixes a conditional and an
unconditional row first) and a :class:`TokenChooser` picks one token per row. Every setting is per
row, so requests with different settings share one batch.

Two rules shape everything here:

* No device value is ever read on the host (no ``.item()``, ``bool(tensor)``, boolean-mask
  indexing or data-dependent shapes): the decoding loop may sync once per token, and that sync is
  the caller's. Which rows are greedy or penalised is known from the Python :class:`Sampling`
  objects, never from tensors.
* A row's result never depends on the other rows of its batch (batched == one by one): every op is
  row-wise, a setting that is "off" for a row leaves that row bit for bit unchanged (so a processor
  that another row needs is harmless to this one), and each sampling row draws from its own
  generator.

Arithmetic on logits is done in float64 and rounded once to the logits' dtype: the difference of two
fp32 logits is exact there, a temperature such as ``1e-300`` does not round to 0, and a scalar
setting gives the same bits as the same setting in a per-row tensor. The cost, ``B * V`` doubles per
token, is small next to a forward pass.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

import torch

from ..config import ConfigError

PerRow = Union[float, int, torch.Tensor]

_NEG_INF = float("-inf")
_SEED_LIMIT = 2**63


class GenerationError(ConfigError):
    """A bad generation setting, request or run to generate with; the message names the field and its value."""


# ---- validation (Python values only: nothing here touches a device) ------------------------------


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_number(name: str, value, rule: str, ok) -> None:
    """Raise :class:`GenerationError` unless ``value`` is a finite real number (not a bool) with ``ok(value)``."""
    if not _is_number(value) or not math.isfinite(value) or not ok(value):
        raise GenerationError(f"{name}={value!r}: must be {rule}")


def _check_integer(name: str, value, rule: str, ok) -> None:
    """Raise :class:`GenerationError` unless ``value`` is an integer (not a bool) with ``ok(value)``."""
    if not _is_integer(value) or not ok(value):
        raise GenerationError(f"{name}={value!r}: must be {rule}")


_TEMPERATURE_RULE = "a finite number >= 0 (0: greedy)"
_TOP_K_RULE = "an integer >= 0 (0: off)"
_TOP_P_RULE = "a finite number in (0, 1] (1: off)"
_PENALTY_RULE = "a finite number > 0 (1: off)"
_SCALE_RULE = "a finite number (1: no guidance)"


@dataclass(frozen=True)
class Sampling:
    """One request's sampling settings.

    ``temperature`` 0 picks the best token (greedy); above 0 a token is drawn from
    ``softmax(logits / temperature)``. ``top_k`` keeps the ``k`` best tokens (0: off); ``top_p``
    keeps the smallest set of best tokens whose probability is at least ``top_p`` (1: off), never
    fewer than one. ``repetition_penalty`` (CTRL, Keskar et al. 2019, as HF transformers) divides the
    positive logits of tokens already seen and multiplies their negative ones (1: off). ``seed``
    seeds the request's own generator, so its draws do not depend on the rest of its batch.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self):
        _check_number("temperature", self.temperature, _TEMPERATURE_RULE, lambda v: v >= 0)
        _check_integer("top_k", self.top_k, _TOP_K_RULE, lambda v: v >= 0)
        _check_number("top_p", self.top_p, _TOP_P_RULE, lambda v: 0 < v <= 1)
        _check_number("repetition_penalty", self.repetition_penalty, _PENALTY_RULE, lambda v: v > 0)
        _check_integer("seed", self.seed, "an integer in [0, 2**63)", lambda v: 0 <= v < _SEED_LIMIT)

    def for_request(self, index: int) -> "Sampling":
        """The sampling of request ``index`` of a call: its own seed (``seed + index``), so a call's
        requests differ and each can be made again alone."""
        return replace(self, seed=self.seed + index)

    @property
    def greedy(self) -> bool:
        """Whether this request takes the best token instead of drawing one."""
        return self.temperature == 0


# ---- processors ----------------------------------------------------------------------------------


@runtime_checkable
class LogitsProcessor(Protocol):
    """Maps next-token logits ``[B, V]`` (float) to new logits of the same shape and dtype; ``seen``
    ``[B, V]`` (bool) marks the tokens already in each row (prompt and generated), for penalties."""

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor: ...


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise GenerationError(f"{name}: must be a float tensor [batch, vocab], got {shape}")


def _per_row_setting(name: str, value: PerRow, rule: str, ok, integer: bool = False) -> PerRow:
    """Validate a per-row setting: a Python number (checked here) or a 1-D tensor (its shape and
    dtype only: its values live on the device, and reading them would sync). Float settings are used
    in float64: make such a tensor float64, as :func:`processors_for` does, or a setting such as 1.3
    is already rounded (to 1.2999999523 in float32)."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or (integer and value.is_floating_point()) or value.dtype == torch.bool:
            kind = "integer" if integer else "number"
            raise GenerationError(f"{name}: a tensor of them must be 1-D ({kind} per row), got {value.dtype} "
                                  f"{tuple(value.shape)}")
        return value
    (_check_integer if integer else _check_number)(name, value, rule, ok)
    return value


def _column(name: str, value: PerRow, logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``value`` as a ``[B, 1]`` (per-row tensor) or ``[1, 1]`` (number) tensor on the logits' device.

    A number becomes a one-element tensor rather than staying a Python scalar, so a row goes through
    the same kernels whether its setting is shared by the batch or its own (batched == one by one).
    """
    if isinstance(value, torch.Tensor):
        if value.shape[0] != logits.shape[0]:
            raise GenerationError(f"{name}: has {value.shape[0]} rows, the logits {logits.shape[0]}")
        return value.to(device=logits.device, dtype=dtype)[:, None]
    return torch.full((1, 1), value, dtype=dtype, device=logits.device)


class RepetitionPenalty:
    """CTRL's repetition penalty (as HF transformers' ``RepetitionPenaltyLogitsProcessor``): for the
    tokens a row has seen, a positive logit is divided by the row's ``penalty`` and a negative one
    multiplied by it. ``penalty`` is a number for every row or a 1-D tensor, one per row; 1 leaves a
    row unchanged."""

    def __init__(self, penalty: PerRow):
        self.penalty = _per_row_setting("repetition_penalty", penalty, _PENALTY_RULE, lambda v: v > 0)

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        _check_logits("logits", logits)
        if seen.shape != logits.shape or seen.dtype != torch.bool:
            raise GenerationError(f"seen: must be a bool tensor of the logits' shape {tuple(logits.shape)}, "
                                  f"got {seen.dtype} {tuple(seen.shape)}")
        penalty = _column("repetition_penalty", self.penalty, logits, torch.float64)
        x = logits.double()
        penalised = torch.where(x < 0, x * penalty, x / penalty)
        return torch.where(seen.to(logits.device), penalised, x).to(logits.dtype)


class Temperature:
    """Divides each row's logits by its ``temperature`` (a number or a 1-D tensor, one per row).

    Rows with temperature 0 (greedy) or 1 are left unchanged. The others have their best logit
    subtracted first: at a tiny temperature the quotient would overflow to inf, and softmax(inf) is
    nan; after the subtraction the best token's logit is 0 and the others fall to at most -inf. A row
    with no finite logit is left as it is (its max is not subtracted, which would give nan).
    """

    def __init__(self, temperature: PerRow):
        self.temperature = _per_row_setting("temperature", temperature, _TEMPERATURE_RULE, lambda v: v >= 0)

    def __call__(self, logits: torch.Tensor, seen: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_logits("logits", logits)
        if not isinstance(self.temperature, torch.Tensor) and self.temperature in (0, 1):
            return logits  # known on the host: nothing to do
        t = _column("temperature", self.temperature, logits, torch.float64)
        scales = (t > 0) & (t != 1)
        x = logits.double()
        best = x.amax(dim=-1, keepdim=True)
        best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))
        scaled = (x - best) / torch.where(scales, t, torch.ones_like(t))
        return torch.where(scales, scaled, x).to(logits.dtype)


def _ranks(logits: torch.Tensor) -> torch.Tensor:
    """Each token's rank in its row, best first (0: the best); equal logits rank by token id, the
    lower first, so a cut through a tie is deterministic."""
    order = logits.argsort(dim=-1, descending=True, stable=True)
    positions = torch.arange(logits.shape[-1], device=logits.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


class TopK:
    """Keeps each row's ``k`` best tokens (a number or a 1-D tensor, one per row; 0: all of them) and
    sets the others to -inf.

    Exactly ``k`` tokens stay (fewer if the row has fewer finite logits): a tie at the cut is broken
    toward the lower token id. HF's ``TopKLogitsWarper`` keeps every token tied with the k-th instead.
    """

    def __init__(self, k: PerRow):
        self.k = _per_row_setting("top_k", k, _TOP_K_RULE, lambda v: v >= 0, integer=True)

    def __call__(self, logits: torch.Tensor, seen: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_logits("logits", logits)
        if not isinstance(self.k, torch.Tensor) and self.k == 0:
            return logits
        k = _column("top_k", self.k, logits, torch.long)
        k = torch.where(k > 0, k, torch.full_like(k, logits.shape[-1]))
        return logits.masked_fill(_ranks(logits) >= k, _NEG_INF)


class TopP:
    """Nucleus filtering: keeps the smallest set of each row's best tokens whose probability is at
    least the row's ``p`` (a number or a 1-D tensor, one per row) and sets the others to -inf.

    A token stays when the tokens better than it hold less than ``p`` of the probability, so the best
    token always stays; ``p`` 1 keeps every token (a cumulative sum may round to 1 before the tail).
    Tokens of equal probability are taken in token-id order, the lower first, so the nucleus is
    exactly minimal and deterministic.
    """

    def __init__(self, p: PerRow):
        self.p = _per_row_setting("top_p", p, _TOP_P_RULE, lambda v: 0 < v <= 1)

    def __call__(self, logits: torch.Tensor, seen: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_logits("logits", logits)
        if not isinstance(self.p, torch.Tensor) and self.p == 1:
            return logits
        p = _column("top_p", self.p, logits, torch.float64)
        probs = torch.softmax(logits.double(), dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True, stable=True)
        # The probability of the tokens before each one (an exclusive cumulative sum).
        before = torch.nn.functional.pad(ordered.cumsum(dim=-1)[:, :-1], (1, 0))
        keep_ordered = (before < p) | (p >= 1)
        keep = torch.empty_like(keep_ordered).scatter_(-1, order, keep_ordered)
        return logits.masked_fill(~keep, _NEG_INF)


class AllowedTokens:
    """Sets every token outside ``allowed`` to -inf: a bool mask ``[V]`` (for every row) or
    ``[B, V]`` (one per row), e.g. the image tokens' id range while an image is being generated."""

    def __init__(self, allowed: torch.Tensor):
        if not isinstance(allowed, torch.Tensor) or allowed.dtype != torch.bool or allowed.dim() not in (1, 2):
            described = (f"{allowed.dtype} {tuple(allowed.shape)}" if isinstance(allowed, torch.Tensor)
                         else type(allowed).__name__)
            raise GenerationError(f"allowed: must be a bool tensor [vocab] or [batch, vocab], got {described}")
        self.forbidden = ~allowed

    def __call__(self, logits: torch.Tensor, seen: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_logits("logits", logits)
        if self.forbidden.shape[-1] != logits.shape[-1] or (
                self.forbidden.dim() == 2 and self.forbidden.shape[0] != logits.shape[0]):
            raise GenerationError(f"allowed: shape {tuple(self.forbidden.shape)} does not fit the logits' "
                                  f"{tuple(logits.shape)}")
        return logits.masked_fill(self.forbidden.to(logits.device), _NEG_INF)


class LogitsProcessorList(list):
    """Processors applied one after the other, in list order."""

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        for processor in self:
            logits = processor(logits, seen)
        return logits


def guided(conditional: torch.Tensor, unconditional: torch.Tensor, scale: PerRow) -> torch.Tensor:
    """Classifier-free guidance: ``unconditional + scale * (conditional - unconditional)``, with
    ``scale`` a number for every row or a 1-D tensor, one per row; scale 1 gives the conditional
    logits exactly.

    It is computed as ``conditional + (scale - 1) * (conditional - unconditional)``, whose second term
    is exactly 0 at scale 1. A token that is -inf in the conditional row stays -inf (masked in both or
    forbidden by the condition); one that is -inf only in the unconditional row gets its conditional
    logit (the difference has no meaning there and would give +inf or nan). Nothing becomes nan.
    """
    _check_logits("conditional", conditional)
    _check_logits("unconditional", unconditional)
    if conditional.shape != unconditional.shape:
        raise GenerationError(f"unconditional: shape {tuple(unconditional.shape)} differs from the conditional "
                              f"logits' {tuple(conditional.shape)}")
    scale = _per_row_setting("scale", scale, _SCALE_RULE, lambda v: True)
    s = _column("scale", scale, conditional, torch.float64)
    c, u = conditional.double(), unconditional.double()
    masked = torch.isneginf(c) | torch.isneginf(u)
    difference = torch.where(masked, torch.zeros_like(c), c - u)
    return (c + (s - 1) * difference).to(conditional.dtype)


def _check_samplings(samplings: Sequence[Sampling]) -> None:
    if len(samplings) == 0:
        raise GenerationError("samplings: must hold one Sampling per row, got none")
    for row, sampling in enumerate(samplings):
        if not isinstance(sampling, Sampling):
            raise GenerationError(f"samplings[{row}]={sampling!r}: must be a Sampling")


def processors_for(samplings: Sequence[Sampling], device) -> LogitsProcessorList:
    """The processors of a batch whose row ``i`` has ``samplings[i]``: repetition penalty,
    temperature, top-k, top-p (in that order, as HF transformers applies them), each left out when
    no row uses it.

    The per-row settings become tensors on ``device`` here, once per generation. A row whose setting
    is off is left bit for bit unchanged by a processor that other rows need, so its logits do not
    depend on the rest of the batch.
    """
    _check_samplings(samplings)

    def per_row(values, dtype):
        return torch.tensor(values, dtype=dtype, device=device)

    processors = LogitsProcessorList()
    penalties = [s.repetition_penalty for s in samplings]
    if any(v != 1 for v in penalties):
        processors.append(RepetitionPenalty(per_row(penalties, torch.float64)))
    temperatures = [s.temperature for s in samplings]
    if any(v not in (0, 1) for v in temperatures):
        processors.append(Temperature(per_row(temperatures, torch.float64)))
    ks = [s.top_k for s in samplings]
    if any(v != 0 for v in ks):
        processors.append(TopK(per_row(ks, torch.long)))
    ps = [s.top_p for s in samplings]
    if any(v != 1 for v in ps):
        processors.append(TopP(per_row(ps, torch.float64)))
    return processors


class TokenChooser:
    """Picks the next token of every row: the argmax for rows with temperature 0, else a draw from
    the softmax of the (processed) logits with the row's own ``torch.Generator``, seeded by its
    :attr:`Sampling.seed` on ``device``. A row's draws therefore do not depend on the other rows of
    the batch (batched == one by one). Create one per generation: each call advances each sampling
    row's generator by exactly one draw.

    A row whose logits are all -inf is the caller's bug (everything was masked). It cannot be
    detected without reading the device, so it is not raised: such a row gets token 0 (what argmax
    gives), greedy or not, and its generator still advances by one draw. Logits must be finite or
    -inf; nan or +inf are not handled.
    """

    def __init__(self, samplings: Sequence[Sampling], device: torch.device,
                 generators: Optional[Sequence[Optional[torch.Generator]]] = None):
        """``generators``: the rows' own (:meth:`generator_for`), kept across a batch's changes; default new."""
        _check_samplings(samplings)
        self.samplings = tuple(samplings)
        self.device = torch.device(device)
        if generators is None:
            generators = [self.generator_for(s, self.device) for s in self.samplings]
        if len(generators) != len(self.samplings):
            raise GenerationError(f"generators: {len(generators)} for {len(self.samplings)} samplings")
        self.generators = list(generators)

    @staticmethod
    def generator_for(sampling: Sampling, device: torch.device) -> Optional[torch.Generator]:
        """The generator a row with ``sampling`` draws from (``None`` when it is greedy)."""
        return None if sampling.greedy else torch.Generator(device=device).manual_seed(sampling.seed)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """The chosen token of each row, ``[B]`` long on the logits' device."""
        _check_logits("logits", logits)
        if logits.shape[0] != len(self.samplings):
            raise GenerationError(f"logits: has {logits.shape[0]} rows, the chooser {len(self.samplings)} samplings")
        best = logits.argmax(dim=-1)
        if all(g is None for g in self.generators):
            return best
        if logits.device.type != self.device.type:
            raise GenerationError(f"logits: are on {logits.device}, the chooser's generators on {self.device}")
        # A row without a finite logit would give a nan softmax (which multinomial rejects, or worse
        # on a GPU): it draws from zeros instead (uniform), and the draw is replaced by argmax's 0.
        alive = torch.isfinite(logits.amax(dim=-1, keepdim=True))
        safe = torch.where(alive, logits.double(), torch.zeros((), dtype=torch.float64, device=logits.device))
        chosen = []
        for row, generator in enumerate(self.generators):
            if generator is None:
                chosen.append(best[row:row + 1])
                continue
            # One row at a time, with its own generator: the draw is the same in any batch.
            probs = torch.softmax(safe[row:row + 1], dim=-1)
            draw = torch.multinomial(probs, 1, generator=generator)[:, 0]
            chosen.append(torch.where(alive[row], draw, best[row:row + 1]))
        return torch.cat(chosen)
