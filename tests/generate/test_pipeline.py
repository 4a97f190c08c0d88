"""The Transfusion pipeline of a trained run and `mot generate`: PNGs for prompts, captions for
image files, and clear errors for runs and files it cannot use."""

import numpy as np
import pytest
from PIL import Image

from mot.cli import main
from mot.generate.pipeline import TransfusionPipeline
from mot.generate.logits import GenerationError
from mot.generate.transfusion import ImageSampling
from mot.train.trainer import Trainer

from tests.helpers import small_recipe, small_transfusion_recipe


def test_the_pipeline_draws_images_and_captions_them(transfusion_run):
    pipeline = TransfusionPipeline.from_run(transfusion_run, log=lambda _: None)
    images = pipeline.text_to_image(["a large red circle on a white background", "a star"],
                                    ImageSampling(steps=3, method="ddim"))
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    captions = pipeline.image_to_text(images, max_new_tokens=6)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_mot_generate_writes_pngs_and_prints_captions(transfusion_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["generate", str(transfusion_run), "--prompt", "a large red circle on a white background",
                 "--prompt", "a small blue star", "--per-prompt", "2", "--denoising-steps", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample-{i:03d}.png" for i in range(4)]
    assert Image.open(out / "sample-000.png").size == (32, 32)
    image = tmp_path / "big.png"
    Image.fromarray(np.full((64, 64, 3), 200, dtype=np.uint8)).save(image)  # resized to the VAE's 32x32
    assert main(["generate", str(transfusion_run), "--caption", str(image)]) == 0
    assert f"{image}: " in capsys.readouterr().out


def test_a_flow_run_samples_with_euler_or_heun_and_refuses_ddpm(small_corpus, tmp_path, capsys):
    Trainer(small_transfusion_recipe(small_corpus, tmp_path, steps=1, checkpoint_every=1, name="flow",
                                     **{"diffusion.objective": "flow"}), log=lambda _: None).train()
    pipeline = TransfusionPipeline.from_run(tmp_path / "flow", log=lambda _: None)
    assert pipeline.sampler.objective == "flow"
    euler, heun = (pipeline.text_to_image(["a red circle"], ImageSampling(steps=3, method=m, seed=1))
                   for m in ("euler", "heun"))
    assert euler.shape == heun.shape == (1, 32, 32, 3) and not np.array_equal(euler, heun)
    assert np.array_equal(euler, pipeline.text_to_image(["a red circle"], ImageSampling(steps=3, seed=1)))  # default
    out = tmp_path / "samples"
    assert main(["generate", str(tmp_path / "flow"), "--prompt", "a red circle", "--method", "heun",
                 "--denoising-steps", "2", "--out", str(out)]) == 0
    assert "2 heun steps" in capsys.readouterr().out and (out / "sample-000.png").is_file()
    assert main(["generate", str(tmp_path / "flow"), "--prompt", "a red circle", "--method", "ddpm"]) == 2
    assert "does not sample a flow model: use one of ['euler', 'heun']" in capsys.readouterr().err


def test_runs_and_files_it_cannot_use_are_clear_errors(small_corpus, transfusion_run, tmp_path, capsys):
    assert main(["generate", str(transfusion_run)]) == 2
    assert "nothing to do" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["generate", str(transfusion_run), "--caption", str(broken)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(["generate", str(transfusion_run), "--prompt", "x", "--method", "euler"]) == 2
    assert "method='euler'" in capsys.readouterr().err
    Trainer(small_recipe(small_corpus, tmp_path, steps=1, checkpoint_every=1, name="chameleon"),
            log=lambda _: None).train()
    with pytest.raises(GenerationError, match="chameleon setting"):
        TransfusionPipeline.from_run(tmp_path / "chameleon", log=lambda _: None)
