"""``MoTModel.causal_routing``: while decoding, every MoE FFN routes each token by itself (top-1 token
choice, no host sync), so a position's logits depend on no later token and no other row (issue 14)."""

import pytest
import torch
import torch.nn.functional as F

from mot.model import build_model
from mot.model.kv_cache import KVCache
from mot.model.moe import ExpertChoiceFFN, ExpertsFFN, TokenChoiceFFN

from tests.helpers import SYNCING_OPS, RecordOps, random_batch, tiny_config

SHARED = {"text": "shared", "image": "shared"}
DENSE_EC = dict(towers=SHARED, moe={"towers": ["shared"], "routing": "expert_choice", "num_experts": 4})
HYBRID_EC = dict(moe={"towers": ["text"], "routing": "expert_choice", "num_experts": 4})
HYBRID_TC = dict(moe={"towers": ["text"], "routing": "token_choice", "num_experts": 4})
CONFIGS = pytest.mark.parametrize("overrides", [DENSE_EC, HYBRID_EC, HYBRID_TC], ids=["dense-ec", "hybrid-ec",
                                                                                      "hybrid-tc"])


def moe_modules(model):
    return [module for module in model.modules() if isinstance(module, ExpertsFFN)]


def sharp_model(overrides, seed=0):
    """A tiny model whose routers have large weights, so a token's route turns on its neighbours under
    Expert-Choice (and differs between tokens under token choice): a leak would show."""
    torch.manual_seed(seed)
    model = build_model(tiny_config(**overrides))
    for module in moe_modules(model):
        torch.nn.init.normal_(module.router.weight, std=5.0)
    return model


def sharp_experts(cls, *args):
    torch.manual_seed(1)
    moe = cls(8, 12, 4, *args)
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return moe


@CONFIGS
def test_first_positions_do_not_depend_on_later_tokens(overrides):
    model = sharp_model(overrides)
    tokens, modalities = random_batch(model.config, batch=2, length=24, seed=3)
    changed_tokens, changed_modalities = tokens.clone(), modalities.clone()
    changed_tokens[:, 10:] = (changed_tokens[:, 10:] + 7) % model.config.vocab_size
    changed_modalities[:, 10:] = 1 - changed_modalities[:, 10:]  # later tokens also move to the other tower
    with torch.no_grad(), model.causal_routing():
        before = model(tokens, modalities).logits
        after = model(changed_tokens, changed_modalities).logits
    # not bitwise: the towers' matmuls have other row counts, hence other BLAS blockings
    torch.testing.assert_close(before[:, :10], after[:, :10], atol=1e-5, rtol=0)
    assert not torch.allclose(before[:, 10:], after[:, 10:], atol=1e-3)


@CONFIGS
def test_a_row_does_not_depend_on_the_other_rows(overrides):
    model = sharp_model(overrides)
    tokens, modalities = random_batch(model.config, batch=3, length=20, seed=4)
    with torch.no_grad(), model.causal_routing():
        together = model(tokens, modalities).logits
        for row in range(3):
            alone = model(tokens[row:row + 1], modalities[row:row + 1]).logits
            torch.testing.assert_close(together[row:row + 1], alone, atol=1e-5, rtol=0)


def test_token_choice_routes_as_its_training_forward():
    model = sharp_model(HYBRID_TC)
    tokens, modalities = random_batch(model.config, batch=2, length=24, seed=5)
    with torch.no_grad():
        grouped = model(tokens, modalities).logits
        with model.causal_routing():
            causal = model(tokens, modalities).logits
    torch.testing.assert_close(causal, grouped, atol=1e-5, rtol=0)
    moe = sharp_experts(TokenChoiceFFN)
    x = torch.randn(11, 8)
    torch.testing.assert_close(moe.causal_forward(x), moe.grouped_forward(x), atol=1e-5, rtol=0)


def test_causal_expert_choice_is_its_router_used_as_top1_token_choice():
    moe = sharp_experts(ExpertChoiceFFN, 1.0)
    x = torch.randn(9, 8)
    expected = []
    for token in x:
        probs = moe.router(token).softmax(-1)
        e = int(probs.argmax())
        hidden = F.silu(token @ moe.w_gate[e]) * (token @ moe.w_up[e])
        expected.append(probs[e] * (hidden @ moe.w_down[e]))
    moe.causal = True
    torch.testing.assert_close(moe(x), torch.stack(expected), atol=1e-5, rtol=0)
    assert not torch.allclose(moe.grouped_forward(x), moe(x), atol=1e-3)  # training-time routing differs


@CONFIGS
def test_forward_with_a_plan_reads_nothing_on_the_host(overrides):
    model = sharp_model(overrides)
    tokens, modalities = random_batch(model.config, batch=2, length=16, seed=6)
    plan = model.plan_for(modalities)
    recorder = RecordOps()
    with torch.no_grad(), model.causal_routing(), recorder:
        model(tokens, modalities, plan=plan)
    assert recorder.names, "the recorder saw no op"
    assert not SYNCING_OPS & set(recorder.names)
    assert not recorder.bool_indexing


@CONFIGS
def test_forward_runs_on_meta_tensors(overrides):
    """Meta tensors hold no values, so a forward that runs on them reads none on the host (``tolist``
    included, which the recorder does not see): the training-time token choice cannot."""
    model = build_model(tiny_config(**overrides), device="meta")
    tokens, modalities = random_batch(model.config, batch=2, length=16, seed=7)
    plan = build_model(model.config).plan_for(modalities).to("meta")
    tokens, modalities = tokens.to("meta"), modalities.to("meta")
    with model.causal_routing():
        assert model(tokens, modalities, plan=plan).logits.shape == (2, 16, model.config.vocab_size)
    if overrides is HYBRID_TC:
        with pytest.raises((NotImplementedError, RuntimeError)):
            model(tokens, modalities, plan=plan)


def test_the_switch_is_restored_and_training_routing_is_untouched():
    model = sharp_model(DENSE_EC)
    modules = moe_modules(model)
    tokens, modalities = random_batch(model.config, batch=2, length=16, seed=8)
    with torch.no_grad():
        before = model(tokens, modalities).logits
        with model.causal_routing():
            assert all(m.causal and m.token_wise for m in modules)
            with model.causal_routing():
                pass
            assert all(m.causal for m in modules)  # a nested exit restores the outer state
            model(tokens, modalities)
        assert not any(m.causal or m.token_wise for m in modules)
        with pytest.raises(KeyError), model.causal_routing():
            raise KeyError("inside")
        assert not any(m.causal for m in modules)
        assert torch.equal(model(tokens, modalities).logits, before)


@pytest.mark.parametrize("overrides", [HYBRID_TC, DENSE_EC], ids=["hybrid-tc", "dense-ec"])
def test_decoding_with_a_kv_cache_matches_one_forward(overrides):
    model = sharp_model(overrides)
    tokens, modalities = random_batch(model.config, batch=1, length=20, seed=9)
    cache = KVCache(model.config.n_layers)
    with torch.no_grad(), model.causal_routing():
        whole = model(tokens, modalities).logits
        steps = [model(tokens[:, :8], modalities[:, :8], cache=cache).logits]
        for i in range(8, 20):
            steps.append(model(tokens[:, i:i + 1], modalities[:, i:i + 1], cache=cache).logits)
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-4, rtol=0)
