"""The diffusion scheduler: the schedules' closed forms, noising, respacing and DDPM/DDIM steps."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mot.objectives.diffusion_schedule import DiffusionScheduler, ScheduleError

T = 1000


def cosine_f(t, steps=T, s=0.008):
    return math.cos(((t / steps) + s) / (1 + s) * math.pi / 2) ** 2


def true_eps(sched, x_t, t, x0):
    """The eps that makes ``x_t`` exactly ``add_noise(x0, eps, t)``: what a perfect denoiser predicts."""
    abar = sched.alphas_cumprod[t].item()
    return (x_t - math.sqrt(abar) * x0) / math.sqrt(1 - abar)


def test_cosine_alphas_cumprod_matches_the_closed_form():
    abar = DiffusionScheduler(train_steps=T).alphas_cumprod
    assert abar.dtype == torch.float64 and abar.shape == (T,)
    # abar_t = f(t+1)/f(0) wherever no beta was clipped (all but the last level here) ...
    expected = torch.tensor([cosine_f(t + 1) / cosine_f(0) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(abar[:-1], expected[:-1], rtol=1e-10, atol=1e-15)
    # ... and the last beta, 1 - f(T)/f(T-1) ~ 1, is clipped at 0.999.
    assert math.isclose(abar[-1].item(), expected[-2].item() * 0.001, rel_tol=1e-10)
    assert torch.all(abar[1:] < abar[:-1]) and torch.all(abar > 0) and torch.all(abar <= 1)


def test_linear_schedule_is_ddpm():
    sched = DiffusionScheduler(schedule="linear")
    assert math.isclose(sched.betas[0].item(), 1e-4) and math.isclose(sched.betas[-1].item(), 0.02)
    torch.testing.assert_close(sched.alphas_cumprod, torch.cumprod(1 - sched.betas, 0))
    assert torch.all(sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1])


def test_add_noise_matches_the_closed_form_with_a_level_per_sample():
    sched = DiffusionScheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 999, 500, 17, 998, 250])
    out = sched.add_noise(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        abar = sched.alphas_cumprod[ti].item()
        torch.testing.assert_close(out[i], math.sqrt(abar) * x0[i] + math.sqrt(1 - abar) * noise[i])
    # Low-precision input comes back in its own dtype.
    assert sched.add_noise(x0.bfloat16(), noise.bfloat16(), t).dtype == torch.bfloat16


def test_add_noise_has_the_marginal_mean_and_variance():
    sched = DiffusionScheduler()
    g = torch.Generator().manual_seed(1)
    x0 = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    n = 20000
    for ti in (0, 300, 700, 999):
        abar = sched.alphas_cumprod[ti].item()
        x_t = sched.add_noise(x0.expand(n, 3), torch.randn(n, 3, generator=g, dtype=torch.float64),
                              torch.full((n,), ti))
        stderr = math.sqrt((1 - abar) / n)
        assert torch.all((x_t.mean(0) - math.sqrt(abar) * x0).abs() < 5 * stderr + 1e-12)
        torch.testing.assert_close(x_t.var(0), torch.full((3,), 1 - abar, dtype=torch.float64),
                                   rtol=0.05, atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(t=st.integers(0, T - 1), seed=st.integers(0, 2**31 - 1),
       schedule=st.sampled_from(["cosine", "linear"]))
def test_predict_x0_inverts_add_noise(t, seed, schedule):
    sched = DiffusionScheduler(schedule=schedule)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 5, generator=g, dtype=torch.float64)
    ts = torch.tensor([t, T - 1 - t])
    torch.testing.assert_close(sched.predict_x0(eps, ts, sched.add_noise(x0, eps, ts)), x0,
                               rtol=0, atol=1e-6)


def test_set_timesteps_is_evenly_spaced_descending_and_ends_at_zero():
    sched = DiffusionScheduler()
    assert torch.equal(sched.timesteps, torch.arange(T - 1, -1, -1))  # default: every step
    ts = sched.set_timesteps(250)
    assert ts is sched.timesteps and ts.dtype == torch.int64 and ts.shape == (250,)
    assert ts[0].item() == T - 1 and ts[-1].item() == 0
    assert torch.all(ts[1:] < ts[:-1]) and len(set(ts.tolist())) == 250
    gaps = (ts[:-1] - ts[1:]).tolist()
    assert set(gaps) <= {4, 5}
    assert torch.equal(sched.set_timesteps(T), torch.arange(T - 1, -1, -1))
    assert sched.set_timesteps(1).tolist() == [T - 1]
    for n in (2, 3, 7, 333, 999):
        ts = sched.set_timesteps(n)
        assert len(set(ts.tolist())) == n and ts[-1].item() == 0


def test_previous_timestep_follows_the_inference_schedule():
    sched = DiffusionScheduler()
    sched.set_timesteps(4)
    assert sched.timesteps.tolist() == [999, 666, 333, 0]
    assert [sched.previous_timestep(t) for t in (999, 666, 333, 0)] == [666, 333, 0, -1]
    with pytest.raises(ScheduleError, match="500"):
        sched.previous_timestep(500)


@pytest.mark.parametrize("bad", [0, 1001, -3])
def test_set_timesteps_rejects_bad_counts(bad):
    with pytest.raises(ScheduleError, match=rf"num_inference_steps.*{bad}"):
        DiffusionScheduler().set_timesteps(bad)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("n", [1, 10, 250])
def test_ddim_chain_with_the_true_eps_recovers_x0(schedule, n):
    sched = DiffusionScheduler(schedule=schedule, method="ddim")
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    sched.set_timesteps(n)
    x = sched.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64),
                        sched.timesteps[:1].expand(3))
    for t in sched.timesteps.tolist():
        x = sched.step(true_eps(sched, x, t, x0), t, x)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [1, 50, 1000])
def test_ddpm_chain_with_the_true_eps_recovers_x0(n):
    sched = DiffusionScheduler(method="ddpm")
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 8, generator=g, dtype=torch.float64)
    sched.set_timesteps(n)
    x = sched.add_noise(x0, torch.randn(x0.shape, generator=g, dtype=torch.float64),
                        sched.timesteps[:1].expand(2))
    for t in sched.timesteps.tolist():
        x = sched.step(true_eps(sched, x, t, x0), t, x, generator=g)
    torch.testing.assert_close(x, x0, rtol=0, atol=1e-6)


def test_the_last_ddpm_step_returns_x0_without_noise():
    sched = DiffusionScheduler(method="ddpm")
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    x_t = sched.add_noise(x0, torch.randn(2, 5, generator=g, dtype=torch.float64), torch.tensor([0, 0]))
    out = sched.step(true_eps(sched, x_t, 0, x0), 0, x_t, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)


def test_ddim_with_eta_one_is_ddpm():
    # Song et al. 2021: eta = 1 gives DDPM's posterior mean and variance, so with the same noise
    # draw the two updates agree (for any eps, not only the true one).
    g = torch.Generator().manual_seed(6)
    x_t, eps = torch.randn(2, 3, 7, generator=g, dtype=torch.float64).unbind(0)
    for sched_kwargs in ({}, {"schedule": "linear"}):
        ddpm = DiffusionScheduler(method="ddpm", **sched_kwargs)
        ddim = DiffusionScheduler(method="ddim", eta=1.0, **sched_kwargs)
        for s in (ddpm, ddim):
            s.set_timesteps(20)
        for t in (999, 526, 53):
            a = ddpm.step(eps, t, x_t, generator=torch.Generator().manual_seed(t))
            b = ddim.step(eps, t, x_t, generator=torch.Generator().manual_seed(t))
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ddpm_step_is_reproducible_with_a_seed():
    sched = DiffusionScheduler(method="ddpm")
    sched.set_timesteps(10)
    x_t, eps = torch.randn(2, 4, 6)
    t = sched.timesteps[3].item()
    a = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(7))
    b = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(7))
    c = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.allclose(a, c)


def test_ddim_eta_zero_is_deterministic():
    sched = DiffusionScheduler(method="ddim")
    sched.set_timesteps(10)
    x_t, eps = torch.randn(2, 4, 6)
    t = sched.timesteps[3].item()
    a = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(8)))


def test_clip_sample_clamps_x0_hat():
    sched = DiffusionScheduler(method="ddim", clip_sample=1.0)
    x_t, eps = torch.randn(2, 100, generator=torch.Generator().manual_seed(9)) * 3
    out = sched.step(eps, 0, x_t)  # the last step returns x0_hat itself
    assert out.abs().max().item() <= 1.0 and out.abs().max().item() == 1.0
    unclipped = DiffusionScheduler(method="ddim").step(eps, 0, x_t)
    assert unclipped.abs().max().item() > 1.0


@pytest.mark.parametrize("t", [-1, 1000, 5000])
def test_out_of_range_timesteps_are_rejected(t):
    sched = DiffusionScheduler()
    x = torch.zeros(2, 3)
    with pytest.raises(ScheduleError, match=rf"timesteps.*{t}"):
        sched.add_noise(x, x, torch.tensor([0, t]))
    with pytest.raises(ScheduleError, match=str(t)):
        sched.predict_x0(x, torch.tensor([t, 0]), x)
    with pytest.raises(ScheduleError, match=str(t)):
        sched.step(x, t, x)


def test_malformed_timesteps_are_rejected():
    sched = DiffusionScheduler()
    x = torch.zeros(2, 3)
    with pytest.raises(ScheduleError, match="integers"):
        sched.add_noise(x, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ScheduleError, match="shape"):
        sched.add_noise(x, x, torch.tensor([1, 2, 3]))
    with pytest.raises(ScheduleError, match="shape"):
        sched.add_noise(x, torch.zeros(2, 4), torch.tensor([1, 2]))


@pytest.mark.parametrize("kwargs, field", [
    ({"schedule": "sigmoid"}, "schedule.*sigmoid"),
    ({"method": "euler"}, "method.*euler"),
    ({"prediction": "v_prediction"}, "prediction.*v_prediction"),
    ({"train_steps": 0}, "train_steps.*0"),
    ({"eta": -0.5}, "eta.*-0.5"),
    ({"clip_sample": 0.0}, "clip_sample.*0.0"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ScheduleError, match=field):
        DiffusionScheduler(**kwargs)
    assert issubclass(ScheduleError, ValueError)
