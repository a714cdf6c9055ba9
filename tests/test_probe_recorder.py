"""fastdiff.Recorder (API.md section 3): what lands in the log equals the stats ops, with no host sync."""

from __future__ import annotations

import json
import math

import pytest
import torch
from backends import backend_params

import fastdiff as fd
from fastdiff import reference
from fastdiff.probe import Sink, read_jsonl
from fastdiff.stats import PAIR_FIELDS, TENSOR_FIELDS

BACKENDS = backend_params()


def lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def as_json(d: dict) -> dict:
    """A to_dict() row as the JSONL writes it (non-finite -> None)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_records_equal_the_stats_ops(tmp_path, backend):
    x = torch.randn(6, 33) * 4 + 100
    x[1, 3], x[2, 5], x[4, 0], x[5, :] = math.nan, math.inf, -math.inf, 0.0
    a, b = torch.randn(6, 33), torch.randn(6, 33, dtype=torch.float64)
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend=backend) as rec:
        rec.log("x_t", x)
        rec.log("x", x[:, ::2].half(), per_sample=True)
        rec.log_pair("v_pred~v_tgt", a, b)
        rec.log_pair("per", a, b, per_sample=True)
        rec.log_scalar("loss", torch.tensor(0.25, dtype=torch.bfloat16))
        rec.log_scalar("lr", 1e-4)
        rec.step()
        rec.log_scalar("loss", torch.tensor([math.nan]))
        rec.log("u16", (torch.arange(7) * 9000).to(torch.uint16))  # a dtype the C++ extension does not read
    got = {(r["step"], r["name"]): r for r in lines(path)}
    assert list(got) == [
        (0, "x_t"), (0, "x"), (0, "v_pred~v_tgt"), (0, "per"), (0, "loss"), (0, "lr"), (1, "loss"), (1, "u16")
    ]  # fmt: skip
    u16 = as_json(fd.tensor_stats((torch.arange(7) * 9000).to(torch.uint16), backend="torch").to_dict())
    assert got[1, "u16"] == {"step": 1, "name": "u16", "kind": "tensor", "role": None, **u16}

    want = as_json(fd.tensor_stats(x, backend=backend).to_dict())
    assert got[0, "x_t"] == {"step": 0, "name": "x_t", "kind": "tensor", "role": "x_t", **want}
    per = fd.tensor_stats(x[:, ::2].half(), dim=0, backend=backend).to_dict()
    rec = got[0, "x"]
    assert rec["per_sample"] == {
        k: [None if isinstance(v, float) and not math.isfinite(v) else v for v in per[k]] for k in TENSOR_FIELDS
    }
    # the whole-tensor fields of a per-sample record are the Chan merge of its rows (exact in float64):
    # against the oracle, they carry only the backend's own row error (API.md: 1e-6; torch: float64-exact)
    whole = reference.tensor_stats(x[:, ::2].half())
    for k in ("count", "nan_count", "posinf_count", "neginf_count", "zero_count", "min", "max"):
        assert rec[k] == as_json(whole)[k]
    rtol = 1e-12 if backend == "torch" else 1e-6
    assert rec["mean"] == pytest.approx(whole["mean"], rel=rtol) and rec["std"] == pytest.approx(whole["std"], rel=rtol)

    pair = as_json(fd.pair_stats(a, b, backend=backend).to_dict())
    assert got[0, "v_pred~v_tgt"] == {"step": 0, "name": "v_pred~v_tgt", "kind": "pair", "role": None, **pair}
    per_pair = fd.pair_stats(a, b, dim=0, backend=backend).to_dict()
    assert got[0, "per"]["per_sample"] == {k: per_pair[k] for k in PAIR_FIELDS}
    assert got[0, "per"]["mse"] == pytest.approx(pair["mse"], rel=1e-12)

    assert got[0, "loss"] == {"step": 0, "name": "loss", "kind": "scalar", "role": "loss", "value": 0.25}
    assert got[0, "lr"]["value"] == 1e-4 and got[0, "lr"]["role"] is None
    assert got[1, "loss"]["value"] is None  # NaN is null: strict JSON


def test_jsonl_is_strict_json_with_the_contract_keys(tmp_path):
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        rec.log("empty", torch.empty(0))
        rec.log("inf", torch.tensor([math.inf, -math.inf]))
        rec.log_pair("zero~zero", torch.zeros(3), torch.zeros(3))
        rec.log_scalar("s", math.inf)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    for line in text.splitlines():
        r = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
        fields = {"tensor": TENSOR_FIELDS, "pair": PAIR_FIELDS, "scalar": ("value",)}[r["kind"]]
        assert list(r) == ["step", "name", "kind", "role", *fields]
    empty, inf, pair, s = lines(path)
    assert empty["count"] == 0 and empty["mean"] is None and empty["l2"] == 0.0
    assert inf["posinf_count"] == 1 and inf["neginf_count"] == 1 and inf["max"] is None
    assert pair["cos"] is None and s["value"] is None


def test_default_roles_and_explicit_roles(tmp_path):
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        for name in ("x0", "x_0", "t", "noise", "eps", "x_t", "train/loss", "pred_x0", "latents", "feat"):
            rec.log(name, torch.randn(4))
        rec.log("h", torch.randn(4), role="sample")
        rec.log_scalar("recon_loss", 1.0)
    roles = {r["name"]: r["role"] for r in lines(path)}
    assert roles == {
        "x0": "x0",
        "x_0": "x0",
        "t": "t",
        "noise": "noise",
        "eps": "noise",
        "x_t": "x_t",
        "train/loss": "loss",
        "pred_x0": "pred_x0",
        "latents": "latents",
        "feat": None,
        "h": "sample",
        "recon_loss": "loss",
    }
    assert set(fd.probe.ROLES) == {
        "x0", "noise", "t", "x_t", "pred", "target", "pred_x0", "loss", "param", "grad", "update", "sample", "real",
        "latents",
    }  # fmt: skip


def test_same_name_twice_in_a_step_merges_as_concatenation(tmp_path):
    # micro-batches: the record is the stats of both tensors concatenated
    a = torch.randn(1000, dtype=torch.float64) * 3 + 1e6
    b = torch.randn(37, dtype=torch.float64) - 1e6
    b[3] = math.nan
    c, d = torch.randn(40), torch.randn(40) + 1
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        rec.log("x", a)
        rec.log("x", b)
        rec.log("rows", a.reshape(10, 100), per_sample=True)
        rec.log("rows", b[:30].reshape(3, 10), per_sample=True)
        rec.log_pair("p", c, d)
        rec.log_pair("p", d[:5], c[:5])
        rec.log_scalar("loss", torch.tensor(1.0))
        rec.log_scalar("loss", 2.0)
    got = {r["name"]: r for r in lines(path)}
    want = fd.tensor_stats(torch.cat([a, b]), backend="torch").to_dict()
    r = got["x"]
    for k in ("count", "nan_count", "min", "max", "absmax"):
        assert r[k] == want[k]
    for k in ("mean", "std", "l2"):
        assert r[k] == pytest.approx(want[k], rel=1e-9)
    rows = got["rows"]
    assert len(rows["per_sample"]["mean"]) == 13 and rows["count"] == 1030
    want_rows = fd.tensor_stats(torch.cat([a, b[:30]]), backend="torch").to_dict()
    assert rows["std"] == pytest.approx(want_rows["std"], rel=1e-9)
    want_pair = fd.pair_stats(torch.cat([c, d[:5]]), torch.cat([d, c[:5]]), backend="torch").to_dict()
    assert got["p"] == pytest.approx({"step": 0, "name": "p", "kind": "pair", "role": None, **want_pair}, rel=1e-12)
    assert got["loss"]["value"] == 1.5 and got["loss"]["logs"] == 2  # the mean of two calls, and how many
    assert "logs" not in got["x"] and "logs" not in got["p"]  # tensors and pairs merge exactly: nothing to say


def test_every_and_flush_every(tmp_path):
    path = tmp_path / "run.jsonl"
    rec = fd.Recorder(path, flush_every=3, backend="torch")
    for _ in range(7):
        rec.log("x", torch.randn(3))
        rec.log("sparse", torch.randn(3), every=4)
        rec.step()
        if rec.current_step == 3:
            assert [r["step"] for r in lines(path) if r["name"] == "x"] == [0, 1, 2]  # auto flush
    assert len(lines(path)) == 6 + 2  # steps 0..5 of x, steps 0 and 4 of sparse
    rec.close()
    steps = [(r["name"], r["step"]) for r in lines(path)]
    assert [s for n, s in steps if n == "sparse"] == [0, 4]
    assert [s for n, s in steps if n == "x"] == list(range(7))
    rec.close()  # idempotent


def test_buffer_grows_without_losing_records(tmp_path):
    path = tmp_path / "run.jsonl"
    xs = [torch.randn(50) + i for i in range(3000)]  # 3000 x 9 words > the initial 16K-word buffer
    with fd.Recorder(path, backend="torch", flush_every=10) as rec:
        for i, x in enumerate(xs):
            rec.log(f"x{i}", x)
    got = lines(path)
    assert len(got) == 3000
    assert all(r["mean"] == fd.tensor_stats(x, backend="torch").mean.item() for r, x in zip(got[::250], xs[::250]))


def test_histograms_match_histc(tmp_path):
    x = torch.randn(5000)
    x[0] = math.nan
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch", histogram_bins=16) as rec:
        rec.log("x", x)
        rec.log("flat", torch.full((7,), 2.0))
        rec.log("none", torch.full((3,), math.nan))
    r, flat, none = lines(path)
    finite = x[torch.isfinite(x)]
    assert r["hist"]["min"] == finite.min().item() and r["hist"]["max"] == finite.max().item()
    want = torch.histc(finite.double(), bins=16, min=r["hist"]["min"], max=r["hist"]["max"])
    got = torch.tensor(r["hist"]["counts"], dtype=torch.float64)
    assert got.sum() == finite.numel()
    assert (got - want).abs().sum() <= 2  # elements exactly on an edge may round to either side
    assert flat["hist"]["counts"][0] == 7 and sum(flat["hist"]["counts"]) == 7
    assert none["hist"] == {"min": None, "max": None, "counts": [0] * 16}


# --------------------------------------------------------------------------------------------------
# no host sync


def _forbid_host_reads(monkeypatch):
    def host_read(*args, **kwargs):
        raise AssertionError("host read (a sync on a GPU) in the probe's hot path")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)


# Triton runs here in its interpreter, which itself reads tensors on the host; on a GPU the check
# below (torch.cuda.set_sync_debug_mode) covers it.
@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] != "triton"])
def test_log_calls_never_read_the_host(tmp_path, monkeypatch, backend):
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    net(torch.randn(4, 8)).sum().backward()
    rec = fd.Recorder(tmp_path / "run.jsonl", backend=backend, histogram_bins=8, flush_every=1000)
    watch = rec.watch(net, every=1, activations=True)
    x = torch.randn(4, 8)
    _forbid_host_reads(monkeypatch)
    for _ in range(3):
        rec.log("x", x)
        rec.log("x_rows", x, per_sample=True)
        rec.log_pair("p", x, x + 1)
        rec.log_pair("p_rows", x, x + 1, per_sample=True)
        rec.log_scalar("loss", x.sum())
        rec.log_scalar("lr", 0.1)
        net(x)  # activation hooks
        watch.capture()  # what the optimizer hook runs
        with torch.no_grad():
            net[0].weight.add_(1.0)
        rec.step()  # capture fallback + step counter
    monkeypatch.undo()
    rec.close()
    names = {r["name"] for r in lines(tmp_path / "run.jsonl")}
    assert {"x", "p", "loss", "param/0.weight", "grad/0.weight", "update/0.weight", "update_ratio/0.weight"} <= names
    assert {"act/0", "act/1", "act/2"} <= names


@pytest.mark.parametrize("backend", BACKENDS)
def test_logging_builds_no_autograd_graph(tmp_path, backend):
    # the log calls run without a no_grad context: their inputs are detached first
    w = torch.randn(3, 5, requires_grad=True)
    y = w * 2
    rec = fd.Recorder(tmp_path / "run.jsonl", backend=backend, histogram_bins=4)
    rec.log("y", y)
    rec.log("y_rows", y, per_sample=True)
    rec.log_pair("p", y, w)
    rec.log_scalar("loss", y.sum())
    assert not any(b.words.requires_grad or b.words.grad_fn is not None for b in rec._buffers)
    y.sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 2.0))  # logging did not touch the graph
    rec.close()
    assert {r["name"] for r in lines(tmp_path / "run.jsonl")} == {"y", "y_rows", "p", "loss"}


@pytest.mark.gpu
def test_no_sync_on_cuda(tmp_path):
    dev = torch.device("cuda")
    net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(32, 64, device=dev)
    rec = fd.Recorder(tmp_path / "run.jsonl", histogram_bins=8, flush_every=1000)
    rec.watch(net, every=1, activations=True)
    for checked in (False, True):  # a warm-up pass (kernel compilation, allocations), then the checked one
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error" if checked else 0)
        try:
            out = net(x)  # activation hooks
            loss = out.square().mean()
            rec.log("x", x)
            rec.log("x_rows", x, per_sample=True)
            rec.log_pair("p", out, torch.zeros_like(out))
            rec.log_pair("p_rows", out, torch.zeros_like(out), per_sample=True)
            rec.log_scalar("loss", loss)
            opt.zero_grad()
            loss.backward()
            opt.step()  # the watch captures here (params, grads, updates from the second pass on)
            rec.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    rec.close()
    got = {r["name"] for r in lines(tmp_path / "run.jsonl")}
    assert {"x", "p", "loss", "param/0.weight", "grad/0.weight", "update/0.weight"} <= got


# --------------------------------------------------------------------------------------------------
# bad input: clear errors at the call, nothing already recorded lost


def test_bad_input_raises_at_the_call_and_keeps_the_records(tmp_path):
    path = tmp_path / "run.jsonl"
    rec = fd.Recorder(path, backend="torch")
    rec.log("x", torch.ones(3))
    rec.log_scalar("loss", 1.0)
    with pytest.raises(TypeError, match="list"):
        rec.log("y", [1.0, 2.0])
    with pytest.raises(TypeError, match="complex"):
        rec.log("y", torch.ones(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="first logged as tensor"):
        rec.log_scalar("x", 2.0)
    with pytest.raises(ValueError, match="first logged as tensor"):
        rec.log("x", torch.ones(3, 2), per_sample=True)
    with pytest.raises(ValueError, match="first logged as scalar"):
        rec.log_pair("loss", torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="shape"):
        rec.log_pair("p", torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="one-element"):
        rec.log_scalar("s", torch.ones(3))
    with pytest.raises(TypeError, match="str"):
        rec.log_scalar("s", "0.5")
    with pytest.raises(ValueError, match="role"):
        rec.log("z", torch.ones(2), role="weights")
    with pytest.raises(ValueError, match="role"):
        rec.log("x", torch.ones(2), role="noise")
    with pytest.raises(ValueError, match="every"):
        rec.log("z", torch.ones(2), every=0)
    with pytest.raises(ValueError, match="0-d"):
        rec.log("z", torch.tensor(1.0), per_sample=True)
    with pytest.raises(TypeError, match="name"):
        rec.log(3, torch.ones(2))
    with pytest.raises(TypeError, match="Module"):
        rec.watch("model")
    rec.log("y", torch.ones(2))  # "y" was never registered by the failed calls
    rec.close()
    with pytest.raises(RuntimeError, match="closed"):
        rec.log("x", torch.ones(3))
    with pytest.raises(RuntimeError, match="closed"):
        rec.step()
    assert [r["name"] for r in lines(path)] == ["x", "loss", "y"]


def test_unwritable_path_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot open the log"):
        fd.Recorder(blocker / "run.jsonl")
    with pytest.raises(OSError, match="cannot open the log"):
        fd.Recorder(tmp_path)  # a directory
    with pytest.raises(ValueError, match="somewhere"):
        fd.Recorder(None)
    with pytest.raises(ValueError, match="flush_every"):
        fd.Recorder(tmp_path / "a.jsonl", flush_every=0)
    with pytest.raises(ValueError, match="backend"):
        fd.Recorder(tmp_path / "a.jsonl", backend="gpu")


class FlakySink(Sink):
    def __init__(self, failures: int):
        self.failures, self.records = failures, []

    def write(self, records):
        if self.failures:
            self.failures -= 1
            raise OSError("disk full")
        self.records += records


def test_a_failing_sink_keeps_its_records_for_the_next_flush(tmp_path):
    flaky = FlakySink(failures=1)
    rec = fd.Recorder(tmp_path / "run.jsonl", sinks=[flaky], backend="torch")
    rec.log("x", torch.ones(3))
    with pytest.raises(RuntimeError, match="disk full"):
        rec.flush()
    assert [r["name"] for r in lines(tmp_path / "run.jsonl")] == ["x"]  # the other sink got it
    rec.step()
    rec.log("x", torch.zeros(3))
    rec.close()
    assert [(r["name"], r["step"]) for r in flaky.records] == [("x", 0), ("x", 1)]
    assert len(lines(tmp_path / "run.jsonl")) == 2


def test_reader_reports_truncation_and_skips_unknowns(tmp_path):
    path = tmp_path / "run.jsonl"
    with fd.Recorder(path, backend="torch") as rec:
        rec.log("x0", torch.randn(10))
        rec.log_scalar("loss", 0.5)
    good = path.read_text()
    bad = '{"step":1,"name":"q","kind":"histogram","role":null}\n{"step":1,"name":"r"}\nnot json\n'
    extra = '{"step":2,"name":"loss","kind":"scalar","role":"loss","value":0.25,"lr":1e-4,"epoch":0}\n'
    path.write_text(good + bad + extra + '{"step":3,"name":"loss","ki')
    log = read_jsonl(path)
    assert log.truncated and log.skipped == 3 and log.unknown_keys == 2
    assert [r["name"] for r in log.records] == ["x0", "loss", "loss"]
    assert log.series("loss", "value") == ([0, 2], [0.5, 0.25])
    assert log.names(role="x0") == ["x0"] and len(log.problems) == 4
    path.write_text(good)
    clean = read_jsonl(path)
    assert not clean.truncated and clean.skipped == 0 and clean.unknown_keys == 0
