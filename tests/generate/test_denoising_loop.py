"""The sampling loop on a problem with a known answer: Gaussian data, whose ideal denoiser has a
closed form, so every sampler's output can be checked against where it must end."""

import math

import pytest
import torch

from mot.generate.denoising_loop import denoise
from mot.objectives.schedulers import make_scheduler

MEAN, STD = 1.5, 0.4  # the "data": x0 ~ N(MEAN, STD^2) in every coordinate
T = 1000


def ideal_velocity(flow):
    """E[eps - x0 | x_s] for Gaussian data on the straight path x_s = (1 - s) x0 + s eps."""
    def predict(x, t):
        s = flow.sigma(t)
        variance = (1 - s) ** 2 * STD ** 2 + s ** 2
        centred = x - (1 - s) * MEAN
        eps = s / variance * centred
        x0 = MEAN + (1 - s) * STD ** 2 / variance * centred
        return eps - x0
    return predict


def ideal_noise(ddpm):
    """E[eps | x_t] for Gaussian data under x_t = sqrt(abar) x0 + sqrt(1 - abar) eps."""
    def predict(x, t):
        abar = float(ddpm.alphas_cumprod[t])
        return math.sqrt(1 - abar) / (abar * STD ** 2 + 1 - abar) * (x - math.sqrt(abar) * MEAN)
    return predict


def flow_error(method, steps, x1):
    """How far the sampler ends from the exact ODE's end ``MEAN + STD x1`` (the flow between two
    Gaussians is affine)."""
    flow = make_scheduler("flow", T, method=method)
    flow.set_timesteps(steps)
    return float((denoise(flow, ideal_velocity(flow), x1.clone()) - (MEAN + STD * x1)).abs().max())


def test_heun_converges_faster_than_euler_and_both_reach_the_data_distribution():
    x1 = torch.randn(4096, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    euler = [flow_error("euler", n, x1) for n in (5, 20, 80)]
    heun = [flow_error("heun", n, x1) for n in (5, 20, 80)]
    assert euler[0] > euler[1] > euler[2] and heun[0] > heun[1] > heun[2]
    assert all(h < e / 4 for h, e in zip(heun, euler))  # second order against first
    assert heun[-1] < 1e-3


def test_heun_calls_the_model_twice_per_step_but_not_on_the_last():
    flow = make_scheduler("flow", T, method="heun")
    flow.set_timesteps(6)
    seen = []
    velocity = ideal_velocity(flow)

    def predict(x, t):
        seen.append(t)
        return velocity(x, t)
    denoise(flow, predict, torch.randn(3, dtype=torch.float64))
    assert len(seen) == 2 * 6 - 1 and seen[0] == T - 1 and 0 in seen


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_ddpm_and_ddim_with_the_ideal_denoiser_draw_the_data_distribution(method):
    ddpm = make_scheduler("ddpm", T, method=method)
    ddpm.set_timesteps(250)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(20000, generator=generator, dtype=torch.float64)
    samples = denoise(ddpm, ideal_noise(ddpm), x, generator=generator)
    assert abs(float(samples.mean()) - MEAN) < 0.02 and abs(float(samples.std()) - STD) < 0.02


def test_progress_is_reported_when_asked():
    flow = make_scheduler("flow", 10)
    lines = []
    denoise(flow, ideal_velocity(flow), torch.zeros(2, dtype=torch.float64), log=lines.append, what="2 images")
    assert any("denoising 2 images" in line for line in lines)
