"""torch.compile: the model compiles without graph breaks, matches eager, and a new batch layout
(other per-tower token counts) does not recompile it again and again (DESIGN.md invariant 3)."""

import pytest
import torch

from mot.model import build_model

from tests.helpers import random_batch, tiny_config


@pytest.fixture
def dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo
    torch._dynamo.reset()


def test_compiled_model_matches_eager_without_graph_breaks_or_recompiles(dynamo):
    model = build_model(tiny_config(modalities=["text", "image", "speech"], n_layers=1))
    compiled = torch.compile(model)
    layouts = set()
    for seed in range(4):
        tokens, modalities = random_batch(model.config, batch=2, length=24, seed=seed)
        plan = model.plan_for(modalities)
        layouts.add(plan.tower_counts)
        logits = compiled(tokens, modalities, plan=plan).logits
        logits.sum().backward()
        with torch.no_grad():
            assert torch.allclose(logits, model(tokens, modalities, plan=plan).logits, atol=1e-5, rtol=0)
    assert len(layouts) == 4
    assert not dynamo.utils.counters["graph_break"]
    # the first layout compiles a static graph, the second a dynamic one that serves every other
    assert dynamo.utils.counters["stats"]["unique_graphs"] <= 2


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))])
def test_compiled_gradients_match_eager(dynamo, device):
    """Every weight's gradient, compiled against eager: the forward alone (above) cannot see a
    compiler that drops the gradient below a tower merge, as torch 2.11 did (routing.py)."""
    torch.manual_seed(0)
    model = build_model(tiny_config(modalities=["text", "image", "speech"], n_layers=2), device=device)
    reference = build_model(model.config, device=device)
    reference.load_state_dict(model.state_dict())
    tokens, modalities = random_batch(model.config, batch=2, length=24, seed=0)
    tokens, modalities = tokens.to(device), modalities.to(device)
    plan = model.plan_for(modalities)
    for forward in (torch.compile(model), reference):
        forward(tokens, modalities, plan=plan).logits.square().mean().backward()
    for (name, compiled), eager in zip(model.named_parameters(), reference.parameters()):  # a dropped one is 100% off
        assert torch.allclose(compiled.grad, eager.grad, atol=1e-5, rtol=1e-3), name
        assert eager.grad.abs().sum() > 0, name
