"""Recorder.watch: parameter / gradient / update / activation stats that never change training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from backends import backend_params
from oracle import STATS_RTOL

import fastdiff as fd
from fastdiff.data import spectra
from fastdiff.models.unet1d import UNet1D


def lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def by_key(path) -> dict[tuple[int, str], dict]:
    return {(r["step"], r["name"]): r for r in lines(path)}


def train(steps: int, rec: fd.Recorder | None = None, watch: dict | None = None, frozen_from: int | None = None):
    """A small DDPM-style loop with AdamW; returns (model, losses). Same seeds -> the same run."""
    torch.manual_seed(0)
    net = UNet1D(channels=(8, 16), t_dim=16)
    if rec is not None and watch is not None:
        rec.watch(net, **watch)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    data = spectra(16, 32, seed=1)
    gen = torch.Generator().manual_seed(2)
    losses = []
    for step in range(steps):
        if frozen_from is not None and step >= frozen_from:
            for group in opt.param_groups:  # report 004: the optimizer silently stops updating
                group["lr"] = 0.0
        t = torch.randint(0, 1000, (8,), generator=gen)
        noise = torch.randn(8, 1, 32, generator=gen)
        x0 = data[torch.randint(0, 16, (8,), generator=gen)]
        a = torch.cos(t.float() / 1000 * math.pi / 2)[:, None, None]
        x_t = a * x0 + (1 - a * a).sqrt() * noise
        pred = net(x_t, t)
        loss = torch.nn.functional.mse_loss(pred, noise)
        if rec is not None:
            rec.log("x0", x0)
            rec.log("t", t)
            rec.log("x_t", x_t, per_sample=True)
            rec.log_pair("pred~noise", pred, noise)
            rec.log_scalar("loss", loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.step()
        losses.append(loss.detach().clone())
    return net, losses


def test_training_is_bit_identical_with_and_without_probes(tmp_path):
    plain_net, plain_losses = train(4)
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch", flush_every=2, histogram_bins=8) as rec:
        probed_net, probed_losses = train(4, rec, watch=dict(every=1, activations=True))
    assert all(torch.equal(a, b) for a, b in zip(plain_losses, probed_losses))
    for (name, a), (_, b) in zip(plain_net.state_dict().items(), probed_net.state_dict().items()):
        assert torch.equal(a, b), name
    names = {r["name"] for r in lines(path)}
    assert {"param/stem.weight", "grad/stem.weight", "update/stem.weight", "act/stem", "act/down.0.conv1"} <= names


@pytest.mark.parametrize("backend", backend_params())
def test_param_grad_update_records_are_the_stats_of_those_tensors(tmp_path, backend):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3, bias=False))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "run.jsonl"
    seen = {}
    with fd.Recorder(path, backend=backend) as rec:
        rec.watch(net, every=2)
        for step in range(5):
            opt.zero_grad()
            net(torch.randn(4, 5)).square().mean().backward()
            opt.step()  # the watch captures right here, at even steps
            seen[step] = {n: (p.detach().clone(), p.grad.clone()) for n, p in net.named_parameters()}
            rec.step()
    got = by_key(path)
    assert {s for s, n in got} == {0, 2, 4}

    def same(record, x):
        want = fd.tensor_stats(x, backend=backend).to_dict()
        for k, v in want.items():
            if backend == "triton" and k not in ("count", "min", "max", "absmax"):  # batch-dependent sums
                assert record[k] == pytest.approx(v, rel=1e-12, abs=1e-300), (record["name"], k)
                continue
            assert record[k] == (v if math.isfinite(v) else None), (record["name"], k)

    for step in (0, 2, 4):
        for name, (w, g) in seen[step].items():
            same(got[step, f"param/{name}"], w)
            same(got[step, f"grad/{name}"], g)
            assert got[step, f"param/{name}"]["role"] == "param" and got[step, f"grad/{name}"]["role"] == "grad"
            if step == 0:
                assert (step, f"update/{name}") not in got  # nothing to compare with yet
                continue
            delta = w - seen[step - 2][name][0]
            same(got[step, f"update/{name}"], delta)
            ratio = got[step, f"update_ratio/{name}"]
            assert ratio["kind"] == "scalar" and ratio["role"] == "update"
            l2 = got[step, f"update/{name}"]["l2"] / got[step, f"param/{name}"]["l2"]
            assert ratio["value"] == pytest.approx(l2, rel=1e-15)  # the ratio of the records' own norms
            exact = (delta.double().norm() / w.double().norm()).item()
            # float64 sums in the torch backend; float lanes (blocks of 1024, merged in float64) in C++ / Triton
            assert ratio["value"] == pytest.approx(exact, rel=1e-12 if backend == "torch" else STATS_RTOL)


def test_frozen_weights_show_as_zero_updates(tmp_path):
    # Report 004: weights identical from step 82k on. Here: lr = 0 from step 4.
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        train(8, rec, watch=dict(every=2), frozen_from=4)
    got = by_key(path)
    name = "down.0.conv1.weight"
    assert got[2, f"update_ratio/{name}"]["value"] > 1e-4
    assert got[4, f"update_ratio/{name}"]["value"] > 1e-4  # w4 - w2 holds the update of step 3
    for step in (6,):
        update = got[step, f"update/{name}"]
        assert got[step, f"update_ratio/{name}"]["value"] == 0.0
        assert update["zero_count"] == update["count"] and update["absmax"] == 0.0


def test_watch_without_an_optimizer_captures_at_step(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        rec.watch(net, every=1, params=False)
        for _ in range(3):
            net(torch.randn(4, 3)).sum().backward()
            with torch.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
            rec.step()  # grads still there: captured now
            net.zero_grad()
    got = by_key(path)
    assert not any(n.startswith("param/") for _, n in got)  # params=False: not written, still used for ratios
    assert {(s, "grad/weight") for s in range(3)} <= set(got)
    assert {(s, "update_ratio/bias") for s in (1, 2)} <= set(got) and (0, "update/bias") not in got


def test_watch_options_and_errors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        watch = rec.watch(net, params=True, grads=False, updates=False, activations=["0"], every=1)
        with pytest.raises(ValueError, match="already watched"):
            rec.watch(net)
        other = rec.watch(net, prefix="ema.", grads=False, every=1)
        with pytest.raises(ValueError, match="does not have"):
            rec.watch(net, prefix="x.", activations=["nope"])
        with pytest.raises(ValueError, match="every"):
            rec.watch(net, prefix="y.", every=0)
        net(torch.randn(2, 3))
        rec.step()
        watch.remove()
        other.remove()
        net(torch.randn(2, 3))
        rec.step()
    got = by_key(path)
    params = ("0.weight", "0.bias", "2.weight", "2.bias")
    assert {n for _, n in got} == {f"param/{p}" for p in params} | {f"param/ema.{p}" for p in params} | {"act/0"}
    assert {s for s, _ in got} == {0}  # removed watches record nothing


@pytest.mark.parametrize("backend", backend_params())
def test_update_stats_keep_signs_and_non_finite_counts(tmp_path, backend):
    # torch / Triton: the update is w_prev - w in place of the snapshot, then its stats are flipped: check the
    # flip; C++: one fused pass
    net = torch.nn.Linear(4, 3, bias=False)
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend=backend) as rec:
        rec.watch(net, every=1, grads=False)
        before = net.weight.detach().clone()
        rec.step()
        with torch.no_grad():
            net.weight[0, 0] = math.inf
            net.weight[0, 1] = -math.inf
            net.weight[1, 0] = math.nan
            net.weight[2] += torch.tensor([1.0, 2.0, 3.0, -4.0])
        rec.step()
    got = by_key(path)[1, "update/weight"]
    delta = net.weight.detach() - before
    want = fd.tensor_stats(delta, backend=backend).to_dict()
    assert (got["posinf_count"], got["neginf_count"], got["nan_count"]) == (1, 1, 1)
    for k in ("count", "zero_count", "min", "max", "mean", "std", "absmax", "l2"):
        assert got[k] == want[k], k
    assert got["min"] == pytest.approx(-4.0) and got["max"] == pytest.approx(3.0)


def test_mixed_dtypes_and_a_dtype_change(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 4).double(), torch.nn.Linear(4, 2))
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        rec.watch(net, every=1, grads=False)
        rec.step()  # snapshots of the float32 and float64 groups
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        rec.step()  # updates of both groups
        net[1].half()  # a new (float16) group: no update for it this time; the float32 group keeps its own
        with torch.no_grad():
            net[0].weight.mul_(2.0)
            net[2].bias.add_(1.0)
        before = {n: p.detach().double().clone() for n, p in net.named_parameters()}
        rec.step()
    got = by_key(path)
    assert {n for s, n in got if s == 1 and n.startswith("update_ratio/")} == {
        f"update_ratio/{i}.{k}" for i in range(3) for k in ("weight", "bias")
    }
    ratios = {n for s, n in got if s == 2 and n.startswith("update_ratio/")}
    assert ratios == {f"update_ratio/{i}.{k}" for i in (0, 2) for k in ("weight", "bias")}
    w0 = before["0.weight"]
    assert got[2, "update_ratio/0.weight"]["value"] == pytest.approx(((w0 - w0 / 2).norm() / w0.norm()).item())
    assert got[2, "update_ratio/2.weight"]["value"] == 0.0
    b2 = before["2.bias"]
    assert got[2, "update_ratio/2.bias"]["value"] == pytest.approx((b2.numel() ** 0.5 / b2.norm()).item())
