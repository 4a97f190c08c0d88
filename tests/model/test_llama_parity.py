"""A public reference for our attention, RoPE, GQA and SwiGLU: Hugging Face's Llama.

Dense, pre-norm, RMSNorm, no QK-norm is exactly Llama's architecture; with copied weights the
logits must agree.
"""

import pytest
import torch

from mot.model import build_model

from tests.helpers import tiny_config

transformers = pytest.importorskip("transformers")


def llama_twin(config):
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.kv_heads, max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
        rope_theta=config.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
    )
    hf_config._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(hf_config).eval()


def copy_into_llama(model, llama) -> None:
    q_size = model.config.n_heads * model.config.head_dim
    kv_size = model.config.kv_heads * model.config.head_dim
    tower = model.config.tower_names[0]
    state = {"model.embed_tokens.weight": model.embed.weight, "lm_head.weight": model.head.weight,
             "model.norm.weight": model.final_norm.towers[tower].weight}
    for i, block in enumerate(model.blocks):
        q, k, v = block.attention.qkv.towers[tower].weight.split([q_size, kv_size, kv_size])
        ffn = block.ffn.towers[tower]
        prefix = f"model.layers.{i}."
        state.update({
            prefix + "self_attn.q_proj.weight": q, prefix + "self_attn.k_proj.weight": k,
            prefix + "self_attn.v_proj.weight": v,
            prefix + "self_attn.o_proj.weight": block.attention.out.towers[tower].weight,
            prefix + "mlp.gate_proj.weight": ffn.gate.weight, prefix + "mlp.up_proj.weight": ffn.up.weight,
            prefix + "mlp.down_proj.weight": ffn.down.weight,
            prefix + "input_layernorm.weight": block.attention_norm.towers[tower].weight,
            prefix + "post_attention_layernorm.weight": block.ffn_norm.towers[tower].weight,
        })
    missing, unexpected = llama.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False)
    assert not unexpected and all("rotary" in name for name in missing)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_dense_pre_norm_equals_hf_llama(kv_heads):
    config = tiny_config(towers={"text": "shared", "image": "shared"}, norm_placement="pre",
                         norm_type="rmsnorm", qk_norm=False, n_kv_heads=kv_heads, rope_theta=500.0,
                         n_layers=3, init_std=0.1)
    model = build_model(config).eval()
    for p in model.parameters():  # non-trivial norm weights, so the norms are really compared
        if p.dim() == 1:
            torch.nn.init.uniform_(p, 0.5, 1.5)
    llama = llama_twin(config)
    copy_into_llama(model, llama)
    tokens = torch.randint(0, config.vocab_size, (2, 37))
    modalities = torch.randint(0, 2, (2, 37))  # dense: modality ids do not change anything
    with torch.no_grad():
        ours = model(tokens, modalities).logits
        theirs = llama(input_ids=tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
