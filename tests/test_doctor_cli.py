"""`fastdiff doctor` on the command line: exit codes, the files it writes, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from doctor_logs import training_run

from fastdiff.cli import main
from fastdiff.data import spectra


def write(path, builder):
    path.write_text("\n".join(builder.lines) + "\n")
    return str(path)


def test_healthy_log_exits_0_and_writes_the_report(tmp_path, capsys):
    log = write(tmp_path / "run.jsonl", training_run(seed=3))
    md, js = tmp_path / "report.md", tmp_path / "report.json"
    assert main(["doctor", log, "--out", str(md), "--json", str(js)]) == 0
    findings = json.loads(js.read_text())["findings"]
    assert {f["id"] for f in findings} >= {"nonfinite", "data_normalization", "params_frozen", "samples_like_noise"}
    assert all(f["status"] != "fail" for f in findings)
    assert "data_normalization" in md.read_text()
    assert "steps 0..59" in capsys.readouterr().out


def test_failing_log_exits_1_and_names_the_findings(tmp_path, capsys):
    log = write(tmp_path / "run.jsonl", training_run(seed=1, data_scale=100.0, frozen_from=20))
    assert main(["doctor", log, "--no-plots"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  data_normalization" in out and "FAIL  params_frozen" in out


def test_truncated_log_is_read_up_to_the_cut(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(training_run(seed=0).lines) + '\n{"step": 60, "name": "x0", "ki')
    assert main(["doctor", str(path), "--no-plots"]) == 0
    assert "cut off" in capsys.readouterr().out


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such log file"), ("", "holds no valid fastdiff record"), ("not json\n", "holds no valid")],
)
def test_unreadable_logs_are_exit_2_without_traceback(tmp_path, capsys, content, message):
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)
    assert main(["doctor", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unwritable_output_is_refused_before_reading(tmp_path, capsys):
    log = write(tmp_path / "run.jsonl", training_run(seed=0, steps=5))
    assert main(["doctor", log, "--out", str(tmp_path / "missing" / "r.md")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_checkpoints_flags_a_frozen_layer(tmp_path, capsys):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    torch.save(net.state_dict(), tmp_path / "a.pt")
    with torch.no_grad():
        net[1].weight.add_(0.1)  # layer 0 and the bias of layer 1 never change: frozen
    torch.save(net.state_dict(), tmp_path / "b.pt")
    js = tmp_path / "diff.json"
    rc = main(["doctor", "checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--json", str(js)])
    finding = json.loads(js.read_text())["findings"][0]
    assert finding["id"] == "checkpoint_diff" and finding["status"] in ("warn", "fail")
    assert rc == (1 if finding["status"] == "fail" else 0)
    assert "0.weight" in json.dumps(finding["evidence"])
    assert main(["doctor", "checkpoints", str(tmp_path / "a.pt")]) == 2
    assert main(["doctor", "checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "nope.pt")]) == 2


def test_samples_noise_against_spectra(tmp_path, capsys):
    real = spectra(128, length=32, seed=0)
    torch.save(real, tmp_path / "real.pt")
    torch.save(torch.randn(128, 1, 32) * 0.5, tmp_path / "noise.pt")
    torch.save({"samples": spectra(128, length=32, seed=1)}, tmp_path / "good.pt")
    assert main(["doctor", "samples", str(tmp_path / "noise.pt"), str(tmp_path / "real.pt")]) == 1
    assert "N(0," in capsys.readouterr().out
    assert main(["doctor", "samples", str(tmp_path / "good.pt"), str(tmp_path / "real.pt")]) == 0
    assert main(["doctor", "samples", str(tmp_path / "nope.pt"), str(tmp_path / "real.pt")]) == 2
    torch.save([1, 2], tmp_path / "list.pt")
    assert main(["doctor", "samples", str(tmp_path / "list.pt"), str(tmp_path / "real.pt")]) == 2
    assert "accepted: a tensor" in capsys.readouterr().err


# --- checkpoints as people save them (issue 19) -----------------------------------------------------


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.SiLU(), torch.nn.Linear(8, 2))


def test_checkpoint_with_args_namespace_and_numpy_step(tmp_path, capsys):
    import argparse

    import numpy as np

    net = _net()
    args = argparse.Namespace(lr=1e-4, data="/data", steps=100_000)
    torch.save({"args": args, "global_step": np.int64(82000), "model": {"ema": net.state_dict()}}, tmp_path / "a.pt")
    with torch.no_grad():
        net[2].weight.add_(0.1)
    torch.save({"args": args, "global_step": np.int64(100000), "state_dict": net.state_dict()}, tmp_path / "b.pt")
    js = tmp_path / "diff.json"
    rc = main(["doctor", "checkpoints", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--json", str(js)])
    out, err = capsys.readouterr()
    assert rc == 0 and err == "" and "4 parameters" in out  # read safely, weights found at any depth
    f = json.loads(js.read_text())["findings"][0]
    assert f["status"] == "warn" and f["evidence"]["identical"] == 3  # only the last weight moved
    assert f["evidence"]["metadata_b"]["global_step"] == "100000"


def test_pickled_module_is_refused_in_one_line_unless_trusted(tmp_path, capsys):
    torch.save(_net(0), tmp_path / "whole_model.pt")  # torch.save(model): the commonest checkpoint there is
    torch.save(_net(0).state_dict(), tmp_path / "weights.pt")
    a, b = str(tmp_path / "whole_model.pt"), str(tmp_path / "weights.pt")
    assert main(["doctor", "checkpoints", a, b]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "--trust-pickle" in err and "torch.nn.modules" in err
    assert main(["doctor", "checkpoints", a, b, "--trust-pickle"]) == 1  # read: the same weights, bit-identical
    assert "bit-identical" in capsys.readouterr().out


def test_wrapped_names_safetensors_and_unreadable_files(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    net = _net(1)
    save_file(net.state_dict(), str(tmp_path / "plain.safetensors"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    ddp = {f"module.{k}": v for k, v in net.state_dict().items()}  # saved from a DistributedDataParallel model
    torch.save({"model_state_dict": ddp, "optimizer_state_dict": {"state": {}}}, tmp_path / "ddp.pth")
    assert main(["doctor", "checkpoints", str(tmp_path / "plain.safetensors"), str(tmp_path / "ddp.pth")]) == 0
    assert "4 parameters" in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    assert main(["doctor", "checkpoints", str(tmp_path / "junk.pt"), str(tmp_path / "ddp.pth")]) == 2
    err = capsys.readouterr().err
    assert "is not a torch.save file" in err and len(err.strip().splitlines()) == 1


def test_samples_saved_with_metadata(tmp_path, capsys):
    import argparse

    real = spectra(128, length=32, seed=0)
    torch.save({"samples": torch.randn(128, 1, 32) * 0.5, "args": argparse.Namespace(steps=50)}, tmp_path / "g.pt")
    torch.save(real, tmp_path / "real.pt")
    assert main(["doctor", "samples", str(tmp_path / "g.pt"), str(tmp_path / "real.pt")]) == 1
    assert "N(0," in capsys.readouterr().out


def test_doctor_help_shows_one_log_and_the_active_checks(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "fastdiff doctor RUN.jsonl [--out" in out and "[RUN.jsonl" not in out and "RUN.jsonl ..." not in out
    assert "fastdiff doctor checkpoints A.pt B.pt" in out and "--trust-pickle" in out and "--role NAME=ROLE" in out


def test_role_flag_places_unnamed_tensors(tmp_path, capsys):
    b = training_run(seed=0, steps=20)
    text = "\n".join(b.lines).replace(
        '"name": "x_0", "kind": "tensor", "role": "x0"', '"name": "h", "kind": "tensor", "role": null'
    )
    path = tmp_path / "run.jsonl"
    path.write_text(text + "\n")
    js = tmp_path / "r.json"
    main(["doctor", str(path), "--no-plots", "--json", str(js)])
    st = {f["id"]: f["status"] for f in json.loads(js.read_text())["findings"]}
    out = capsys.readouterr().out
    assert "'h'" in out  # placed from its statistics (batch-shaped, within [-1, 1]?) or named as unplaced
    main(["doctor", str(path), "--no-plots", "--json", str(js), "--role", "h=x0"])
    st = {f["id"]: f["status"] for f in json.loads(js.read_text())["findings"]}
    assert st["data_normalization"] == "ok"
    with pytest.raises(SystemExit):
        main(["doctor", str(path), "--role", "h=nonsense"])
    assert "expected NAME=ROLE" in capsys.readouterr().err
