"""Invariant 8 for numbers: every float field of every config must be a finite number.

The fields are found by introspection, so a float field added later is covered without touching
this file: every dataclass in ``mot`` that validates itself (has ``__post_init__``) is a config,
and each of its float fields, including those of nested sections (``TrainConfig.optim.lr``), must
refuse ``nan`` and both infinities with a ``ConfigError`` that names the field.
"""

import dataclasses
import importlib
import math
import pkgutil
import re
import typing

import pytest

import mot
from mot.config import ConfigError, ModelConfig, load_config
from mot.experiments.experiment import ExperimentConfig
from mot.runs.recipe import load_recipe

#: what a config needs beyond its defaults to be valid
BASES = {ExperimentConfig: dict(architectures={"dense": []}, reference="dense")}
BASE_OVERRIDES = {ExperimentConfig: ["architectures={dense: []}"]}
NOT_FINITE = [math.nan, math.inf, -math.inf]


def _configs():
    for info in pkgutil.walk_packages(mot.__path__, "mot."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value) and value.__module__ == info.name
                    and "__post_init__" in vars(value)):
                yield value


def _holds_float(hint) -> bool:
    return hint is float or any(_holds_float(arg) for arg in typing.get_args(hint))


def _float_fields(cls, prefix=""):
    """``(dotted path, type hint)`` of every float field of ``cls`` and of its nested sections."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            yield from _float_fields(hint, f"{prefix}{field.name}.")
        elif _holds_float(hint):
            yield prefix + field.name, hint


FIELDS = sorted({(cls, path, hint) for cls in _configs() for path, hint in _float_fields(cls)},
                key=lambda item: (item[0].__name__, item[1]))


def _with(config, path: str, value):
    """``config`` with the field at ``path`` set to ``value`` (each section rebuilt, so validated)."""
    name, _, rest = path.partition(".")
    if rest:
        return dataclasses.replace(config, **{name: _with(getattr(config, name), rest, value)})
    return dataclasses.replace(config, **{name: value})


def _bad(default, value):
    """``value`` in the shape of the field: a scalar, the first item of a tuple, a mapping's entry."""
    if isinstance(default, dict):
        return {"x": value}
    if isinstance(default, (tuple, list)):
        return type(default)([value, *default[1:]])
    return value


def _names(path: str) -> str:
    """The error must name the field: its name followed by ``=`` (possibly after a mapping key)."""
    return rf"(^|[\s.:]){re.escape(path.split('.')[-1])}(\.\w+)?="


def test_the_introspection_finds_the_known_float_fields():
    found = {f"{cls.__name__}.{path}" for cls, path, _ in FIELDS}
    assert {"ModelConfig.norm_eps", "ModelConfig.rope_theta", "ModelConfig.init_std", "ModelConfig.moe.capacity_factor",
            "TrainConfig.optim.lr", "TrainConfig.optim.betas", "TrainConfig.data.weights",
            "TrainConfig.diffusion.loss_weight", "TrainConfig.spike_skip.factor", "PrepareConfig.valid_fraction",
            "ExperimentConfig.smoothing", "ExperimentConfig.samples.cfg_scale", "ImageSampling.eta",
            "LogMelConfig.log_floor"} <= found


@pytest.mark.parametrize("cls, path, hint", FIELDS, ids=[f"{c.__name__}.{p}" for c, p, _ in FIELDS])
@pytest.mark.parametrize("value", NOT_FINITE, ids=str)
def test_every_float_field_refuses_nan_and_infinity(cls, path, hint, value):
    config = cls(**BASES.get(cls, {}))
    default = config
    for name in path.split("."):
        default = getattr(default, name)
    with pytest.raises(ConfigError, match=_names(path)):
        _with(config, path, _bad(default, value))


SCALARS = [(cls, path) for cls, path, hint in FIELDS if typing.get_origin(hint) in (None, typing.Union)]


@pytest.mark.parametrize("cls, path", SCALARS, ids=[f"{c.__name__}.{p}" for c, p in SCALARS])
@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_overrides_of_nan_and_infinity_are_refused(cls, path, text):
    with pytest.raises(ConfigError, match=_names(path)):
        load_config(cls, overrides=[*BASE_OVERRIDES.get(cls, []), f"{path}={text}"])


@pytest.mark.parametrize("override, field", [("model.norm_eps=nan", "norm_eps"), ("optim.lr=inf", "lr"),
                                             ("optim.betas=[nan,0.95]", "betas"), ("data.weights={a: inf}", "weights")])
def test_recipe_overrides_of_nan_and_infinity_are_refused(override, field):
    with pytest.raises(ConfigError, match=_names(field)):
        load_recipe(None, [override])


@pytest.mark.parametrize("section, field, text", [("model", "norm_eps", ".nan"), ("model", "rope_theta", ".inf"),
                                                  ("optim", "lr", ".inf"), ("diffusion", "loss_weight", "-.inf")])
def test_yaml_nan_and_infinity_are_refused(tmp_path, section, field, text):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"{section}:\n  {field}: {text}\n")
    with pytest.raises(ConfigError, match=_names(field)):
        load_recipe(recipe)


def test_finite_values_in_range_are_still_accepted():
    config = load_config(ModelConfig, overrides=["norm_eps=1e-6", "rope_theta=500000", "init_std=0.01"])
    assert (config.norm_eps, config.rope_theta, config.init_std) == (1e-6, 500000.0, 0.01)
    recipe = load_recipe(None, ["optim.lr=1e-3", "data.weights={a: 2, b: 0.5}", "spike_skip.factor=2.5"])
    assert recipe.optim.lr == 1e-3 and recipe.data.weights == {"a": 2.0, "b": 0.5}
