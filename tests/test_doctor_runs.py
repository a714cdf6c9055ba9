"""The doctor on real runs (issue 8 item 4): tiny models trained and sampled here, logged by the Recorder.

Each report's failure is reproduced on a small synthetic run (spectra of 32 points, a UNet1D of two
levels, about a hundred steps on one CPU thread) and the doctor must name it from the JSONL log alone;
healthy runs of several seeds must raise no failure. Builders: tests/doctor_runs.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from doctor_runs import (
    LENGTH,
    SCHEDULE,
    finding,
    log_flow_alignment,
    sample_run,
    statuses,
    tiny_unet,
    train_run,
)

import fastdiff as fd
from fastdiff.data import gaussian_data, gaussian_denoiser, spectra
from fastdiff.doctor import compare_samples, diagnose, which_target
from fastdiff.samplers import ddim, sample

# rules that judge a training log (clip_saturation and samples_like_noise need sampling records)
TRAINING_RULES = (
    "nonfinite",
    "data_normalization",
    "timestep_distribution",
    "forward_process",
    "prediction_range",
    "loss_trend",
    "params_frozen",
    "fm_alignment",
)


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny convolutions: several threads only contend (8x slower without xdist, which sets one already)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_healthy_training_run(tmp_path, seed):
    run = train_run(tmp_path / "run.jsonl", seed=seed, steps=80)
    report = diagnose(run.path)
    st = statuses(report)
    assert not report.failed and "fail" not in st.values(), report.summary_lines()
    assert all(st[k] == "ok" for k in TRAINING_RULES), report.summary_lines()
    assert st["clip_saturation"] == "skip" and st["samples_like_noise"] == "skip"
    ev = finding(report, "params_frozen").evidence
    assert ev["parameters"] == len(list(run.model.parameters())) and ev["frozen"] == 0
    t = finding(report, "timestep_distribution").evidence
    assert t["count"] == run.result.steps * 32 and 0 <= t["range"][0] and t["range"][1] <= 999


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction", "flow"])
def test_healthy_training_run_other_prediction_types(tmp_path, prediction_type):
    run = train_run(tmp_path / "run.jsonl", seed=3, prediction_type=prediction_type, steps=60)
    report = diagnose(run.path)
    assert "fail" not in statuses(report).values(), report.summary_lines()
    # the trained model's output is recognised as its type from data alone (report 002's question)
    flow = prediction_type == "flow"
    r = which_target(
        run.model,
        run.data[:128],
        **({"flow_times": (0.2, 0.5, 0.8)} if flow else {"schedule": SCHEDULE}),
        model_time=(lambda s: s * 1000) if flow else None,
    )
    assert r.predicted == prediction_type, [lv.rel_error for lv in r.levels]


def test_healthy_sampling_run(tmp_path):
    # the exact denoiser of Gaussian data, sampled by DDIM with x0 clipping: nothing to complain about
    mean, std = 0.5, 0.3
    real = gaussian_data(64 * 32, 1, mean=mean, std=std, seed=1).reshape(64, 1, 32)

    def eps_model(x, t):
        a = SCHEDULE.alpha[t].float().reshape(-1, 1, 1)
        s = SCHEDULE.sigma[t].float().reshape(-1, 1, 1)
        return (x - a * gaussian_denoiser(x, a, s, mean=mean, std=std)) / s

    path = tmp_path / "run.jsonl"
    with fd.Recorder(path) as rec:
        result = sample(eps_model, ddim(SCHEDULE, 20), torch.randn(64, 1, 32), clip=1.0, progress=False)
        for row in result.step_stats():
            rec.log_scalar("sample/clipped_frac", row["clipped_frac"])
            rec.step()
        rec.log("samples", result.sample)
        rec.log("real", real)
    report = diagnose(path)
    st = statuses(report)
    assert st["clip_saturation"] == "ok" and st["samples_like_noise"] == "ok", report.summary_lines()
    assert finding(report, "clip_saturation").evidence["steps"] == 20
    assert "fail" not in st.values()


@pytest.mark.parametrize("spoil", ["x100", "offset"])
def test_report_000_unnormalised_data(tmp_path, spoil):
    data = spectra(256, 32, seed=0)
    data = data * 100 if spoil == "x100" else data + 10
    run = train_run(tmp_path / "run.jsonl", data=data, steps=20)
    f = finding(diagnose(run.path), "data_normalization")
    assert f.status == "fail" and "not normalised" in f.summary
    ev = f.evidence
    assert ev["mean"] == pytest.approx(float(data.mean()), rel=0.15)
    assert ev["range"][0] >= float(data.min()) and ev["range"][1] <= float(data.max())


def test_data_normalization_stated_range(tmp_path):
    run = train_run(tmp_path / "run.jsonl", steps=10)
    assert statuses(diagnose(run.path, data_range=(-1.0, 1.0)))["data_normalization"] == "ok"
    f = finding(diagnose(run.path, data_range=(0.0, 1.0)), "data_normalization")
    assert f.status == "fail" and "OUTSIDE" in f.summary


def _freeze(names: tuple[str, ...], from_step: int = 0):
    """A train_run hook: requires_grad_(False) on the parameters whose names start with `names`, so that
    the optimizer updates them last at step `from_step - 1` (at step 0 when from_step is 0)."""

    def hook(i, tensors, rec, model):
        if i + 1 == from_step or (from_step == 0 and i == 0):
            for name, p in model.named_parameters():
                if name.startswith(names):
                    p.requires_grad_(False)

    return hook


def test_report_004_model_frozen_mid_run(tmp_path):
    # report 004: the weights stopped changing at some step while training went on (and the loss was logged)
    backbone = ("t_mlp.", "stem.", "down.", "pool.", "mid.", "unpool.", "up.")  # all but the output head
    run = train_run(tmp_path / "run.jsonl", steps=80, hook=_freeze(backbone, from_step=40))
    report = diagnose(run.path)
    f = finding(report, "params_frozen")
    assert f.status == "fail", f.summary
    frozen = [n for n, _ in run.model.named_parameters() if n.startswith(backbone)]
    assert f.evidence["parameters"] == len(list(run.model.parameters())) and f.evidence["frozen"] == len(frozen)
    assert 30 <= f.evidence["since"] <= 50  # the watch sees it at its first step (every 10) after the freeze
    assert statuses(report)["nonfinite"] == "ok"


def test_report_004_backbone_frozen_from_the_start(tmp_path):
    # everything but the output head frozen (e.g. a pretrained backbone loaded with requires_grad=False)
    model = tiny_unet(0)
    for name, p in model.named_parameters():
        if not name.startswith("head."):
            p.requires_grad_(False)
    run = train_run(tmp_path / "run.jsonl", model=model, steps=40)
    report = diagnose(run.path)
    f = finding(report, "params_frozen")
    assert f.status == "fail" and f.evidence["since"] == 0
    frozen = set(f.evidence["frozen_since"])
    assert any(n.endswith("down.0.conv1.weight") for n in frozen)
    assert not any("head." in n for n in frozen)
    # zero-initialised frozen weights (GroupNorm biases) have update ratio 0/0: that is not a NaN in training
    assert statuses(report)["nonfinite"] == "ok", finding(report, "nonfinite").summary


def test_one_frozen_block_is_named(tmp_path):
    run = train_run(tmp_path / "run.jsonl", steps=40, hook=_freeze(("mid.",)))
    f = finding(diagnose(run.path), "params_frozen")
    assert f.status == "warn"
    block = {n for n, _ in run.model.named_parameters() if n.startswith("mid.")}
    assert set(f.evidence["frozen_since"]) == block  # by parameter name: param/ and update/ records are one


def test_nonfinite_names_first_step_and_tensor(tmp_path):
    def poison(i, tensors, rec, model):
        if i == 36:  # after this step's records: the next forward pass is NaN
            with torch.no_grad():
                model.stem.weight[0, 0, 0] = math.nan

    run = train_run(tmp_path / "run.jsonl", steps=50, hook=poison)
    report = diagnose(run.path)
    f = finding(report, "nonfinite")
    assert f.status == "fail" and f.evidence["first_step"] == 37
    assert f.evidence["first_name"] == "pred", f.evidence
    names = f.evidence["names"]
    assert names["loss"]["first_step"] == 37 and names["pred~target"]["first_step"] == 37
    assert "x0" not in names and "noise" not in names  # the data stayed finite
    assert names["param/stem.weight"]["first_step"] == 40  # the next watched step
    assert "step 37" in f.summary and "'pred'" in f.summary


@pytest.mark.parametrize("frac_names", [False, True], ids=["callback-counts", "step_stats-fractions"])
def test_report_001_clip_saturation(tmp_path, frac_names):
    # report 001: clipping, not the model, shapes the samples. An x0-predicting model trained on unscaled
    # data (x 8) is sampled with the usual clip to [-1, 1]: its x0 estimates leave the range down to the
    # last step. (An eps-model's x0 = (x - sigma eps) / alpha follows x at low noise, so once the noisy
    # steps have clipped x into range the late steps clip nothing: test_clip_range_narrower_than_the_data.)
    data = 8.0 * spectra(256, LENGTH, seed=0)
    run = train_run(tmp_path / "run.jsonl", steps=60, data=data, prediction_type="sample")
    sample_run(run, clip=1.0, frac_names=frac_names)
    report = diagnose(run.path)
    f = finding(report, "clip_saturation")
    assert f.status == "fail" and "check normalisation" in f.summary, f.summary
    assert f.evidence["steps"] == 20 and f.evidence["late_fraction"] > 0.2
    assert finding(report, "data_normalization").status in ("warn", "fail")  # the cause, flagged by its own rule


def test_clip_range_narrower_than_the_data(tmp_path):
    # clipping x0 to [0, 1] (the image convention) while the data span [-1, 1]: the noisy steps saturate,
    # the samples end inside [0, 1] and the late steps clip nothing, so this is a warning, not a failure
    run = train_run(tmp_path / "run.jsonl", steps=30)
    sample_run(run, clip=(0.0, 1.0))
    f = finding(diagnose(run.path), "clip_saturation")
    assert f.status == "warn" and "narrower than the data" in f.summary, f.summary
    assert f.evidence["mean_fraction"] > 0.2 and f.evidence["max_fraction"] > 0.9


def test_early_model_clips_at_high_noise(tmp_path):
    # a model a few steps into training: its eps error, times sigma / alpha ~ 160 at t = 999, blows up x0
    # at the noisiest steps (as every sampler's first steps do); the end of sampling is unclipped
    run = train_run(tmp_path / "run.jsonl", steps=5)
    sample_run(run, clip=1.0)
    f = finding(diagnose(run.path), "clip_saturation")
    assert f.status != "fail" and f.evidence["max_fraction"] > 0.9 and f.evidence["late_fraction"] < 0.02
    assert f.evidence["max_at_step"] == run.steps - 21  # the first, noisiest of the 20 sampling steps


def test_clip_statistics_without_clipping(tmp_path):
    # a model that needs no clipping (the exact denoiser of Gaussian data), sampled without it: nothing clipped
    mean, std = 0.5, 0.3

    def eps_model(x, t):
        a = SCHEDULE.alpha[t].float().reshape(-1, 1, 1)
        s = SCHEDULE.sigma[t].float().reshape(-1, 1, 1)
        return (x - a * gaussian_denoiser(x, a, s, mean=mean, std=std)) / s

    path = tmp_path / "run.jsonl"
    with fd.Recorder(path) as rec:
        result = sample(eps_model, ddim(SCHEDULE, 20), torch.randn(64, 1, 32), progress=False)
        for row in result.step_stats():
            rec.log_scalar("sample/clipped_frac", row["clipped_frac"])
            rec.step()
        rec.log("samples", result.sample)
        rec.log("real", gaussian_data(64 * 32, 1, mean=mean, std=std, seed=1).reshape(64, 1, 32))
    f = finding(diagnose(path), "clip_saturation")
    assert f.status == "ok" and f.evidence["max_fraction"] == 0, f.summary


def test_undertrained_model_without_clipping_blows_up(tmp_path):
    # report 001 before its fix: a barely trained eps model sampled by DDIM without x0 clipping; its x0
    # estimates run away (|x0| in the hundreds for data in [-1, 1]) although nothing was clipped
    run = train_run(tmp_path / "run.jsonl", steps=10)
    generated = sample_run(run, clip=None)
    f = finding(diagnose(run.path), "clip_saturation")
    assert f.status == "fail" and "blew up" in f.summary, f.summary
    assert f.evidence["blowup"]["absmax"] > 10 and float(generated.abs().max()) > 10


def test_report_002_eps_model_sampled_as_x0(tmp_path):
    # report 002: trained on epsilon, sampled as if it predicted x0: the loss looked fine, samples are noise
    run = train_run(tmp_path / "run.jsonl", steps=100)
    generated = sample_run(run, clip=None, prediction_type="sample")
    report = diagnose(run.path)
    st = statuses(report)
    assert st["loss_trend"] == "ok" and st["samples_like_noise"] == "fail"
    f = finding(report, "samples_like_noise")
    assert "N(0," in f.summary and f.evidence["sample_noise_like"] and not f.evidence["real_noise_like"]
    # the active checks agree: the samples are noise, and the model is an eps model
    _, direct = compare_samples(generated, run.data)
    assert direct.status == "fail" and "N(0," in direct.summary, direct.summary
    r = which_target(run.model, run.data[:128], schedule=SCHEDULE)
    assert r.predicted == "epsilon" and r.finding("sample").status == "fail"


def test_report_003_flow_alignment(tmp_path):
    run = train_run(tmp_path / "run.jsonl", prediction_type="flow", steps=80)
    log_flow_alignment(run)  # evaluated as trained: aligned
    good = finding(diagnose(run.path), "fm_alignment")
    assert good.status != "fail", good.summary
    assert all(good.evidence[k]["cos_last"] > 0.5 for k in good.evidence if k.startswith("v_pred"))

    bad_path = tmp_path / "reversed.jsonl"
    bad_path.write_bytes(run.path.read_bytes())
    run.path = bad_path
    log_flow_alignment(run, reversed_convention=True)
    bad = finding(diagnose(bad_path), "fm_alignment")
    assert bad.status == "fail" and "does not point along the target" in bad.summary
    assert min(bad.evidence[k]["cos_last"] for k in bad.evidence if k.startswith("v_pred")) < 0
