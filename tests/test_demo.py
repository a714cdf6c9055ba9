"""`fastdiff demo`: runs end to end (quick mode), prints its sections, writes the figure, and its numbers
say what the demo claims: the forward process matches the schedule, the right parameterization samples
data-like values, and the eps-model read as x0 (report 002) gives noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastdiff.cli import main
from fastdiff.demo import run_demo


def test_demo(tmp_path):
    lines: list[str] = []
    result = run_demo(out=str(tmp_path), quick=True, print_fn=lines.append)
    text = "\n".join(lines)
    assert result["schedule_ok"]
    for row in result["forward"]:  # one-pass stats of x_t against alpha E[x0] and sqrt(alpha^2 Var + sigma^2)
        assert abs(row["mean"] - row["want_mean"]) < 0.02 and abs(row["std"] - row["want_std"]) < 0.03 * row["want_std"]
    assert result["loss_last"] < 0.5 * result["loss_first"]
    assert set(result["samplers"]) == {"ddim", "euler", "dpmpp_2m"}
    for name, r in result["samplers"].items():
        assert r["w1"] < 0.5 * result["wrong"]["w1"], name  # right parameterization: far closer to the data
        assert 0.0 <= r["clipped_frac"] <= 1.0
    assert result["wrong"]["outside_frac"] > 0.2  # noise, mostly outside the data range
    if result["png"] is not None:
        assert os.path.getsize(result["png"]) > 1000 and result["png"].startswith(str(tmp_path))
    for section in ("== 1. schedule and forward process", "== 2. train", "== 3. sample", "== 4. report 002", "== 5."):
        assert section in text
    assert "real" in text and "eps as x0" in text and "#" in text  # table and terminal histogram
    # section 5: the Recorder's log of a healthy run gives no failure; the active checks catch report 002
    assert result["doctor_failed"] == []
    assert result["target"] == "epsilon"
    assert list(result["checks"].values()) == ["fail", "ok", "fail", "ok"]
    report = json.loads((tmp_path / "report.json").read_text())
    ids = [f["id"] for f in report["findings"]]
    assert "clip_saturation" in ids and "params_frozen" in ids and ids.count("prediction_type") == 2
    statuses = {f["id"]: f["status"] for f in report["findings"][:10]}
    assert statuses["clip_saturation"] != "skip" and statuses["fm_alignment"] == "ok"  # the demo logged them
    assert "predicts **epsilon**" in (tmp_path / "report.md").read_text()
    # findings of one id are told apart by their labels, in the terminal, report.md and report.json alike
    labels = {f.get("label") for f in report["findings"] if f["id"] == "prediction_type"}
    assert labels == {"sampler as x0", "sampler as eps"}
    assert "`prediction_type` (sampler as x0)" in (tmp_path / "report.md").read_text()
    # progress while training, and how to run the command line afterwards
    assert sum(line.lstrip().startswith("step ") for line in lines) == 10
    assert any(" doctor " + str(tmp_path / "run.jsonl") in line for line in lines)
    assert "eps read as x0" in text and "% of values" in text  # values beyond the histogram: counted, not piled


def test_demo_default_folder_is_the_current_one(tmp_path, monkeypatch):
    from fastdiff import demo

    monkeypatch.chdir(tmp_path)
    assert os.path.abspath(demo.DEFAULT_OUT) == str(tmp_path / "fastdiff-demo")
    cli = demo.command_line()
    assert cli == "fastdiff" or cli.endswith("fastdiff") or cli.endswith("-m fastdiff")


def test_cli(capsys):
    assert main([]) == 2  # no command: help
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["nonsense"])
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0 and "--quick" in capsys.readouterr().out


def test_python_dash_m():
    r = subprocess.run([sys.executable, "-m", "fastdiff", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout
