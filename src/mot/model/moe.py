"""Mixture-of-Experts feed-forward networks (the paper's MoE-4x baseline, section 3.2.1).

Each expert is a SwiGLU FFN as wide as the dense one; the experts' weights are stacked so all
experts run in one batched matmul. With capacity factor 1, Expert-Choice processes on average one
expert per token, so its FLOPs per token equal the dense FFN's (plus the router's ``2*D*E``).

Decoding needs routing that is causal and reads nothing on the host; a module's ``causal`` switch
(set by ``MoTModel.causal_routing``) gives it: see :meth:`ExpertsFFN.causal_forward`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ExpertsFFN(nn.Module):
    """Router plus ``num_experts`` stacked SwiGLU experts; subclasses decide who goes where
    (:meth:`grouped_forward`, the training-time routing) unless ``causal`` is on."""

    #: route each token by itself (:meth:`causal_forward`); on only while decoding (``MoTModel.causal_routing``)
    causal: bool = False

    def __init__(self, dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.w_gate = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.w_up = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.w_down = nn.Parameter(torch.empty(num_experts, hidden, dim))

    def reset_parameters(self, std: float, residual_std: float) -> None:
        """Normal(0, std) weights; the experts' ``w_down``, which writes into the residual stream,
        Normal(0, residual_std). The router comes last: that order of draws fixes what a seed gives."""
        nn.init.normal_(self.w_gate, std=std)
        nn.init.normal_(self.w_up, std=std)
        nn.init.normal_(self.w_down, std=residual_std)
        nn.init.normal_(self.router.weight, std=std)

    def router_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, E]`` softmax over experts."""
        return self.router(x).softmax(dim=-1)

    def run_experts(self, x: torch.Tensor) -> torch.Tensor:
        """``x [E, C, D]``: row e of ``x`` goes through expert e."""
        hidden = F.silu(torch.bmm(x, self.w_gate)) * torch.bmm(x, self.w_up)
        return torch.bmm(hidden, self.w_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.causal_forward(x) if self.causal else self.grouped_forward(x)

    def grouped_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training-time routing: each expert runs on the tokens routed to it."""
        raise NotImplementedError

    def causal_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 token choice with no host read: each token goes to its router's top expert, times its gate.

        A token's output depends on that token alone, so it is causal and batch-independent, and every
        shape is fixed by ``len(x)``, so nothing waits on the device. The price: every expert runs on
        every token and the chosen output is gathered, ``num_experts`` times the FFN FLOPs of these
        tokens; fine while decoding (a few tokens per step), too much for training.
        """
        gate, expert = self.router_probs(x).max(dim=-1)  # [n]
        every = self.run_experts(x.expand(self.num_experts, *x.shape))  # [E, n, D]
        chosen = every.gather(0, expert.view(1, -1, 1).expand(1, *x.shape))[0]
        return chosen * gate[:, None]


class ExpertChoiceFFN(ExpertsFFN):
    """Expert-Choice routing (Zhou et al., 2022): each expert picks its top-``capacity`` tokens.

    Load is balanced by construction, but a token's expert depends on every other token of the
    batch, later ones included: it is not causal (the paper evaluates it with the same routing
    and notes the leak). Tokens no expert picks pass through the residual only.

    With ``causal`` on, the documented inference-time alternative (section 3.2.1) replaces it: the
    same router used as top-1 token choice (:meth:`ExpertsFFN.causal_forward`). Every token then gets
    exactly one expert, none is dropped, loads are no longer balanced, and the outputs differ from
    the training-time routing, the one the paper's evaluation used.
    """

    def __init__(self, dim: int, hidden: int, num_experts: int, capacity_factor: float):
        super().__init__(dim, hidden, num_experts)
        self.capacity_factor = capacity_factor

    def capacity(self, num_tokens: int) -> int:
        return min(num_tokens, math.ceil(num_tokens * self.capacity_factor / self.num_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gates and token indices, both ``[E, capacity]``; shapes depend only on ``len(x)``."""
        return self.router_probs(x).t().topk(self.capacity(x.shape[0]), dim=1)

    @property
    def token_wise(self) -> bool:
        """Whether a token's output depends on that token alone; if not, a shared copy must see all
        towers' tokens at once (``PerTower``), as training-time routing picks among all of them."""
        return self.causal

    def grouped_forward(self, x: torch.Tensor) -> torch.Tensor:
        gates, index = self.route(x)
        chosen = x.index_select(0, index.reshape(-1)).view(*index.shape, x.shape[-1])
        out = self.run_experts(chosen) * gates[..., None]
        return out.new_zeros(x.shape).index_add(0, index.reshape(-1), out.reshape(-1, x.shape[-1]))


class TokenChoiceFFN(ExpertsFFN):
    """Top-1 token-choice routing (Switch-style, no token dropped): each token picks its expert.

    A token's output depends on that token alone, so it is causal and usable for generation.
    Expert loads are data-dependent, so this path reads them on the host (one sync per layer);
    with ``causal`` on, :meth:`ExpertsFFN.causal_forward` computes the same outputs without that read.
    """

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate and expert index of each token, both ``[n]``."""
        return self.router_probs(x).max(dim=-1)

    def grouped_forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, expert = self.route(x)
        order = torch.sort(expert, stable=True).indices
        loads = torch.bincount(expert, minlength=self.num_experts).tolist()
        parts = x.index_select(0, order).split(loads)
        outputs = [self.expert_forward(e, part) for e, part in enumerate(parts)]
        out = torch.cat(outputs) * gate.index_select(0, order)[:, None]
        return torch.empty_like(out).index_copy(0, order, out)

    def expert_forward(self, e: int, x: torch.Tensor) -> torch.Tensor:
        return (F.silu(x @ self.w_gate[e]) * (x @ self.w_up[e])) @ self.w_down[e]
