"""The rectified-flow scheduler: straight-line noising, velocity targets, Euler steps, clipping and
the schedulers chosen by name."""

import pytest
import torch

from mot.objectives.diffusion_schedule import DiffusionScheduler, ScheduleError
from mot.objectives.flow_schedule import FlowScheduler
from mot.objectives.schedulers import make_scheduler, sampling_method

T = 1000


def line(seed=0, shape=(3, 4, 2)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_noising_walks_the_straight_line_from_data_to_pure_noise():
    flow = FlowScheduler(T)
    x0, noise = line()
    torch.testing.assert_close(flow.add_noise(x0, noise, T - 1), noise, rtol=0, atol=0)  # s = 1: pure noise
    levels = torch.tensor([0, 249, 999])
    noisy = flow.add_noise(x0, noise, levels)
    for row, t in enumerate(levels.tolist()):
        s = (t + 1) / T
        torch.testing.assert_close(noisy[row], (1 - s) * x0[row] + s * noise[row], rtol=0, atol=1e-12)
    assert flow.sigma(-1) == 0.0 and flow.sigma(0) == 1 / T and flow.sigma(T - 1) == 1.0


def test_the_target_is_the_velocity_and_predict_x0_inverts_noising():
    flow = FlowScheduler(T)
    x0, noise = line(1)
    target = flow.target(x0, noise)
    torch.testing.assert_close(target, noise - x0)
    for t in (0, 500, 999):
        torch.testing.assert_close(flow.predict_x0(target, t, flow.add_noise(x0, noise, t)), x0, rtol=0, atol=1e-12)
    # DDPM's target stays the noise
    torch.testing.assert_close(DiffusionScheduler(T).target(x0, noise), noise)


@pytest.mark.parametrize("n", [1, 7, 250])
@pytest.mark.parametrize("clip", [None, 100.0])
def test_euler_with_the_true_velocity_lands_on_every_level_and_ends_at_the_data(n, clip):
    flow = FlowScheduler(T, clip_sample=clip)
    x0, noise = line(2)
    flow.set_timesteps(n)
    x = flow.add_noise(x0, noise, int(flow.timesteps[0]))
    for t in flow.timesteps.tolist():
        x = flow.step(flow.target(x0, noise), t, x)
        previous = flow.previous_timestep(t)
        expected = x0 if previous < 0 else flow.add_noise(x0, noise, previous)
        torch.testing.assert_close(x, expected, rtol=0, atol=1e-10)


def test_clip_sample_clamps_the_data_end_and_keeps_the_noise_end():
    flow = FlowScheduler(10, clip_sample=0.5)
    flow.set_timesteps(3)  # 9 -> 5 -> 0
    x0, noise = line(3)
    x0 = 3 * x0  # well outside the clamp
    x = flow.add_noise(x0, noise, 5)
    stepped = flow.step(flow.target(x0, noise), 5, x)
    s, s_prev = 0.6, 0.1
    x0_hat = x0.clamp(-0.5, 0.5)
    eps_hat = (x - (1 - s) * x0_hat) / s
    torch.testing.assert_close(stepped, (1 - s_prev) * x0_hat + s_prev * eps_hat)


def test_float32_and_bfloat16_latents_keep_their_dtype():
    flow = FlowScheduler(T)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 3).to(dtype)
        assert flow.add_noise(x, torch.randn(2, 3).to(dtype), 10).dtype == dtype
        assert flow.step(torch.randn(2, 3).to(dtype), 999, x).dtype == dtype


def test_schedulers_by_name_and_their_sampling_methods():
    assert isinstance(make_scheduler("flow", 50, method="heun"), FlowScheduler)
    ddpm = make_scheduler("ddpm", 50, "linear", "ddim", eta=0.5, clip_sample=2.0)
    assert isinstance(ddpm, DiffusionScheduler) and (ddpm.schedule, ddpm.method, ddpm.eta) == ("linear", "ddim", 0.5)
    assert sampling_method("flow") == "euler" and sampling_method("ddpm") == "ddpm"
    with pytest.raises(ScheduleError, match="'heun' does not sample a ddpm model"):
        make_scheduler("ddpm", 50, method="heun")
    with pytest.raises(ScheduleError, match="objective must be one of"):
        make_scheduler("score", 50)


@pytest.mark.parametrize("kwargs, field", [
    ({"train_steps": 0}, "train_steps"), ({"method": "ddpm"}, "method"), ({"clip_sample": -1.0}, "clip_sample"),
    ({"clip_sample": float("nan")}, "clip_sample")])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ScheduleError, match=field):
        FlowScheduler(**kwargs)


def test_steps_check_their_inputs():
    flow = FlowScheduler(10)
    with pytest.raises(ScheduleError, match="velocity shape"):
        flow.step(torch.zeros(2, 3), 9, torch.zeros(2, 4))
    with pytest.raises(ScheduleError, match="not in the inference schedule"):
        flow.set_timesteps(3)
        flow.step(torch.zeros(2), 4, torch.zeros(2))
    with pytest.raises(ScheduleError, match=r"lie in \[0, 10\)"):
        flow.add_noise(torch.zeros(2), torch.zeros(2), torch.tensor([3, 10]))
