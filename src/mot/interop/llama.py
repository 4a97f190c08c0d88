"""Hugging Face Llama-family checkpoints <-> mot, both ways, exactly.

A dense, pre-norm, RMSNorm mot model without QK-norm is Llama's architecture: the same attention
(grouped-query, RoPE in the half-split layout, no biases), the same SwiGLU, the same norms. Only
the names differ, and mot fuses the Q, K and V projections of a tower into one ``qkv`` matrix
(rows: Q, then K, then V). So weights move between the two by renaming and concatenating, and
the logits agree to float rounding.

Reading is offline (no hub) and reads safetensors only: a directory of pickled weights
(``pytorch_model.bin``, ``*.pt``) is refused, never unpickled, since unpickling runs whatever
code the file names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..config import ConfigError, ModelConfig
from ..io import CheckpointError
from ..io.weights import CONFIG_FILE, WEIGHTS_FILE, load_weights_into
from ..model.transformer import MoTModel, build_model
from ..tokenizers.vocab import BASE_SPECIALS

#: the model types whose checkpoints are Llama's architecture (Mistral: without a sliding window)
LLAMA_FAMILY = ("llama", "mistral")
INDEX_FILE = "model.safetensors.index.json"
#: weight files mot refuses to read: they are pickles
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: tensors of older Llama checkpoints that hold no weights (RoPE frequencies, recomputed anyway)
_IGNORED_SUFFIX = "rotary_emb.inv_freq"


# ---------------------------------------------------------------------------------- reading --

def read_llama(directory: str | Path) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """The transformers config (a ``LlamaConfig`` or ``MistralConfig``) and the tensors of a Hugging
    Face Llama-family checkpoint directory: ``config.json`` and ``model.safetensors`` or the shards
    of ``model.safetensors.index.json``. Offline; the config is checked by :func:`check_llama_fits`
    before any weight is read.

    Missing or corrupt files are a :class:`~mot.io.CheckpointError` naming the file, a model mot
    cannot represent a :class:`~mot.config.ConfigError`."""
    directory = Path(directory)
    files = _safetensors_files(directory)
    hf_config = _read_config(directory)
    check_llama_fits(hf_config)
    state: Dict[str, torch.Tensor] = {}
    for path in files:
        state.update(_read_safetensors(path))
    return hf_config, state


def no_safetensors_error(directory: Path) -> CheckpointError:
    """The error for a ``directory`` without safetensors weights: if it holds pickled ones, it says that
    mot never reads them and how to convert them; else that the weights are missing."""
    pickled = sorted(path.name for path in directory.glob("*") if path.suffix in PICKLE_SUFFIXES)
    if pickled:
        return CheckpointError(
            f"{directory} holds only pickled weights ({', '.join(pickled[:3])}): mot never unpickles a file, "
            f"since unpickling runs whatever code it names. Convert them to safetensors where you trust them "
            f"(load the model with transformers, then save_pretrained(DIR), which writes model.safetensors)")
    return CheckpointError(f"{directory / WEIGHTS_FILE} does not exist (nor {directory / INDEX_FILE})")


def _safetensors_files(directory: Path) -> List[Path]:
    """The weight files of ``directory``: the shards its index names, or ``model.safetensors``."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise CheckpointError(f"{index} is unreadable ({type(error).__name__}: {error})") from None
        for shard in shards:
            if Path(shard).name != shard or not (directory / shard).is_file():
                raise CheckpointError(f"{index} names the shard {shard!r}, which is not a file of {directory}")
        return [directory / shard for shard in shards]
    if not (directory / WEIGHTS_FILE).is_file():
        raise no_safetensors_error(directory)
    return [directory / WEIGHTS_FILE]


def _read_config(directory: Path) -> Any:
    """``config.json`` as a transformers config, read offline; its model type must be a Llama's."""
    import transformers

    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a Hugging Face model directory")
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (ValueError, AttributeError) as error:
        raise CheckpointError(f"{path} is not a JSON object ({error})") from None
    _check_model_type(model_type, directory)
    try:
        return transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise CheckpointError(f"{path} is not a valid {model_type} config: {error}") from None


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is corrupt or truncated: {error}") from None


# ------------------------------------------------------------------------------- the configs --

def _where(hf_config: Any) -> str:
    return f"the Llama at {hf_config.name_or_path}" if hf_config.name_or_path else "the Llama config"


def _check_model_type(model_type: Any, where: Any) -> None:
    if model_type not in LLAMA_FAMILY:
        raise ConfigError(f"model_type={model_type!r} at {where}: mot reads Llama-family models only "
                          f"({', '.join(LLAMA_FAMILY)}); this architecture is not one mot can represent")


def _rope(hf_config: Any) -> Dict[str, Any]:
    """The RoPE settings: ``rope_parameters`` (transformers 5), else the older ``rope_scaling``/``rope_theta``."""
    parameters = dict(getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {})
    parameters.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    return parameters


def check_llama_fits(hf_config: Any) -> None:
    """Raise :class:`~mot.config.ConfigError`, naming the setting, unless a dense mot model can compute
    exactly what this Llama-family config computes (mot has plain RoPE, SwiGLU, no biases)."""
    where = _where(hf_config)
    _check_model_type(hf_config.model_type, hf_config.name_or_path or "this config")
    sliding = getattr(hf_config, "sliding_window", None)
    if sliding is not None:
        raise ConfigError(f"sliding_window={sliding!r} at {where}: mot attends to the whole sequence")
    heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads or hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    if head_dim * heads != hf_config.hidden_size:
        raise ConfigError(f"head_dim={head_dim} at {where}: mot's heads split the width, head_dim = "
                          f"hidden_size // num_attention_heads = {hf_config.hidden_size} // {heads}")
    rope = _rope(hf_config)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(f"rope_type={rope_type!r} (rope_parameters/rope_scaling) at {where}: mot has plain "
                          f"RoPE only (rope_type 'default')")
    for bias in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, bias, False):
            raise ConfigError(f"{bias}=True at {where}: mot's projections have no biases")
    if hf_config.hidden_act != "silu":
        raise ConfigError(f"hidden_act={hf_config.hidden_act!r} at {where}: mot's FFN is SwiGLU (silu)")
    if heads % kv_heads:
        raise ConfigError(f"num_key_value_heads={kv_heads} at {where}: must divide num_attention_heads={heads}")


def llama_model_fields(hf_config: Any) -> Dict[str, Any]:
    """The :class:`~mot.config.ModelConfig` fields of a dense mot model that computes what the Llama
    computes (all but the vocabulary and modalities); checked by :func:`check_llama_fits` first."""
    check_llama_fits(hf_config)
    return dict(d_model=hf_config.hidden_size, n_layers=hf_config.num_hidden_layers,
                n_heads=hf_config.num_attention_heads,
                n_kv_heads=hf_config.num_key_value_heads or hf_config.num_attention_heads,
                ffn_hidden=hf_config.intermediate_size, max_seq_len=hf_config.max_position_embeddings,
                rope_theta=float(_rope(hf_config)["rope_theta"]), norm_eps=float(hf_config.rms_norm_eps),
                norm_type="rmsnorm", norm_placement="pre", qk_norm=False)


#: ModelConfig field -> (its value as the model computes with it, the Llama setting it must equal)
_FIELD_VALUES = {
    "d_model": (lambda c: c.d_model, "hidden_size"),
    "n_layers": (lambda c: c.n_layers, "num_hidden_layers"),
    "n_heads": (lambda c: c.n_heads, "num_attention_heads"),
    "n_kv_heads": (lambda c: c.kv_heads, "num_key_value_heads"),
    "ffn_hidden": (lambda c: c.ffn_dim, "intermediate_size"),
    "rope_theta": (lambda c: c.rope_theta, "rope_theta"),
    "norm_eps": (lambda c: c.norm_eps, "rms_norm_eps"),
    "norm_type": (lambda c: c.norm_type, None),
    "norm_placement": (lambda c: c.norm_placement, None),
    "qk_norm": (lambda c: c.qk_norm, None),
}


def check_fits_model(hf_config: Any, model_config: ModelConfig) -> None:
    """Raise :class:`~mot.config.ConfigError` naming every field of ``model_config`` that keeps the Llama's
    weights from serving as one of its towers (the vocabulary and ``max_seq_len`` may differ)."""
    needed = llama_model_fields(hf_config)
    problems = []
    for field, (value_of, hf_name) in _FIELD_VALUES.items():
        if value_of(model_config) != needed[field]:
            shown = getattr(model_config, field)
            llama_side = f"has {hf_name}={needed[field]!r}" if hf_name else f"needs {field}={needed[field]!r}"
            derived = f" ({value_of(model_config)!r})" if shown != value_of(model_config) else ""
            problems.append(f"model.{field}={shown!r}{derived} but {_where(hf_config)} {llama_side}")
    if problems:
        raise ConfigError("; ".join(problems))


# ------------------------------------------------------------------------------- the weights --

def _layer_pairs(layer: int, group: str) -> List[Tuple[str, str]]:
    """(Llama name, mot name) of every tensor of one layer that maps one to one (all but Q, K, V)."""
    llama, mot = f"model.layers.{layer}.", f"blocks.{layer}."
    return [(llama + "self_attn.o_proj.weight", mot + f"attention.out.towers.{group}.weight"),
            (llama + "mlp.gate_proj.weight", mot + f"ffn.towers.{group}.gate.weight"),
            (llama + "mlp.up_proj.weight", mot + f"ffn.towers.{group}.up.weight"),
            (llama + "mlp.down_proj.weight", mot + f"ffn.towers.{group}.down.weight"),
            (llama + "input_layernorm.weight", mot + f"attention_norm.towers.{group}.weight"),
            (llama + "post_attention_layernorm.weight", mot + f"ffn_norm.towers.{group}.weight")]


def _qkv_names(layer: int) -> List[str]:
    return [f"model.layers.{layer}.self_attn.{name}_proj.weight" for name in "qkv"]


def llama_to_tower_state(hf_config: Any, llama_state: Dict[str, torch.Tensor],
                         group: str = "text") -> Dict[str, torch.Tensor]:
    """The Llama's tensors under the mot names of one dense tower group ``group``: ``embed.weight``,
    ``blocks.{i}.attention.qkv.towers.{group}.weight`` (Q, K, V concatenated), ..., ``head.weight``.

    The embedding and head keep the Llama's rows (``[llama_vocab, d_model]``), untouched. With
    ``tie_word_embeddings`` the Llama has one matrix for both; the head is then a copy of the
    embedding (mot's two are separate weights). Every tensor of the Llama must be used."""
    where = _where(hf_config)
    tied = bool(getattr(hf_config, "tie_word_embeddings", False))
    pairs = [("model.embed_tokens.weight", "embed.weight"),
             ("model.norm.weight", f"final_norm.towers.{group}.weight")]
    if not tied:
        pairs.append(("lm_head.weight", "head.weight"))
    layers = range(hf_config.num_hidden_layers)
    for layer in layers:
        pairs += _layer_pairs(layer, group)
    wanted = [name for name, _ in pairs] + [name for layer in layers for name in _qkv_names(layer)]
    missing = [name for name in wanted if name not in llama_state]
    if missing:
        raise CheckpointError(f"{where} lacks {len(missing)} tensors: {', '.join(missing[:5])}")
    known = set(wanted) | ({"lm_head.weight"} if tied else set())  # tied: lm_head, if saved, is the embedding
    unused = sorted(name for name in set(llama_state) - known if not name.endswith(_IGNORED_SUFFIX))
    if unused:
        raise CheckpointError(f"{where} has tensors a Llama of its config does not: {', '.join(unused[:5])}")
    state = {mot: llama_state[llama] for llama, mot in pairs}
    if tied:
        state["head.weight"] = llama_state["model.embed_tokens.weight"].clone()
    for layer in layers:
        state[f"blocks.{layer}.attention.qkv.towers.{group}.weight"] = torch.cat(
            [llama_state[name] for name in _qkv_names(layer)])
    return state


def llama_to_mot(directory: str | Path, config: Optional[ModelConfig] = None) -> MoTModel:
    """The Llama-family checkpoint in ``directory`` as a dense pre-norm mot model, in float32: its
    logits are the Llama's.

    ``config`` is the mot config to build; by default the modality ``text`` alone and the Llama's
    vocabulary. Given, it must be dense (one tower) and fit the Llama (:func:`check_fits_model`):
    :func:`mot.interop.hf_export.import_hf` passes the config a directory was exported from."""
    hf_config, llama_state = read_llama(directory)
    if config is None:
        config = ModelConfig(vocab_size=hf_config.vocab_size, modalities=["text"], **llama_model_fields(hf_config))
    elif len(config.tower_names) != 1:
        raise ConfigError(f"towers={config.tower_names}: the Llama at {directory} is one dense tower")
    check_fits_model(hf_config, config)
    model = build_model(config, device="meta").to_empty(device="cpu")
    load_weights_into(model, llama_to_tower_state(hf_config, llama_state, group=config.tower_names[0]), directory)
    return model


# -------------------------------------------------------------------------------- mot -> Llama --

def not_llama_reasons(model: MoTModel) -> List[str]:
    """What keeps ``model`` from being a Llama (empty when it is one)."""
    config = model.config
    reasons = []
    if len(config.tower_names) != 1:
        reasons.append(f"towers {config.tower_names} (a Llama has one)")
    for field, llama_value in (("norm_placement", "pre"), ("norm_type", "rmsnorm"), ("qk_norm", False)):
        if getattr(config, field) != llama_value:
            reasons.append(f"{field}={getattr(config, field)!r} (a Llama has {llama_value!r})")
    if config.moe.towers:
        reasons.append(f"moe.towers={config.moe.towers} (a Llama has no experts)")
    if config.latent.enabled:
        reasons.append(f"latent.modality={config.latent.modality!r} (a Llama has no continuous path)")
    if not isinstance(model.head, nn.Linear):
        reasons.append("an untied head (a Llama has one)")
    return reasons


def mot_to_llama(model: MoTModel) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """A ``transformers.LlamaConfig`` and the state dict of a ``LlamaForCausalLM`` that computes what
    ``model`` computes. ``model`` must be a Llama: one tower, pre-norm, RMSNorm, no QK-norm, no MoE,
    no latent path; else :class:`~mot.config.ConfigError` says what is not (export it with the
    MoT class, :mod:`mot.interop.hf_model`, instead). Special token ids are mot's: ``<pad>``,
    ``<bos>``, ``<eos>`` are the first ids of every mot vocabulary. The config also holds mot's own
    (key ``mot``, which transformers keeps and ignores), to rebuild the very model it came from."""
    import transformers

    reasons = not_llama_reasons(model)
    if reasons:
        raise ConfigError(f"this mot model is not a Llama: {'; '.join(reasons)}")
    config = model.config
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads, num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim, max_position_embeddings=config.max_seq_len, rms_norm_eps=config.norm_eps,
        # rope_theta for transformers 4, rope_parameters for 5 (which folds rope_theta into them)
        rope_theta=config.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        hidden_act="silu",
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, initializer_range=config.init_std,
        pad_token_id=BASE_SPECIALS.index("<pad>"), bos_token_id=BASE_SPECIALS.index("<bos>"),
        eos_token_id=BASE_SPECIALS.index("<eos>"), architectures=["LlamaForCausalLM"],
        dtype=str(model.embed.weight.dtype).removeprefix("torch."), mot=config.to_dict())
    return hf_config, _llama_state(model)


def _llama_state(model: MoTModel) -> Dict[str, torch.Tensor]:
    """The tensors of a Llama-shaped mot model under Llama's names (Q, K, V split apart)."""
    config, group = model.config, model.config.tower_names[0]
    mot_state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    state = {"model.embed_tokens.weight": mot_state["embed.weight"], "lm_head.weight": mot_state["head.weight"],
             "model.norm.weight": mot_state[f"final_norm.towers.{group}.weight"]}
    q_rows, kv_rows = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
    for layer in range(config.n_layers):
        state.update({llama: mot_state[mot] for llama, mot in _layer_pairs(layer, group)})
        qkv = mot_state[f"blocks.{layer}.attention.qkv.towers.{group}.weight"]
        # copies, not views: safetensors refuses to save tensors that share memory
        state.update(zip(_qkv_names(layer), (part.clone() for part in qkv.split([q_rows, kv_rows, kv_rows]))))
    return state
