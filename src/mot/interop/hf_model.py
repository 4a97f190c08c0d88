"""Any mot model as a Hugging Face ``transformers`` model: :class:`MoTHFConfig` and :class:`MoTForCausalLM`.

A thin wrapper: ``MoTForCausalLM.model`` is the :class:`~mot.model.transformer.MoTModel` itself, and
the weights keep mot's names under ``model.`` (``model.blocks.0.ffn.towers.image.up.weight``).
Importing this module registers both classes with ``AutoConfig`` and ``AutoModelForCausalLM``
under the model type ``mot``.

The MoT routes each token by its modality, so the forward pass takes ``modality_ids`` next to
``input_ids``. When the config holds the vocabulary layout (``modality_sizes``, from the corpus the
model was trained on) they may be left out: each token's modality then follows from its id by the
layout's rule (:meth:`mot.tokenizers.vocab.VocabLayout.modality_of`).

``mot.interop.hf_export`` copies this file, as it is, into every exported MoT directory as
``modeling_mot.py``, for ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``.
That copy is imported by transformers from its module cache, outside the ``mot`` package, which
is why this file imports mot by absolute names only, and why mot must be installed wherever the
directory is loaded: the copy wraps the installed mot's model, it is no copy of the model code.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from mot.config import ModelConfig
from mot.model.inputs import InputError
from mot.model.transformer import MoTModel
from mot.tokenizers.vocab import VocabLayout

MODEL_TYPE = "mot"


class MoTHFConfig(PretrainedConfig):
    """The transformers config of a mot model: ``mot``, the :class:`~mot.config.ModelConfig` as a dict,
    and optionally ``modality_sizes``, the vocabulary layout that gives each token id its modality."""

    model_type = MODEL_TYPE

    #: ``ModelConfig.to_dict()``; ``None`` only in the blank instance transformers builds for defaults
    mot: Optional[Dict[str, Any]] = None
    #: ``VocabLayout.modality_sizes`` (ordered modality -> ids), or ``None`` without a layout
    modality_sizes: Optional[Dict[str, int]] = None

    def model_config(self) -> ModelConfig:
        """The mot config this transformers config holds (validated as any ModelConfig is)."""
        if self.mot is None:
            raise InputError("this MoTHFConfig holds no mot model config (its 'mot' key is missing)")
        return ModelConfig(**self.mot)

    def layout(self) -> Optional[VocabLayout]:
        """The vocabulary layout, checked against the model config; ``None`` without one."""
        return stored_layout(self.modality_sizes, self.model_config())


def stored_layout(sizes: Optional[Dict[str, int]], config: ModelConfig) -> Optional[VocabLayout]:
    """The vocabulary layout an exported ``config.json`` stores as ``modality_sizes`` (``None``:
    none), checked against the model's ``config``."""
    if not sizes:
        return None
    # The order of the modalities is the order of their ids, but transformers writes config.json
    # with sorted keys: the model's modality list, which the layout must match anyway, gives it.
    order = [m for m in config.modalities if m in sizes] + [m for m in sizes if m not in config.modalities]
    layout = VocabLayout({modality: sizes[modality] for modality in order})
    layout.check_model(config)
    return layout


class MoTForCausalLM(PreTrainedModel):
    """A mot model (any architecture: dense, MoT, MoE, ...) behind the transformers causal-LM interface.

    Tokens only: the continuous inputs of the Transfusion setting (latents, timesteps), document
    and span ids and the KV cache are those of ``self.model``, the MoTModel, called directly."""

    config_class = MoTHFConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: MoTHFConfig):
        super().__init__(config)
        self.model = MoTModel(config.model_config())
        self.layout = config.layout()
        if not any(parameter.is_meta for parameter in self.model.parameters()):
            # MoTModel drew its weights by mot's rule just now; transformers' generic initialisation
            # in post_init must not draw them again (it still initialises weights a checkpoint lacks).
            for parameter in self.model.parameters():
                parameter._is_hf_initialized = True
        self.post_init()

    def forward(self, input_ids: torch.Tensor, modality_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, position_ids: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, output_hidden_states: Optional[bool] = None,
                **loss_kwargs: Any) -> CausalLMOutput:
        """Logits ``[B, L, vocab]`` for ``input_ids [B, L]``; with ``labels``, also the loss of predicting
        ``labels[:, t + 1]`` from position ``t`` (shifted inside, as in every transformers causal LM,
        ``-100`` ignored; ``loss_kwargs`` go to transformers' loss function).

        ``modality_ids [B, L]`` route each token to its tower; without them the config's layout
        derives them from the ids. mot has no padding mask: an ``attention_mask`` must be all ones
        (pack or batch sequences of one length). ``position_ids`` are the rotary positions
        (default ``0..L-1``). ``output_hidden_states``: the residual stream after the embedding
        and after each block (before the final norm)."""
        modality_ids = self._modality_ids(input_ids, modality_ids)
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise InputError("attention_mask has zeros, but a mot model has no padding mask: pass sequences "
                             "of one length (or use mot's document_ids through MoTForCausalLM.model)")
        output = self.model(input_ids, modality_ids, positions=position_ids,
                            output_layer_states=bool(output_hidden_states))
        loss = None
        if labels is not None:
            loss = self.loss_function(output.logits, labels, vocab_size=self.model.config.vocab_size, **loss_kwargs)
        return CausalLMOutput(loss=loss, logits=output.logits, hidden_states=output.layer_states)

    def _modality_ids(self, input_ids: torch.Tensor, modality_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """The given ``modality_ids``, or those the layout gives ``input_ids`` (read on the host)."""
        if modality_ids is not None:
            return modality_ids
        if self.layout is None:
            raise InputError("modality_ids are required: this model's config has no vocabulary layout "
                             "(modality_sizes) to derive them from input_ids")
        table = self.layout.modality_of(input_ids.detach().cpu().numpy())
        return torch.from_numpy(table).to(input_ids.device)


def register_auto_classes() -> None:
    """Make ``AutoConfig`` and ``AutoModelForCausalLM`` know the model type ``mot`` (once per process)."""
    try:
        AutoConfig.register(MODEL_TYPE, MoTHFConfig)
    except ValueError:  # registered already: by an earlier import of this module (a reload)
        return
    AutoModelForCausalLM.register(MoTHFConfig, MoTForCausalLM, exist_ok=True)


# mot registers its own classes. The copy in an exported directory is registered by transformers,
# which loads it (trust_remote_code) and records the classes it loaded.
if __name__ == "mot.interop.hf_model":
    register_auto_classes()
