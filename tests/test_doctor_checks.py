"""The doctor's active checks (issue 8 item 2): each on models and data whose right answer is known.

- which_target: exact oracles and the closed-form posterior-mean denoiser of Gaussian data, every
  prediction type, VP and flow (report 002: an eps model read as x0 samples noise).
- flow: alignment, shooting and the teacher field on exact and deliberately wrong velocities (report 003).
- checkpoint_diff: frozen, trained and mismatched state dicts, in memory and on disk (report 004).
- compare_samples: real vs real, N(0, sigma^2) vs spectra, paired PSNR (report 002).
"""

from __future__ import annotations

import math

import pytest
import torch

from fastdiff import param
from fastdiff.data import gaussian_data, gaussian_denoiser, psnr, spectra
from fastdiff.doctor import (
    alignment_finding,
    alignment_per_t,
    checkpoint_diff,
    compare_samples,
    shoot,
    teacher_euler,
    which_target,
)
from fastdiff.doctor.flow import euler_integrate
from fastdiff.doctor.samples import NOISE_KS
from fastdiff.models import UNet1D
from fastdiff.schedule import Schedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow")
MEAN, STD = 0.5, 0.3  # the Gaussian data of the closed-form denoiser
FLOW_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


@pytest.fixture(scope="module")
def schedule():
    return Schedule.make("linear", 1000)


def _levels(t: torch.Tensor, schedule: Schedule | None, shape: torch.Size):
    """(alpha, sigma) per sample, broadcastable against x: VP from the schedule, flow from s = t."""
    view = (-1,) + (1,) * (len(shape) - 1)
    if schedule is None:
        s = t.double().reshape(view)
        return (1 - s).float(), s.float()
    return schedule.alpha[t].float().reshape(view), schedule.sigma[t].float().reshape(view)


def oracle(prediction_type: str, x0: torch.Tensor, schedule: Schedule | None = None):
    """A model that knows x0: it recovers eps = (x_t - alpha x0) / sigma and returns the exact target."""

    def model(x_t, t):
        a, s = _levels(t, schedule, x0.shape)
        eps = (x_t - a * x0) / s
        return param.target(prediction_type, x0, eps, a, s)

    return model


def posterior_mean(prediction_type: str, schedule: Schedule | None = None):
    """The MMSE model of N(MEAN, STD^2) data: E[x0 | x_t] (gaussian_denoiser) re-expressed as the type."""

    def model(x_t, t):
        a, s = _levels(t, schedule, x_t.shape)
        x0_hat = gaussian_denoiser(x_t, a, s, mean=MEAN, std=STD)
        eps_hat = (x_t - a * x0_hat) / s
        return param.target(prediction_type, x0_hat, eps_hat, a, s)

    return model


@pytest.fixture(scope="module")
def x0():
    return gaussian_data(512, 16, mean=MEAN, std=STD, seed=3)


# --- which_target ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_which_target_exact_oracle_every_level(prediction_type, x0, schedule):
    r = which_target(oracle(prediction_type, x0, schedule), x0, schedule=schedule)
    assert r.predicted == prediction_type and r.agrees(prediction_type)
    assert len(r.levels) == 7
    for lv in r.levels:
        assert lv.best == prediction_type, (lv.t, lv.rel_error)
        assert lv.rel_error[prediction_type] < 1e-8
        assert abs(lv.alpha**2 + lv.sigma**2 - 1) < 1e-9  # VP levels
    # the sampler that reads it as trained recovers x0 exactly
    assert max(r.x0_error_if_read_as[prediction_type]) < 1e-3


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_which_target_exact_oracle_flow_times(prediction_type, x0):
    r = which_target(oracle(prediction_type, x0), x0, flow_times=FLOW_TIMES)
    assert r.predicted == prediction_type
    assert [lv.t for lv in r.levels] == list(FLOW_TIMES)
    for lv in r.levels:
        assert lv.best == prediction_type and lv.rel_error[prediction_type] < 1e-8
        assert abs(lv.alpha + lv.sigma - 1) < 1e-12  # the flow line


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("flow", [False, True], ids=["vp", "flow"])
def test_which_target_posterior_mean_denoiser(prediction_type, flow, x0, schedule):
    # the best a trained model can do (MMSE) is not the target itself, yet its type must still be the closest
    sched = None if flow else schedule
    kw = {"flow_times": FLOW_TIMES} if flow else {"schedule": schedule}
    r = which_target(posterior_mean(prediction_type, sched), x0, **kw)
    assert r.predicted == prediction_type
    assert r.finding().status == "ok"  # a clear winner: some level within 0.5 relative error
    # most levels agree on their own (v and flow are close relatives at mid noise)
    assert sum(lv.best == prediction_type for lv in r.levels) > len(r.levels) / 2


def test_which_target_eps_model_read_as_x0_is_report_002(x0, schedule):
    r = which_target(posterior_mean("epsilon", schedule), x0, schedule=schedule)
    bad = r.finding("sample")
    assert bad.id == "prediction_type" and bad.status == "fail"
    assert "'epsilon'" in bad.summary and "'sample'" in bad.summary and "noise" in bad.summary
    assert "report 002" in bad.summary
    # read as x0, the eps output misses x0 by more than the data's own scale at the noisy levels
    assert min(r.x0_error_if_read_as["sample"][3:]) > 1.0
    # the figure quoted is the worst level's, and the level named is the one it came from
    worst = max(r.x0_error_if_read_as["sample"])
    assert f"{worst:.3g}x" in bad.summary
    t_worst = r.levels[r.x0_error_if_read_as["sample"].index(worst)].t
    assert f"t={t_worst:g}" in bad.summary
    for aliases in ("epsilon", "eps", "noise"):
        assert r.finding(aliases).status == "ok"
    assert r.finding("flow").status == "fail"


def test_which_target_x0_model_read_as_eps(x0, schedule):
    r = which_target(oracle("sample", x0, schedule), x0, schedule=schedule)
    assert r.finding("x0").status == "ok"
    f = r.finding("epsilon")
    assert f.status == "fail" and "'sample'" in f.summary
    assert f.evidence["predicted"] == "sample" and len(f.evidence["levels"]) == 7


def test_which_target_unrelated_output_warns(x0, schedule):
    # an output that is none of the targets (a constant) is reported, not silently called a type
    r = which_target(lambda x_t, t: torch.full_like(x_t, 3.0), x0, schedule=schedule)
    assert r.finding().status == "warn"


def test_which_target_model_time_and_timesteps(x0, schedule):
    seen = []

    def model(x_t, t):
        seen.append(t.clone())
        return oracle("flow", x0)(x_t, t / 1000)

    r = which_target(model, x0, flow_times=(0.25, 0.75), model_time=lambda s: s * 1000)
    assert r.predicted == "flow"
    assert [float(t[0]) for t in seen] == [250.0, 750.0] and seen[0].shape == (x0.shape[0],)
    seen.clear()
    r = which_target(
        lambda x_t, t: seen.append(t) or oracle("epsilon", x0, schedule)(x_t, t),
        x0,
        schedule=schedule,
        timesteps=[10, 500],
    )
    assert [lv.t for lv in r.levels] == [10.0, 500.0] and seen[0].dtype == torch.long


def test_which_target_candidates(x0, schedule):
    r = which_target(oracle("v_prediction", x0, schedule), x0, schedule=schedule, candidates=("eps", "x0", "v"))
    assert r.candidates == ("epsilon", "sample", "v_prediction") and r.predicted == "v_prediction"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"schedule": "S", "flow_times": (0.5,)}, "exactly one"),
        ({"flow_times": (0.0, 0.5)}, r"\(0, 1\)"),
        ({"flow_times": (0.5, 1.0)}, r"\(0, 1\)"),
        ({"flow_times": (1.5,)}, r"\(0, 1\)"),
    ],
)
def test_which_target_bad_arguments(kwargs, match, x0, schedule):
    kwargs = {k: (schedule if v == "S" else v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        which_target(lambda x_t, t: x_t, x0, **kwargs)


def test_which_target_wrong_output_shape(x0, schedule):
    with pytest.raises(ValueError, match=r"shape \(512, 1\)"):
        which_target(lambda x_t, t: x_t[:, :1], x0, schedule=schedule)
    with pytest.raises(ValueError, match="not supported"):
        which_target(lambda x_t, t: x_t, x0, schedule=schedule, candidates=("epsilon", "score"))


# --- flow matching (report 003) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def flow_pair():
    """diffusers-style path: source = data (spectra), target = noise; v = noise - data."""
    data = spectra(64, 32, seed=1)
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(2))
    return data, noise


def _field(source, target, *, scale=1.0, sign=1.0, mix=0.0):
    """scale * sign * (target - source), optionally mixed with an unrelated direction (mix in [0, 1])."""
    other = torch.randn(source.shape, generator=torch.Generator().manual_seed(9))

    def v(x, t):
        return scale * (sign * (1 - mix) * (target - source) + mix * other)

    return v


def test_alignment_perfect_field(flow_pair):
    rows = alignment_per_t(_field(*flow_pair), *flow_pair)
    assert [r.t for r in rows] == [0.1, 0.37, 0.63, 0.9]
    for r in rows:
        assert abs(r.cos - 1) < 1e-6 and abs(r.norm_ratio - 1) < 1e-6
    f = alignment_finding(rows)
    assert f.id == "fm_alignment" and f.status == "ok" and len(f.evidence["per_t"]) == 4


@pytest.mark.parametrize(
    "field, status",
    [
        ({"sign": -1.0}, "fail"),  # v = data - noise: the time direction reversed
        ({"scale": 0.29, "mix": 0.97}, "fail"),  # report 003: cos ~0.03, ratio ~0.29
        ({"scale": 0.3}, "fail"),  # right direction, 0.3x the norm
        ({"scale": 0.45}, "warn"),
        ({"scale": 2.5}, "warn"),
        ({"scale": 4.0}, "fail"),
        ({"mix": 0.75}, "warn"),  # cos about 0.35
        ({"scale": 0.9, "mix": 0.2}, "ok"),
    ],
)
def test_alignment_wrong_fields(field, status, flow_pair):
    rows = alignment_per_t(_field(*flow_pair, **field), *flow_pair)
    assert alignment_finding(rows).status == status, rows


def test_alignment_nan_field_fails(flow_pair):
    rows = alignment_per_t(lambda x, t: torch.full_like(x, math.nan), *flow_pair)
    assert alignment_finding(rows).status == "fail"


def test_shoot_exact_field_lands_on_target(flow_pair):
    source, target = flow_pair
    assert shoot(_field(source, target), source, target, steps=10) < 1e-10
    # the reversed field ends at 2 source - target: MSE = 4 E|target - source|^2
    wrong = shoot(_field(source, target, sign=-1.0), source, target, steps=10)
    assert abs(wrong / (4 * float((target - source).pow(2).mean())) - 1) < 1e-4
    assert shoot(_field(source, target, scale=0.5), source, target) > 0.1
    assert shoot(lambda x, t: torch.zeros_like(x), source, target) == pytest.approx(
        float((target - source).pow(2).mean()), rel=1e-5
    )


def test_euler_integrate_state_dependent_field():
    # dx/dt = -x from x(0) = 1: Euler gives (1 - 1/N)^N, first order towards exp(-1)
    x = torch.ones(3, 4, dtype=torch.float64)
    for n in (1, 10, 100):
        end = euler_integrate(lambda x, t: -x, x, 0.0, 1.0, n)
        assert torch.allclose(end, torch.full_like(x, (1 - 1 / n) ** n), rtol=1e-12)
    assert torch.equal(x, torch.ones(3, 4, dtype=torch.float64))  # the start is not overwritten
    with pytest.raises(ValueError, match="steps"):
        euler_integrate(lambda x, t: x, x, 0.0, 1.0, 0)


def test_teacher_euler_linear_path_is_exact(flow_pair):
    errors = teacher_euler(*flow_pair)
    assert list(errors) == [5, 10, 20, 50, 100]
    assert max(errors.values()) < 1e-10


def test_teacher_euler_curved_path_converges(flow_pair):
    # psi(t) = cos(pi t / 2) a + sin(pi t / 2) b (a trigonometric path): Euler on its d psi/dt is first order
    half_pi = math.pi / 2

    def dpsi(t, a, b):
        return half_pi * (-torch.sin(half_pi * t) * a + torch.cos(half_pi * t) * b)

    errors = teacher_euler(*flow_pair, dpsi=dpsi)
    values = [errors[n] for n in (5, 10, 20, 50, 100)]
    assert all(e1 < e0 for e0, e1 in zip(values, values[1:]))
    assert 50 < values[0] / values[-1] < 800  # MSE of a first-order method: ~(100 / 5)^2 = 400
    # a wrong teacher (twice the velocity) does not converge: the error stays at |b - a|^2 scale
    wrong = teacher_euler(*flow_pair, dpsi=lambda t, a, b: 2 * (b - a))
    assert min(wrong.values()) > 0.5


# --- checkpoint diff (report 004) -----------------------------------------------------------------


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return UNet1D(channels=(8, 16), t_dim=16).state_dict()


def _trained(state: dict, skip: tuple[str, ...] = (), step: float = 1e-2) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        k: (v.clone() if k.startswith(skip) else v + step * torch.randn(v.shape, generator=g)) for k, v in state.items()
    }


def test_checkpoint_diff_flags_the_frozen_layer():
    a = _state()
    b = _trained(a, skip=("stem.",))
    changes, f = checkpoint_diff(a, b)
    assert len(changes) == len(a)
    frozen = sorted(c.name for c in changes if c.identical)
    assert frozen == ["stem.bias", "stem.weight"]
    assert all(c.rel_change == 0 for c in changes if c.identical)
    assert all(c.rel_change > 0 for c in changes if not c.identical)
    assert f.id == "checkpoint_diff" and f.status == "warn"
    assert "2 of" in f.summary and sorted(f.evidence["identical_names"]) == frozen


def test_checkpoint_diff_all_changed_is_ok():
    a = _state()
    changes, f = checkpoint_diff(a, _trained(a))
    assert f.status == "ok" and f.evidence["identical"] == 0 and not any(c.identical for c in changes)
    assert f.evidence["largest_changes"][0][1] == max(c.rel_change for c in changes)
    stem = next(c for c in changes if c.name == "stem.weight")
    w = a["stem.weight"].double()
    assert stem.rel_change == pytest.approx(
        float((_trained(a)["stem.weight"].double() - w).norm() / w.norm()), rel=1e-12
    )
    # a zero-initialised weight (the U-Net's output conv) that moved: relative change "infinite", finite number
    head = next(c for c in changes if c.name == "head.2.bias")
    assert not head.identical and head.rel_change > 1e20 and math.isfinite(head.rel_change)


def test_checkpoint_diff_identical_is_report_004(tmp_path):
    # report 004: final_model.pth held the pretrained weights, with no step / epoch / loss in it
    model = UNet1D(channels=(8, 16), t_dim=16)
    torch.save(model.state_dict(), tmp_path / "pretrained.pth")
    torch.save({"model": model.state_dict(), "optimizer": {"lr": 0.1}, "global_step": 100000}, tmp_path / "final.pth")
    changes, f = checkpoint_diff(tmp_path / "pretrained.pth", str(tmp_path / "final.pth"))
    assert f.status == "fail" and "bit-identical" in f.summary and all(c.identical for c in changes)
    assert f.evidence["metadata_b"]["global_step"] == "100000"
    assert f.evidence["metadata_b"]["has_optimizer"] == "True"
    assert f.evidence["metadata_a"] == {}


def test_checkpoint_diff_modules_and_nested_dicts():
    a = UNet1D(channels=(8, 16), t_dim=16)
    _, f = checkpoint_diff(a, {"state_dict": _trained(a.state_dict()), "epoch": 3})
    assert f.status == "ok" and f.evidence["metadata_b"]["epoch"] == "3"


def test_checkpoint_diff_mismatches():
    a = {"w": torch.ones(3, 4), "b": torch.zeros(4), "old": torch.ones(2), "count": torch.tensor(7)}
    b = {"w": torch.ones(3, 4) * 2, "b": torch.zeros(5), "new": torch.ones(2), "count": torch.tensor(8)}
    changes, f = checkpoint_diff(a, b)
    assert [c.name for c in changes] == ["w"]  # integer buffers are not parameters
    assert f.evidence["shape_mismatch"] == ["b"]
    assert f.evidence["only_in_a"] == ["old"] and f.evidence["only_in_b"] == ["new"]
    assert f.status == "ok" and changes[0].rel_change == pytest.approx(1.0)
    _, f = checkpoint_diff({"w": torch.ones(3)}, {"v": torch.ones(3)})
    assert f.status == "fail" and "no parameter" in f.summary


@pytest.mark.parametrize("bad", [[torch.ones(2)], 3, None, torch.ones(3)])
def test_checkpoint_diff_wrong_type(bad):
    with pytest.raises(TypeError, match="path, module or state dict"):
        checkpoint_diff(bad, {"w": torch.ones(2)})


def test_checkpoint_diff_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint_diff(tmp_path / "nope.pth", {"w": torch.ones(2)})


# --- generated vs real samples (report 002) -------------------------------------------------------


@pytest.fixture(scope="module")
def real():
    return spectra(128, 64, seed=0)


def test_compare_samples_real_vs_real_is_ok(real):
    ev, f = compare_samples(spectra(128, 64, seed=7), real)
    assert f.id == "samples_like_noise" and f.status == "ok", f.summary
    assert ev["ks"] < 0.1 and ev["histogram_tv"] < 0.1 and ev["w1"] < 0.05
    assert ev["ks_real_to_normal"] > 0.1  # spectra are visibly not Gaussian
    assert abs(ev["std_ratio"] - 1) < 0.1


@pytest.mark.parametrize("sigma", [0.5, 0.9, 1.0])
def test_compare_samples_noise_vs_spectra_is_report_002(sigma, real):
    noise = sigma * torch.randn(real.shape, generator=torch.Generator().manual_seed(5))
    ev, f = compare_samples(noise, real)
    assert f.status == "fail" and f.summary.startswith("the samples are N(0, ")
    assert ev["ks_generated_to_normal"] < NOISE_KS
    assert abs(ev["generated"]["std"] - sigma) < 0.05 * sigma
    assert ev["generated"]["kurtosis"] == pytest.approx(0, abs=0.2)


def test_compare_samples_skewed_noise_is_report_002(real):
    # what an eps model read as x0 really gives: centred noise, but not exactly Gaussian (skewed); it is
    # far closer to N(0, s^2) than to the data, and must be called noise, not merely "off"
    z = torch.randn(real.shape, generator=torch.Generator().manual_seed(4))
    skewed = 0.9 * (z + 0.25 * (z * z - 1))
    ev, f = compare_samples(skewed, real)
    assert ev["ks_generated_to_normal"] > NOISE_KS and ev["generated"]["skew"] > 0.5
    assert f.status == "fail" and f.summary.startswith("the samples are N(0, "), f.summary


def test_compare_samples_centred_non_gaussian_data_is_not_noise():
    # centred data that is not Gaussian (uniform), sampled well: not noise, ok
    g = torch.Generator().manual_seed(0)
    ev, f = compare_samples(2 * torch.rand(4000, generator=g) - 1, 2 * torch.rand(4000, generator=g) - 1)
    assert f.status == "ok", f.summary


def test_compare_samples_noise_vs_noise_is_not_flagged_as_noise():
    # if the data *is* Gaussian, Gaussian samples are right
    g = torch.Generator().manual_seed(0)
    ev, f = compare_samples(torch.randn(4000, generator=g), torch.randn(4000, generator=g))
    assert f.status == "ok"


@pytest.mark.parametrize(
    "transform, status",
    [
        (lambda x: 0.1 * x, "fail"),  # collapsed
        (lambda x: x + 1.0, "fail"),  # shifted by two real stds
        (lambda x: 0.6 * x + 0.2, "warn"),
        (lambda x: x + 0.15, "warn"),
    ],
)
def test_compare_samples_distorted(transform, status, real):
    _, f = compare_samples(transform(spectra(128, 64, seed=7)), real)
    assert f.status == status, f.summary


def test_compare_samples_paired_psnr(real):
    noisy = real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))
    ev, f = compare_samples(noisy, real, paired=True)
    expect = psnr(noisy, real)
    assert ev["psnr_mean"] == pytest.approx(float(expect.mean()), rel=1e-12)
    assert ev["psnr_min"] == pytest.approx(float(expect.min()), rel=1e-12)
    mse = (noisy.double() - real.double()).pow(2).mean()
    assert ev["mse_mean"] == pytest.approx(float(mse), rel=1e-9)  # equal sizes: mean of means
    assert 10 * math.log10(4 / ev["mse_mean"]) == pytest.approx(32.04, abs=0.2)  # 0.05 noise on range 2
    assert "psnr_mean" not in compare_samples(noisy, real)[0]
    assert f.status == "ok"


def test_compare_samples_counts_nonfinite(real):
    gen = spectra(128, 64, seed=7)
    gen[0, 0, :5] = math.nan
    gen[1, 0, 0] = math.inf
    ev, _ = compare_samples(gen, real)
    assert ev["nonfinite_generated"] == 6


def test_compare_samples_bad_input(real):
    with pytest.raises(ValueError, match="at least two"):
        compare_samples(torch.ones(1), real)
    with pytest.raises(ValueError, match="at least two"):
        compare_samples(torch.full((10,), math.nan), real)
    with pytest.raises(ValueError, match="equal shapes"):
        compare_samples(real[:10], real, paired=True)


def test_which_target_on_a_diffusers_unet(x0, schedule):
    # diffusers models return a UNet2DOutput (its tensor in .sample), not a tensor: which_target reads it
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.unets.unet_2d import UNet2DOutput

    images = x0[:64].reshape(64, 1, 4, 4)
    oracle_eps = oracle("epsilon", images, schedule)
    r = which_target(lambda x_t, t: UNet2DOutput(sample=oracle_eps(x_t, t)), images, schedule=schedule)
    assert r.predicted == "epsilon"
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    data = torch.rand(16, 1, 8, 8) * 2 - 1
    r = which_target(unet, data, schedule=schedule)  # the model itself, called as unet(x_t, t)
    assert len(r.levels) == 7 and all(math.isfinite(v) for lv in r.levels for v in lv.rel_error.values())
