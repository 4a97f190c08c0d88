"""The paper's Figure 2b: PCA of a trained model's hidden states, layer by layer, coloured by
modality. The paper finds that a dense model puts each modality in its own region of the
feature space, the observation that motivates giving each modality its own weights.

Layer 0 is the token embeddings, layer ``i`` the residual stream after block ``i``.
:func:`modality_separation` puts a number on what the figure shows, for reports to quote.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np
import torch

from ..data.packing import PackedBatch
from ..data.settings import open_corpus
from ..io.figures import save_figure
from ..model.transformer import MoTModel
from ..runs.model import load_run_model

#: what :func:`modality_separation` measures, as ``pca.json`` states it
SEPARATION_METRIC = ("balanced accuracy of a logistic regression predicting the modality from the 2 PCA "
                     "components, 5-fold cross-validated (chance: 1 / modalities; 1: fully separable)")


def hidden_states_by_modality(model: MoTModel, batches: Iterable[PackedBatch], max_tokens_per_modality: int = 2000,
                              seed: int = 0) -> Dict[int, Dict[str, np.ndarray]]:
    """``{layer: {modality: [n, D] float32 states}}`` of the non-padding tokens of ``batches``.

    At most ``max_tokens_per_modality`` tokens of each modality, drawn without replacement by a
    ``seed``-ed generator; the same tokens at every layer. Modalities absent from the batches are
    absent from the result. The batches must be on the model's device.
    """
    if max_tokens_per_modality < 1:
        raise ValueError(f"max_tokens_per_modality={max_tokens_per_modality}: expected at least 1")
    batches = list(batches)
    if not batches:
        raise ValueError("no batches to take hidden states from")
    modalities = list(model.config.modalities)
    real = [batch.document_ids >= 0 for batch in batches]  # padding has document id -1
    # [tokens] modality of every real token, in batch then row-major order (the order of state[mask])
    kinds = np.concatenate([b.modality_ids[mask].cpu().numpy() for b, mask in zip(batches, real)])
    if not kinds.size:
        raise ValueError("the batches hold only padding")
    # Choose the tokens from the metadata before any forward pass, so that only the chosen
    # tokens' states are kept: every layer's states of every token do not fit in memory for a
    # large model.
    rng = np.random.default_rng(seed)
    chosen = np.zeros(kinds.size, dtype=bool)
    for index in range(len(modalities)):
        where = np.flatnonzero(kinds == index)
        if where.size > max_tokens_per_modality:
            where = rng.choice(where, max_tokens_per_modality, replace=False)
        chosen[where] = True
    layers: Dict[int, list] = {}
    start = 0
    with torch.no_grad():
        for batch, mask in zip(batches, real):
            count = int(mask.sum())
            keep = torch.from_numpy(chosen[start:start + count]).to(mask.device)
            start += count
            if not keep.any():
                continue
            states = model(**batch.model_inputs(), output_layer_states=True).layer_states
            for layer, state in enumerate(states):  # state [B, L, D]
                layers.setdefault(layer, []).append(state[mask][keep].float().cpu().numpy())
    kept = kinds[chosen]
    present = [(index, name) for index, name in enumerate(modalities) if (kept == index).any()]
    result = {}
    for layer, parts in layers.items():
        stacked = np.concatenate(parts)  # [chosen tokens, D]
        result[layer] = {name: stacked[kept == index] for index, name in present}
    return result


@dataclass(frozen=True)
class Projection:
    """One layer's states on its first two principal components."""

    points: Dict[str, np.ndarray]  # modality -> [n, 2]
    explained_variance: Tuple[float, float]  # fraction of the variance along each component


def project(states: Dict[int, Dict[str, np.ndarray]]) -> Dict[int, Projection]:
    """Per layer, PCA(2) fitted on all modalities together (so they share the axes) and applied to each."""
    from sklearn.decomposition import PCA

    projections = {}
    for layer, by_modality in states.items():
        pca = PCA(n_components=2, random_state=0).fit(np.concatenate(list(by_modality.values())))
        ratio = pca.explained_variance_ratio_
        projections[layer] = Projection({m: pca.transform(x) for m, x in by_modality.items()},
                                        (float(ratio[0]), float(ratio[1])))
    return projections


def modality_separation(states: Dict[int, Dict[str, np.ndarray]]) -> Dict[int, float]:
    """``{layer: separation}`` of the states (:func:`projection_separation` of their :func:`project`)."""
    return projection_separation(project(states))


def projection_separation(projections: Dict[int, Projection]) -> Dict[int, float]:
    """``{layer: separation}``: see :data:`SEPARATION_METRIC`.

    Measured on the 2 components the figure shows, so the number describes the figure, and
    cross-validated, so a probe that memorises points scores chance on identical distributions.
    Balanced accuracy keeps chance at 1 / modalities however unequal the token counts.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    separation = {}
    for layer, projection in projections.items():
        counts = {m: len(p) for m, p in projection.points.items()}
        if len(counts) < 2 or min(counts.values()) < 2:
            raise ValueError(f"layer {layer}: tokens per modality {counts}; separation needs at least 2 "
                             f"modalities with at least 2 tokens each")
        points = np.concatenate(list(projection.points.values()))
        labels = np.concatenate([[i] * n for i, n in enumerate(counts.values())])
        folds = StratifiedKFold(min(5, min(counts.values())), shuffle=True, random_state=0)
        probe = make_pipeline(StandardScaler(), LogisticRegression())
        separation[layer] = float(cross_val_score(probe, points, labels, cv=folds, scoring="balanced_accuracy").mean())
    return separation


def first_batches(config, split: str, batches: int) -> list:
    """The first ``batches`` batches of ``split`` a run's loader gives (its validation reads these)."""
    data = config.data
    loader = open_corpus(data.corpus).loader(data.setting, split, seq_len=data.seq_len, batch_rows=data.batch_rows,
                                             modality_tower_index=config.model.modality_tower_index,
                                             seed=config.seed, weights=data.weights,
                                             latent_patch_size=config.model.latent.patch_size)
    return [next(loader) for _ in range(batches)]


def layer_name(layer: int) -> str:
    """``embeddings`` for layer 0, else ``layer i``."""
    return "embeddings" if layer == 0 else f"layer {layer}"


def modality_colours(projections: Iterable[Projection]) -> Dict[str, str]:
    """A colour per modality, the same in every panel of a figure."""
    modalities = dict.fromkeys(m for projection in projections for m in projection.points)
    return {m: f"C{i}" for i, m in enumerate(modalities)}


def draw_projection(axis, projection: Projection, colours: Dict[str, str], title: str) -> None:
    """One panel: each modality's points in its colour, no ticks (the axes are PCA's)."""
    for modality, points in projection.points.items():
        axis.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, color=colours[modality], label=modality)
    axis.set_title(title, fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


def pca_figure(states: Dict[int, Dict[str, np.ndarray]], out_png: str | Path, title: str) -> Path:
    """One panel per layer (a grid, 4 wide), each modality's points in its own colour; returns ``out_png``."""
    return projection_figure(project(states), out_png, title)


def projection_figure(projections: Dict[int, Projection], out_png: str | Path, title: str) -> Path:
    """:func:`pca_figure` of projections made already."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = modality_colours(projections.values())
    columns = min(4, len(projections))
    rows = math.ceil(len(projections) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(projections):]:
        axis.axis("off")
    for axis, (layer, projection) in zip(axes.flat, sorted(projections.items())):
        first, second = projection.explained_variance
        draw_projection(axis, projection, colours, f"{layer_name(layer)} (PC1 {first:.0%}, PC2 {second:.0%})")
    axes.flat[0].legend(fontsize=8, markerscale=3)
    figure.suptitle(title)
    return save_figure(figure, out_png)


def analyze_pca(run_dir: str | Path, out_dir: str | Path, split: str = "valid", batches: int = 4,
                log=print) -> dict:
    """Figure 2b for a run's newest checkpoint on ``batches`` batches of ``split``: writes ``pca.png``
    and ``pca.json`` to ``out_dir`` and returns what ``pca.json`` holds. ``log`` gets the checkpoint
    loaded and those passed over."""
    if batches < 1:
        raise ValueError(f"batches={batches}: expected at least 1")
    config, model = load_run_model(run_dir, log)
    states = hidden_states_by_modality(model, first_batches(config, split, batches))
    projections = project(states)  # fitted once: for the numbers and the figure
    separation = projection_separation(projections)
    result = {
        "run": str(run_dir),
        "split": split,
        "tokens": {m: len(x) for m, x in states[0].items()},
        "separation_metric": SEPARATION_METRIC,
        "layers": [{"layer": layer, "name": layer_name(layer), "separation": separation[layer],
                    "explained_variance": list(projections[layer].explained_variance)}
                   for layer in sorted(states)],
    }
    out_dir = Path(out_dir)
    projection_figure(projections, out_dir / "pca.png", f"{Path(run_dir).name}: hidden states by modality ({split})")
    (out_dir / "pca.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
