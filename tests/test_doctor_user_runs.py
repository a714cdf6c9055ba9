"""The doctor on logs users actually write (issue 19): real tiny training runs on scikit-learn's digits.

Each scenario is a real mistake made in a user's own training / sampling script (tests/user_runs.py), logged
once with the names a user picks after reading the README and no roles ("natural") and once with the
documented names and roles ("documented"); the doctor must name the mistake from the log in both, and a
healthy run must come out with no failure. The active checks (which_target, alignment, shoot, the teacher
check, checkpoint_diff) are run on the same models.
"""

from __future__ import annotations

import pytest
import torch
from user_runs import (
    NAMES,
    STYLES,
    Bug,
    flow_euler,
    fork,
    sample,
    train,
)

from fastdiff.doctor import alignment_finding, alignment_per_t, diagnose, shoot, teacher_euler, which_target
from fastdiff.schedule import Schedule

pytest.importorskip("sklearn")

SCHEDULE = Schedule.make("linear", 1000)  # the schedule the user scripts build by hand


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def statuses(report) -> dict[str, str]:
    return {f.id: f.status for f in report.findings}


def finding(report, finding_id: str):
    return next(f for f in report.findings if f.id == finding_id)


def no_fail(report) -> None:
    assert not report.failed, report.summary_lines()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One healthy model per (style, prediction type), trained once; tests sample it into copies of its log."""
    cache = {}

    def get(style: str, prediction_type: str = "epsilon"):
        key = (style, prediction_type)
        if key not in cache:
            torch.set_num_threads(1)
            path = tmp_path_factory.mktemp("trained") / f"{style}-{prediction_type}.jsonl"
            cache[key] = train(path, style, prediction_type=prediction_type, steps=300)
        return cache[key]

    return get


# --- healthy runs: no failure ---------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_healthy_ddpm_run_with_watch_left_on_while_sampling(tmp_path, style):
    # one script: train with watch(), then DDIM with x0 clipped to [-1, 1] through the same Recorder
    run = train(tmp_path / "run.jsonl", style, sample_after={"clip": 1.0})
    report = diagnose(run.path)
    no_fail(report)
    st = statuses(report)
    for rule in ("data_normalization", "timestep_distribution", "forward_process", "params_frozen", "fm_alignment"):
        assert st[rule] == "ok", report.summary_lines()  # natural names too: nothing skipped
    assert st["samples_like_noise"] in ("ok", "warn") and st["clip_saturation"] in ("ok", "warn")
    # digits sit on the clip bounds (half the pixels are background at -1): their share is allowed for
    clip = finding(report, "clip_saturation").evidence
    assert clip["data_edge_share"] > 0.5 and clip["late_fraction"] > 0.2
    # the watch stayed on for the 50 sampling steps: not a frozen model
    frozen = finding(report, "params_frozen").evidence
    assert frozen["frozen"] == 0 and frozen["last_training_step"] == 299
    if style == "natural":
        assert "'images' as x0" not in " ".join(report.log.notes())  # placed by its name, no guess needed
        assert finding(report, "data_normalization").evidence["role"] == "x0"


@pytest.mark.parametrize("style", STYLES)
def test_healthy_flow_matching_run(tmp_path, style, trained):
    run = fork(trained(style, "flow"), tmp_path / "run.jsonl")
    sample(run)
    report = diagnose(run.path)
    no_fail(report)
    assert statuses(report)["fm_alignment"] == "ok"


@pytest.mark.parametrize("style", STYLES)
def test_healthy_run_sampled_without_rec_step(tmp_path, style, trained):
    # every sampling record lands on one record step: the doctor sums the clip counts back and does not fail
    run = fork(trained(style), tmp_path / "run.jsonl")
    sample(run, step_each=False)
    report = diagnose(run.path)
    no_fail(report)
    assert finding(report, "clip_saturation").evidence["one_record_step"]


# --- report 000: the data ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_unnormalised_pixels(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, bug=Bug(raw_pixels=True), steps=60)
    report = diagnose(run.path)
    f = finding(report, "data_normalization")
    assert f.status == "fail" and "not normalised" in f.summary, f.summary
    assert f.evidence["range"] == [0.0, 16.0] and f.evidence["role"] == "x0"
    assert NAMES[style]["x0"] in f.summary  # names the tensor it judged


@pytest.mark.parametrize("style", STYLES)
def test_data_placed_by_its_range_when_its_name_says_nothing(tmp_path, style):
    # a name no table knows ("batch_px"): a batch-shaped tensor of values in [0, 16] is the data
    run = train(tmp_path / "run.jsonl", style, bug=Bug(raw_pixels=True), steps=30)
    text = run.path.read_text().replace(f'"name":"{NAMES[style]["x0"]}"', '"name":"batch_px"')
    text = text.replace(
        '"name":"batch_px","kind":"tensor","role":"x0"', '"name":"batch_px","kind":"tensor","role":null'
    )
    run.path.write_text(text)
    report = diagnose(run.path)
    assert "'batch_px' as x0" in " ".join(report.log.notes())
    assert statuses(report)["data_normalization"] == "fail"


def test_unplaced_tensors_are_named_with_the_way_to_place_them(tmp_path):
    # names nothing can place (x_t and the noise logged as "h2" and "h3"): named once, with the way to place them
    run = train(tmp_path / "run.jsonl", "natural", steps=20)
    text = run.path.read_text()
    for old, new in (("noisy", "h2"), ("noise", "h3")):
        role = "x_t" if old == "noisy" else "noise"
        text = text.replace(
            f'"name":"{old}","kind":"tensor","role":"{role}"', f'"name":"{new}","kind":"tensor","role":null'
        )
    run.path.write_text(text)
    report = diagnose(run.path)
    notes = " ".join(report.log.notes())
    assert "could not tell what 'h3', 'h2' are" in notes and "--role h3=x0" in notes  # in log order
    f = finding(report, "forward_process")
    assert f.status == "skip" and "'h2'" in f.summary, f.summary
    placed = diagnose(run.path, roles={"h2": "x_t", "h3": "noise"})
    assert statuses(placed)["forward_process"] == "ok" and not placed.log.unplaced
    with pytest.raises(ValueError, match="no record named 'nope'"):
        diagnose(run.path, roles={"nope": "x0"})


@pytest.mark.parametrize("style", STYLES)
def test_unscaled_latents(tmp_path, style):
    # latent diffusion: the documented role `latents` is the training data when no x0 is logged
    bad = train(tmp_path / "bad.jsonl", style, bug=Bug(latent_scale=6.0), steps=40)
    f = finding(diagnose(bad.path), "data_normalization")
    assert f.status == "fail" and f.evidence["role"] == "latents" and "scaling factor" in f.summary, f.summary
    good = train(tmp_path / "good.jsonl", style, bug=Bug(latent_scale=1 / 0.75), steps=40)
    assert statuses(diagnose(good.path))["data_normalization"] == "ok"


@pytest.mark.parametrize("style", STYLES)
def test_t_drawn_from_num_inference_steps(tmp_path, style):
    # T confused with num_inference_steps: t ~ U{0..99} on a 1000-step schedule
    run = train(tmp_path / "run.jsonl", style, bug=Bug(t_max=100), steps=100)
    report = diagnose(run.path)
    f = finding(report, "timestep_distribution")
    assert f.status == "fail" and "never trains at high noise" in f.summary, f.summary
    assert f.evidence["range"] == [0.0, 99.0] and f.evidence["mean_noise_variance"] < 0.1
    told = finding(diagnose(run.path, num_train_timesteps=1000), "timestep_distribution")
    assert told.status == "fail" and "1000 timesteps" in told.summary
    healthy = train(tmp_path / "ok.jsonl", style, steps=100)
    h = finding(diagnose(healthy.path), "timestep_distribution")
    assert h.status == "ok" and h.evidence["mean_noise_variance"] > 0.5


# --- report 001: clipping and blow-up -----------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_ddim_without_clipping_blows_up(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, steps=60)
    x = sample(run, bug=Bug(no_clip=True))
    report = diagnose(run.path)
    f = finding(report, "clip_saturation")
    assert f.status == "fail" and "blew up" in f.summary, f.summary
    assert float(x.abs().max()) > 10 and f.evidence["blowup"]["absmax"] > 10
    assert statuses(report)["samples_like_noise"] == "fail"


@pytest.mark.parametrize("style", STYLES)
def test_clip_counts_logged_within_one_step_are_summed(tmp_path, style, trained):
    # an x0 model read as eps clips most of its x0 estimates (report 001's "clipped=1000+ values"); logged
    # without rec.step() between sampling steps, 50 clip counts share one record and must add up, not average
    run = fork(trained(style, "sample"), tmp_path / "run.jsonl")
    sample(run, bug=Bug(sample_as="epsilon"), step_each=False)
    clipped = run.clip_counts
    true_share = sum(c for c, _ in clipped) / sum(n for _, n in clipped)
    f = finding(diagnose(run.path), "clip_saturation")
    assert f.evidence["one_record_step"] and f.evidence["late_fraction"] == pytest.approx(true_share, rel=1e-6)
    assert true_share > 0.6 and f.status == "fail", f.summary


@pytest.mark.parametrize("style", STYLES)
def test_x0_model_sampled_as_eps(tmp_path, style, trained):
    run = fork(trained(style, "sample"), tmp_path / "run.jsonl")
    sample(run, bug=Bug(sample_as="epsilon"))
    report = diagnose(run.path)
    st = statuses(report)
    assert st["clip_saturation"] == "fail" and st["samples_like_noise"] == "fail", report.summary_lines()
    r = which_target(lambda x, t: run.model(x.reshape(len(x), -1), t), run.data[:256], schedule=SCHEDULE)
    assert r.predicted == "sample" and r.finding("epsilon").status == "fail"


# --- report 002: the prediction type --------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("style", STYLES)
def test_eps_model_sampled_as_x0(tmp_path, style, sampler, trained):
    # report 002: eps-trained, sampled as x0 (its own case: DDPM with x0 clipping), loss fine all along
    run = fork(trained(style), tmp_path / "run.jsonl")
    sample(run, sampler=sampler, bug=Bug(sample_as="sample"))
    report = diagnose(run.path)
    st = statuses(report)
    assert st["loss_trend"] == "ok" and st["samples_like_noise"] == "fail", report.summary_lines()
    f = finding(report, "samples_like_noise")
    assert "training looks fine" in f.summary and "prediction type" in f.summary, f.summary
    if style == "natural":
        assert f.evidence["real"]["from"] == "x0"  # no role real: the training data are the reference
    r = which_target(run.model, run.data[:256], schedule=SCHEDULE)
    assert r.predicted == "epsilon" and r.finding("sample").status == "fail"


@pytest.mark.parametrize("style", STYLES)
def test_undertrained_model_is_called_undertrained(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, steps=30)
    sample(run)
    f = finding(diagnose(run.path), "samples_like_noise")
    assert f.status in ("warn", "fail") and "undertrained" in f.summary, f.summary
    assert "training looks fine" not in f.summary


# --- report 003: flow matching --------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_flow_sampler_scaling_the_velocity(tmp_path, style, trained):
    # report 003's 0.29x: the sampler multiplies the velocity by 0.3; the model itself is fine
    healthy = trained(style, "flow")
    run = fork(healthy, tmp_path / "run.jsonl")
    sample(run, bug=Bug(velocity_scale=0.3))
    f = finding(diagnose(run.path), "samples_like_noise")
    assert f.status in ("warn", "fail") and "sampler" in f.summary, f.summary
    model = healthy.model
    data = healthy.data[:256]
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(3))
    # the model is aligned with its target (diffusers-style: source = data, target = noise, v = noise - data) ...
    rows = alignment_per_t(lambda x, s: model(x, s * 1000), data, noise)
    assert alignment_finding(rows).status != "fail", rows
    # ... the teacher check of the user's own sampler finds the fault, and passes the unscaled sampler
    bad = teacher_euler(data, noise, steps=(10, 50), sampler=lambda v, x, n: flow_euler(v, x, n, scale=0.3))
    good = teacher_euler(data, noise, steps=(10, 50), sampler=flow_euler)
    assert bad.finding().status == "fail" and good.finding().status == "ok"
    assert max(good.values()) < 1e-10 and min(bad.values()) > 0.1 * good.scale


def test_shoot_separates_a_healthy_flow_model_from_a_broken_one(trained):
    healthy = trained("documented", "flow")
    data = healthy.data[:512]
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(4))

    def model(x, s):
        return healthy.model(x, s * 1000)

    good = shoot(model, data, noise, steps=50)
    weak = shoot(lambda x, s: 0.29 * model(x, s), data, noise, steps=50)  # report 003's norm ratio
    # the paired MSE alone ranks them the wrong way round (independent pairs: the healthy field lands elsewhere)
    assert float(weak) < float(good)
    assert good.finding().status != "fail" and weak.finding().status == "fail", (good.finding(), weak.finding())


# --- report 004: weights that do not train ----------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_head_replaced_after_the_optimizer_was_built(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, bug=Bug(head_not_in_optimizer=True), steps=60)
    f = finding(diagnose(run.path), "params_frozen")
    assert f.status == "fail" and "gradients" in f.summary, f.summary
    assert set(f.evidence["frozen_with_gradients"]) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("style", STYLES)
def test_learning_rate_zero_mid_run(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, bug=Bug(freeze_at=60), steps=120)
    f = finding(diagnose(run.path), "params_frozen")
    assert f.status == "fail" and f.evidence["frozen"] == 6 and 60 <= f.evidence["since"] <= 70, f.summary


# --- NaN --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_nan_entering_through_the_data(tmp_path, style):
    run = train(tmp_path / "run.jsonl", style, bug=Bug(nan_at=150), steps=220)
    report = diagnose(run.path)
    f = finding(report, "nonfinite")
    assert f.status == "fail" and f.evidence["first_step"] == 150
    assert f.evidence["first_name"] == NAMES[style]["x0"], f.summary  # the cause, not a parameter
    st = statuses(report)
    # consequences of the NaN are not reported as causes: each rule judges the steps before it
    for rule in ("params_frozen", "fm_alignment", "loss_trend"):
        assert st[rule] == "ok", report.summary_lines()
    assert finding(report, "loss_trend").evidence["judged_until"] == 150
    assert "before step 150" in finding(report, "params_frozen").summary
