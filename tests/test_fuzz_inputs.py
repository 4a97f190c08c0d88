"""Bad input on every path ``mot`` reads (configs, overrides, JSONL corpora, run files, images,
sampling options): each ends in one ``mot: error:`` line naming the field or file, a non-zero
exit, and no traceback. Parametrised cases for the kinds found by hand, then bounded fuzzing."""

from __future__ import annotations

import json
import math
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mot.cli import main
from mot.data.documents import Document, DocumentError
from mot.data.jsonl import read_jsonl
from mot.generate.transfusion import ImageSampling, SamplingError
from mot.runs.metrics import MetricsError, read_metrics
from mot.train.metrics import MetricsLogger

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "recipes" / "tiny" / "chameleon.yaml"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def short(value) -> str:
    """A test id for a long parameter: its start and its length."""
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} chars)"


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("MOT_DEBUG", raising=False)  # MOT_DEBUG=1 in the shell would re-raise


def fails_cleanly(capsys, argv, *named: str) -> str:
    """Run ``mot argv``: exit 2, exactly one ``mot: error:`` line, every string of ``named`` in
    the message, no traceback. Returns stderr."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == 2, err
    assert sum(line.startswith("mot: error:") for line in err.splitlines()) == 1, err
    for word in named:
        assert word in err, (word, err)
    return err


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A valid PNG of a few dozen bytes that declares ``side x side`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------- config files --

CONFIG_FILES = {  # name -> (contents, what the message names besides the file)
    "binary.yaml": (b"\xff\xfe\x00\x01bad", "UTF-8"),
    "list.yaml": (b"- 1\n- 2\n", ""),
    "scalar.yaml": (b"3\n", ""),
    "unknown.yaml": (b"bogus: 1\n", "bogus"),
    "wrong_type.yaml": (b"n_layers: abc\n", "n_layers"),
    "broken.yaml": (b"n_layers: [1\n", ""),
    "list_for_a_map.yaml": (b"towers: [1, 2]\n", ""),
    "deep.yaml": (b"n_layers: " + b"[" * 5000 + b"]" * 5000 + b"\n", ""),
    "huge_int.yaml": (b"n_layers: 1" + b"0" * 5000 + b"\n", ""),
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_bad_config_files(capsys, tmp_path, name):
    contents, named = CONFIG_FILES[name]
    path = tmp_path / name
    path.write_bytes(contents)
    fails_cleanly(capsys, ["config", "show", "--config", path], name, named)
    fails_cleanly(capsys, ["train", "--config", path, "--dry-run"], name, named)


def test_a_directory_as_a_config_file(capsys, tmp_path):
    (tmp_path / "model.yaml").mkdir()
    fails_cleanly(capsys, ["config", "show", "--config", tmp_path / "model.yaml"], "model.yaml' is a directory, not a file")


# ---------------------------------------------------------------------------- overrides --

@pytest.mark.parametrize("override, named", [
    ("=1", "'=1'"), (" =1", "key=value"), ("nokey", "'nokey'"), ("a.b.c=", "a.b.c"),
    ("model=[1", "model=[1"), ("towers={a:", "towers={a:"), ("n_layers=abc", "n_layers"),
    ("n_layers=1e999", "n_layers"), ("n_layers=[1]", "n_layers"), ("towers=[1,2]", "towers"),
    ("moe=1", "moe"), ("[=", "'[='"), ("n_layers=1" + "0" * 5000, "n_layers"), ("towers=" + "[" * 5000, "towers"),
], ids=short)
def test_bad_model_overrides(capsys, override, named):
    fails_cleanly(capsys, ["config", "show", "--config", "tiny-mot", override], named)


@pytest.mark.parametrize("override, named", [
    ("name=../x", "name="), ("name=a/b", "name="), ("name=", "name"), ("name=.", "name="), ("name=..", "name="),
    ("steps=abc", "steps"),
    ("steps=1e999", "steps"), ("steps=-1", "steps"), ("resume=abc", "resume"),
])
def test_bad_recipe_overrides(capsys, override, named):
    fails_cleanly(capsys, ["train", "--config", RECIPE, override, "--dry-run"], named)


def test_a_key_given_twice_takes_the_last_value(capsys):
    # experiments compose override lists (shared, then an architecture's own), so this is no error
    assert main(["config", "show", "--config", "tiny-mot", "n_layers=2", "n_layers=3"]) == 0
    assert "n_layers: 3" in capsys.readouterr().out
    fails_cleanly(capsys, ["config", "show", "--config", "tiny-mot", "n_layers=2", "n_layers=x"], "'n_layers=x'")


# -------------------------------------------------------------------------- JSONL corpora --

def prepare_jsonl(tmp_path, line: str) -> list:
    """``mot prepare`` argv for a corpus of one good document and then ``line`` (no built-in sources)."""
    corpus = tmp_path / "mine.jsonl"
    good = {"id": "good", "segments": [{"type": "text", "text": "a grey picture"}]}
    corpus.write_text(json.dumps(good) + "\n" + line + "\n")
    config = tmp_path / "data.yaml"
    config.write_text(f"shapescenes: 0\ndigits: 0\ntext_documents: 0\nvq_steps: 1\njsonl: [{corpus}]\n")
    return ["prepare", "--config", config, f"out_dir={tmp_path / 'out'}"]


@pytest.mark.parametrize("line, named", [
    ('{"id": "deep", "segments": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ('{"id": "huge", "segments": [{"type": "image", "array": [[' + "9" * 5000 + "]]}]}", "4300 digits"),
    ('{"id": "odd", "segments": [{"type": ["image"]}]}', "unknown segment type"),
], ids=["deep", "huge_int", "list_type"])
def test_a_bad_document_names_its_line(capsys, tmp_path, line, named):
    fails_cleanly(capsys, prepare_jsonl(tmp_path, line), "mine.jsonl, line 2", named)


def test_a_decompression_bomb_in_a_corpus(capsys, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png", side=10_000)  # past Pillow's limit, where it only warns
    line = json.dumps({"id": "bomb", "segments": [{"type": "image", "path": str(bomb)}]})
    fails_cleanly(capsys, prepare_jsonl(tmp_path, line), "mine.jsonl, line 2", "bomb.png", "exceeds limit")


# ------------------------------------------------------------------------------ run files --

def record(step: int) -> dict:
    return {"step": step, "kind": "train", "loss": 5.0 / step, "loss_per_modality": {"text": 5.0 / step},
            "grad_norm": 1.0, "lr": 1e-3, "seconds": 0.1}


@pytest.fixture
def bare_run(tmp_path):
    """A run directory as training leaves it before its first checkpoint: config.yaml and metrics."""
    from mot.runs.run_dir import prepare_run_dir
    from tests.helpers import small_transfusion_recipe

    run = prepare_run_dir(small_transfusion_recipe(tmp_path / "corpus", tmp_path / "runs"))
    (run / "metrics.jsonl").write_text("".join(json.dumps(record(s)) + "\n" for s in (1, 2, 3)))
    return run


def test_a_partial_last_metrics_line_is_dropped(capsys, bare_run, tmp_path):
    with open(bare_run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "kind": "tr')  # killed in the middle of a write
    assert [r["step"] for r in read_metrics(bare_run)] == [1, 2, 3]
    assert main(["analyze", "losses", str(bare_run), "--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").is_file()
    MetricsLogger(bare_run, 10, resume_step=2, tensorboard=False, interactive=False)  # a resumption
    assert "metrics.jsonl:4: dropped a partial last line" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(bare_run)] == [1, 2]


@pytest.mark.parametrize("bad", ["{bad json", "[1, 2]", '{"kind": "train"}', "\xff", "[" * 50_000], ids=short)
def test_a_bad_metrics_line_before_the_last_names_file_and_line(capsys, bare_run, tmp_path, bad):
    lines = (bare_run / "metrics.jsonl").read_text().splitlines()
    lines[1] = bad
    (bare_run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    fails_cleanly(capsys, ["analyze", "losses", bare_run, "--out", tmp_path / "loss.png"], "metrics.jsonl:2")
    with pytest.raises(MetricsError, match="metrics.jsonl:2"):
        MetricsLogger(bare_run, 10, resume_step=3, tensorboard=False, interactive=False)


def test_plot_refuses_an_output_it_cannot_write_and_runs_without_metrics(capsys, bare_run, tmp_path):
    fails_cleanly(capsys, ["analyze", "losses", bare_run, "--out", tmp_path / "loss.yaml"], "loss.yaml", ".png")
    (bare_run / "metrics.jsonl").write_text("")
    fails_cleanly(capsys, ["analyze", "losses", bare_run, "--out", tmp_path / "loss.png"], "no metrics")


@pytest.mark.parametrize("argv", [["export", "{run}", "--out", "{tmp}/out"], ["generate", "{run}", "--prompt", "a star"],
                                  ["analyze", "pca", "{run}"], ["analyze", "caption-use", "{run}"]])
def test_a_run_without_checkpoints(capsys, bare_run, tmp_path, argv):
    argv = [a.format(run=bare_run, tmp=tmp_path) for a in argv]
    fails_cleanly(capsys, argv, "no complete checkpoint")


@pytest.mark.parametrize("contents", [b"\xff\xfe", b"a: [1\n", b"- 1\n", b"bogus: 1\n"])
@pytest.mark.parametrize("verb", [["export", "{run}", "--out", "{tmp}/out"], ["generate", "{run}", "--prompt", "a star"]])
def test_a_damaged_run_config(capsys, bare_run, tmp_path, contents, verb):
    (bare_run / "config.yaml").write_bytes(contents)
    fails_cleanly(capsys, [a.format(run=bare_run, tmp=tmp_path) for a in verb], "config.yaml")


@pytest.mark.parametrize("contents", [b"\xff\xfe", b"a: [1\n", b"- 1\n", b""])
def test_resuming_into_a_damaged_run_config(capsys, small_corpus, tmp_path, contents):
    from mot.config import save_config
    from tests.helpers import small_recipe

    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_bytes(contents)
    recipe = tmp_path / "recipe.yaml"
    save_config(small_recipe(small_corpus, tmp_path / "runs"), recipe)
    fails_cleanly(capsys, ["train", "--config", recipe], f"{run}/config.yaml is damaged")


@pytest.mark.parametrize("contents", [b"{bad", b"[1]", b"\xff", b"[" * 50_000], ids=short)
def test_a_damaged_environment_file_does_not_cost_the_report(tmp_path, contents):
    from mot.runs.run_dir import read_environment

    (tmp_path / "environment.json").write_bytes(contents)
    assert "environment.json" in read_environment(tmp_path)["damaged"]
    (tmp_path / "environment.json").write_text('{"device": "cpu"}')
    assert read_environment(tmp_path) == {"device": "cpu"}
    assert read_environment(tmp_path / "absent") == {}


def test_a_damaged_checkpoint_marker(capsys, transfusion_run, tmp_path):
    run = Path(shutil.copytree(transfusion_run, tmp_path / "run"))
    for marker in run.glob("checkpoints/*/complete.json"):
        marker.write_bytes(b"{bad")
    fails_cleanly(capsys, ["export", run, "--out", tmp_path / "out"], "no complete checkpoint")


@pytest.mark.parametrize("contents", [b"{bad", b"[1]", b"{}", b"\xff"])
def test_a_damaged_corpus_manifest(capsys, tmp_path, contents):
    (tmp_path / "manifest.json").write_bytes(contents)
    fails_cleanly(capsys, ["train", "--config", RECIPE, f"data.corpus={tmp_path}", f"out_dir={tmp_path}"],
                  "manifest.json")


# ------------------------------------------------------------------ sampling and images --

@pytest.mark.parametrize("options, named", [
    (["--cfg-scale", "-1"], "cfg_scale"), (["--cfg-scale", "nan"], "cfg_scale"), (["--cfg-scale", "inf"], "cfg_scale"),
    (["--temperature", "-1"], "temperature"), (["--temperature", "nan"], "temperature"),
    (["--method", "rk4"], "method"), (["--seed", "-1"], "seed"), (["--seed", str(2**64)], "seed"),
    (["--prompt", ""], "--prompt ''"), (["--prompt", "  "], "--prompt"),
])
def test_bad_sampling_options_are_refused_before_the_model_loads(capsys, tmp_path, options, named):
    fails_cleanly(capsys, ["generate", tmp_path / "no-run", "--prompt", "a star", *options], named)


def test_sampling_options_the_run_refuses(capsys, transfusion_run, tmp_path):
    fails_cleanly(capsys, ["generate", transfusion_run, "--prompt", "a star", "--denoising-steps", "5000"],
                  "steps=5000", "1000 diffusion steps")
    for side in (10_000, 30_000):  # past Pillow's limit, where it warns, and past twice it, where it raises
        bomb = bomb_png(tmp_path / f"bomb{side}.png", side)
        fails_cleanly(capsys, ["generate", transfusion_run, "--caption", bomb], f"--caption {bomb}", "exceeds limit")
    fails_cleanly(capsys, ["generate", transfusion_run, "--caption", tmp_path], f"--caption {tmp_path}")


def test_the_python_api_refuses_what_the_cli_refuses(transfusion_run):
    from mot.generate.pipeline import TransfusionPipeline

    pipeline = TransfusionPipeline.from_run(transfusion_run, log=lambda _: None)
    with pytest.raises(SamplingError, match=r"prompts\[1\]=''"):
        pipeline.text_to_image(["a star", ""], ImageSampling(steps=1))
    with pytest.raises(SamplingError, match="steps=1001"):
        pipeline.sampler.text_to_image([[]], ImageSampling(steps=1001))
    latents = pipeline.vae.encode(pipeline.reconstruct(pipeline.text_to_image(["a star"], ImageSampling(steps=1))))
    for bad in (dict(temperature=math.nan), dict(temperature=-1.0), dict(seed=-1), dict(max_new_tokens=0)):
        with pytest.raises(SamplingError, match=next(iter(bad))):
            pipeline.sampler.image_to_text(latents, **bad)
    # a tiny temperature is all but greedy; dividing the logits by it must not overflow into nan
    assert len(pipeline.sampler.image_to_text(latents, max_new_tokens=2, temperature=1e-300)) == 1


# ---------------------------------------------------------------------------------- fuzz --

OVERRIDE_KEYS = ["n_layers", "d_model", "towers", "towers.text", "moe.towers", "moe.num_experts", "untied",
                 "norm_eps", "latent.patch_size", "modalities", "name", "", "a.b"]


#: the characters YAML, OmegaConf's dotted keys and its ${...} interpolation give a meaning to
_SYNTAX = st.text(alphabet="${}[]=.:,'\"\\ #&*!|>-ab01e", max_size=20)


@FUZZ
@given(key=st.sampled_from(OVERRIDE_KEYS) | st.text(max_size=12) | _SYNTAX,
       value=st.text(max_size=30) | _SYNTAX)
def test_fuzz_overrides(capsys, key, value):
    override = f"{key}={value}"
    if override.startswith("-"):  # argparse's option, not an override
        return
    code = main(["config", "show", "--config", "tiny-mot", override])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, (override, err)
    assert code == 0 or sum(line.startswith("mot: error:") for line in err.splitlines()) == 1, err


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=20)
_segment = st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "speech", "video"]) | _json},
                                 optional={"text": _json, "path": _json, "array": _json, "speaker": _json})
_document = st.fixed_dictionaries({"id": st.text(max_size=6) | _json,
                                   "segments": st.lists(_segment, max_size=3) | _json}, optional={"meta": _json})
_line = (_document.map(lambda d: json.dumps(d).encode()) | _json.map(lambda v: json.dumps(v).encode())
         | st.binary(max_size=40).filter(lambda b: b"\n" not in b))


@FUZZ
@given(lines=st.lists(_line, min_size=1, max_size=4))
def test_fuzz_jsonl_documents(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    reader = read_jsonl(path, skip_bad=True)
    documents = list(reader)  # every bad line is a DocumentError, counted; nothing else escapes
    assert all(isinstance(d, Document) for d in documents)
    assert reader.report.documents + reader.report.skipped_total == sum(bool(line.strip()) for line in lines)
    try:
        list(read_jsonl(path))
    except DocumentError as error:
        assert "fuzz.jsonl, line" in str(error)


@FUZZ
@given(contents=_json.map(lambda v: json.dumps({"n_layers": v}).encode()) | _SYNTAX.map(str.encode)
       | st.binary(max_size=60))
def test_fuzz_config_files(capsys, tmp_path, contents):
    path = tmp_path / "model.yaml"
    path.write_bytes(contents)
    code = main(["config", "show", "--config", str(path)])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, (contents, err)


_MAGIC = st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b""])


@FUZZ
@given(data=st.tuples(_MAGIC, st.binary(max_size=80)).map(b"".join))
def test_fuzz_image_files(tmp_path, data):
    from mot.config import ConfigError
    from mot.data.document_files import check_files, load_image
    from mot.data.documents import ImageSegment
    from mot.generate.image_files import read_image

    path = tmp_path / "image.png"
    path.write_bytes(data)
    try:
        assert read_image(str(path), 8).shape == (8, 8, 3)
    except ConfigError as error:
        assert f"--caption {path}" in str(error)
    segment = ImageSegment(path=str(path))
    for read in (lambda: check_files(Document("x", [segment])), lambda: load_image(segment, size=8)):
        try:
            read()
        except DocumentError as error:
            assert "image.png" in str(error)


_number = st.integers(-3, 2**65) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4) | st.none()


@FUZZ
@given(steps=_number, method=st.sampled_from(["ddpm", "ddim", "euler", ""]), cfg_scale=_number, eta=_number,
       seed=_number, clip_latents=_number)
def test_fuzz_image_sampling(steps, method, cfg_scale, eta, seed, clip_latents):
    try:
        ImageSampling(steps, method, cfg_scale, eta, seed, clip_latents)
    except SamplingError:
        return


@FUZZ
@given(options=st.lists(st.sampled_from(["--denoising-steps", "--cfg-scale", "--temperature", "--seed", "--method",
                                         "--per-prompt"]).flatmap(lambda o: st.tuples(st.just(o), st.text(max_size=8))),
                        max_size=3))
def test_fuzz_generate_options(capsys, tmp_path, options):
    argv = ["generate", str(tmp_path / "no-run"), "--prompt", "a star", *(f"{o}={v}" for o, v in options)]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusal of a value its type cannot read
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "internal error" not in err, (argv, err)
