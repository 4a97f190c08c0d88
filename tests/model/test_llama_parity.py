"""A public reference for our attention, RoPE, GQA and SwiGLU: Hugging Face's Llama.

Dense, pre-norm, RMSNorm, no QK-norm is exactly Llama's architecture; with the weights mapped by
``mot.interop.llama.mot_to_llama`` the logits must agree.
"""

import pytest
import torch

from mot.interop.llama import mot_to_llama
from mot.model import build_model

from tests.helpers import tiny_config

transformers = pytest.importorskip("transformers")


def llama_twin(model):
    """The ``LlamaForCausalLM`` that computes what ``model`` computes, in eager attention (the reference)."""
    hf_config, state = mot_to_llama(model)
    hf_config._attn_implementation = "eager"
    llama = transformers.LlamaForCausalLM(hf_config).eval()
    llama.load_state_dict(state, strict=True)
    return llama


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_dense_pre_norm_equals_hf_llama(kv_heads):
    config = tiny_config(towers={"text": "shared", "image": "shared"}, norm_placement="pre",
                         norm_type="rmsnorm", qk_norm=False, n_kv_heads=kv_heads, rope_theta=500.0,
                         n_layers=3, init_std=0.1)
    model = build_model(config).eval()
    for p in model.parameters():  # non-trivial norm weights, so the norms are really compared
        if p.dim() == 1:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    llama = llama_twin(model)
    tokens = torch.randint(0, config.vocab_size, (2, 37))
    modalities = torch.randint(0, 2, (2, 37))  # dense: modality ids do not change anything
    with torch.no_grad():
        ours = model(tokens, modalities).logits
        theirs = llama(input_ids=tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
