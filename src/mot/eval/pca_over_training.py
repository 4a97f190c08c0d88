"""The paper's appendix Figure 23: the PCA of Figure 2b at several points of training (4%, 24%,
50%, 100% of the steps) and several layers. The paper finds the modalities in distinct regions at
every checkpoint, early ones included; :func:`analyze_pca_over_training` draws the grid and puts
the separation (``pca.projection_separation``) of each checkpoint and layer in ``pca_over_training.json``.

The same batches and the same tokens are projected at every checkpoint. A fraction of training
names the kept checkpoint nearest to it (a run keeps its last few and every ``keep_every``-th):
the JSON and the figure say which step each one is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from ..config import ConfigError
from ..io.figures import save_figure
from ..runs.model import load_run_model, run_checkpoints
from .pca import (SEPARATION_METRIC, Projection, draw_projection, first_batches, hidden_states_by_modality,
                  layer_name, modality_colours, project, projection_separation)

#: the paper's checkpoints, as fractions of training
PAPER_FRACTIONS = (0.04, 0.24, 0.5, 1.0)


def parse_fractions(text: str) -> List[float]:
    """``"4%,24%,50%,100%"`` -> ``[0.04, 0.24, 0.5, 1.0]``; anything else is a :class:`ConfigError`."""
    fractions = []
    for part in text.split(","):
        try:
            value = float(part.strip().rstrip("%")) / 100
        except ValueError:
            raise ConfigError(f"--checkpoints {text}: {part!r} is not a percentage like 24%") from None
        if not 0 < value <= 1:
            raise ConfigError(f"--checkpoints {text}: {part!r} is not in (0%, 100%]")
        fractions.append(value)
    return fractions


def nearest_steps(saved: Sequence[int], total: int, fractions: Sequence[float]) -> Dict[float, int]:
    """The kept checkpoint nearest to each fraction of ``total`` steps (the earlier one on a tie)."""
    if not saved:
        raise ConfigError("the run has no checkpoint")
    return {f: min(sorted(saved), key=lambda step: abs(step - f * total)) for f in fractions}


def chosen_layers(layers: int, wanted: int = 4) -> List[int]:
    """Up to ``wanted`` of the states 1..``layers`` (after each block), first and last included,
    spread evenly (the paper: layers 1, 5, 17, 32 of 32)."""
    if layers <= wanted:
        return list(range(1, layers + 1))
    return sorted({round(1 + i * (layers - 1) / (wanted - 1)) for i in range(wanted)})


def analyze_pca_over_training(run_dir: str | Path, out_dir: str | Path, fractions: Sequence[float] = PAPER_FRACTIONS,
                              split: str = "valid", batches: int = 4, log=print) -> dict:
    """Figure 23 for a run: writes ``pca_over_training.png`` and ``.json`` to ``out_dir``, returns the JSON's content."""
    if batches < 1:
        raise ValueError(f"batches={batches}: expected at least 1")
    config, checkpoints = run_checkpoints(run_dir)
    steps = nearest_steps(checkpoints.steps(), config.steps, fractions)
    read = first_batches(config, split, batches)  # the same batches (and tokens) at every checkpoint
    layers = chosen_layers(config.model.n_layers)
    projections, separation = {}, {}  # by step: each checkpoint's PCA, fitted once
    for fraction, step in steps.items():
        if step in projections:
            continue
        _, model = load_run_model(run_dir, log, step)
        every = hidden_states_by_modality(model, read)
        projections[step] = project({layer: every[layer] for layer in layers})
        separation[step] = projection_separation(projections[step])
        log(f"step {step}: separation " + ", ".join(f"{layer_name(l)} {separation[step][l]:.2f}" for l in layers))
    result = {"run": str(run_dir), "split": split, "steps_total": config.steps, "separation_metric": SEPARATION_METRIC,
              "checkpoints": [{"fraction": f, "step": s, "separation": {layer_name(l): separation[s][l] for l in layers}}
                              for f, s in steps.items()]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _figure(projections, config.steps, out_dir / "pca_over_training.png",
            f"{Path(run_dir).name}: hidden states by modality over training ({split})")
    (out_dir / "pca_over_training.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _figure(projections: Dict[int, Dict[int, Projection]], total: int, out_png: Path, title: str) -> Path:
    """A row per checkpoint, a column per layer, each modality in its own colour in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(next(iter(projections.values())))
    colours = modality_colours(p for by_layer in projections.values() for p in by_layer.values())
    figure, axes = plt.subplots(len(projections), len(layers), figsize=(3.2 * len(layers), 3.0 * len(projections)),
                                squeeze=False)
    for row, (step, by_layer) in zip(axes, projections.items()):
        for axis, layer in zip(row, layers):
            draw_projection(axis, by_layer[layer], colours, f"step {step} ({step / total:.0%}), {layer_name(layer)}")
    axes[0][0].legend(fontsize=8, markerscale=3)
    figure.suptitle(title)
    return save_figure(figure, out_png)
