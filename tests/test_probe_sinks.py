"""Probe sinks: a JSONL log that survives a killed process, TensorBoard event files, wandb offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import fastdiff as fd
from fastdiff.probe import TensorBoardSink, WandbSink, read_jsonl

WRITER = textwrap.dedent(
    """
    import sys, torch, fastdiff as fd
    rec = fd.Recorder(sys.argv[1], backend="torch", flush_every=10**9)
    step = 0
    while True:
        rec.log("x", torch.randn(64) + step)
        rec.log_pair("p", torch.randn(64), torch.randn(64))
        rec.log_scalar("loss", float(step))
        rec.step()
        step += 1
        if step % 5 == 0:
            rec.flush()
            print(step, flush=True)  # every record of steps < step is flushed
    """
)


def test_killed_process_leaves_every_flushed_line_intact(tmp_path):
    path = tmp_path / "run.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        flushed = 0
        deadline = time.monotonic() + 120
        while flushed < 30 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            flushed = int(line)
        os.kill(proc.pid, signal.SIGKILL)  # no close(), no atexit: as an OOM kill or a preemption
    finally:
        proc.kill()
        proc.wait()
    assert flushed >= 30, "the writer did not get far enough"
    log = read_jsonl(path)
    assert log.skipped == 0 and log.unknown_keys == 0
    steps = {(r["step"], r["name"]) for r in log.records}
    assert {(s, n) for s in range(flushed) for n in ("x", "p", "loss")} <= steps
    loss = [r for r in log.records if r["name"] == "loss"]
    assert [r["value"] for r in loss] == [float(r["step"]) for r in loss]
    # a kill in the middle of a write may cut the very last line only; everything before it parses
    complete = path.read_bytes().split(b"\n")[:-1]
    assert all(json.loads(line) for line in complete)


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    xs = [torch.randn(1000) * (i + 1) for i in range(3)]
    with fd.Recorder(
        tmp_path / "run.jsonl", sinks=[TensorBoardSink(logdir)], backend="torch", histogram_bins=20
    ) as rec:
        for x in xs:
            rec.log("x_t", x)
            rec.log_pair("pred~target", x, x * 2)
            rec.log_scalar("loss", torch.tensor(float(x.std())))
            rec.step()
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    records = {(r["step"], r["name"]): r for r in read_jsonl(tmp_path / "run.jsonl").records}
    for tag, name, field in (("x_t/std", "x_t", "std"), ("pred~target/norm_ratio", "pred~target", "norm_ratio")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [0, 1, 2]
        for e in events:
            assert e.value == pytest.approx(records[e.step, name][field], rel=1e-6)  # TB stores float32
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx([records[s, "loss"]["value"] for s in range(3)])
    hists = acc.Histograms("x_t/hist")
    assert [h.step for h in hists] == [0, 1, 2]
    for h in hists:
        r = records[h.step, "x_t"]
        assert h.histogram_value.num == 1000 and h.histogram_value.min == pytest.approx(r["min"])
        assert list(h.histogram_value.bucket) == r["hist"]["counts"]


def test_wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="fastdiff-test", dir=str(tmp_path), mode="offline")
    try:
        with fd.Recorder(None, sinks=[WandbSink(run)], backend="torch", histogram_bins=8) as rec:
            for step in range(3):
                rec.log("x_t", torch.arange(10.0) + step)
                rec.log_scalar("loss", 1.0 / (step + 1))
                rec.step()
        summary = dict(run.summary)
        assert summary["probe/step"] == 2 and summary["probe/loss"] == pytest.approx(1 / 3)
        assert summary["probe/x_t/mean"] == pytest.approx(6.5) and summary["probe/x_t/max"] == 11.0
        assert summary["probe/x_t/hist"]["_type"] == "histogram"
    finally:
        run.finish()
    assert any(name.endswith(".wandb") for _, _, files in os.walk(tmp_path) for name in files)


def test_sink_extras_say_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_extras(name, *args, **kwargs):
        if name in ("wandb", "torch.utils.tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_extras)
    with pytest.raises(ImportError, match=r"fastdiff\[tb\]"):
        fd.Recorder(None, sinks=[TensorBoardSink(tmp_path)])
    with pytest.raises(ImportError, match=r"fastdiff\[wandb\]"):
        fd.Recorder(None, sinks=[WandbSink()])


def test_records_are_written_at_exit_without_close(tmp_path):
    path = tmp_path / "run.jsonl"
    script = "import sys, torch, fastdiff as fd\nrec = fd.Recorder(sys.argv[1], backend='torch')\n"
    script += "rec.log('x', torch.ones(3))\nrec.step()\nrec.log_scalar('loss', 0.5)\n"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120)
    assert [(r["step"], r["name"]) for r in read_jsonl(path).records] == [(0, "x"), (1, "loss")]
