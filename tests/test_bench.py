"""`fastdiff bench`: end to end on tiny sizes (no timing assertions), its files and fields, and clear errors
for bad input before anything runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

import fastdiff.bench as bench
from fastdiff.bench import cli as bench_cli
from fastdiff.bench import harness, readme, report
from fastdiff.bench.suites import SUITES, Suite
from fastdiff.cli import main

TINY = ["--quick", "--sizes", "4096", "--repeats", "2", "--no-compile", "--no-progress"]

TOP_FIELDS = ["schema", "command", "environment", "settings", "copy_bandwidth", "suites", "headlines", "rows",
              "elapsed_s"]  # fmt: skip
ENV_FIELDS = ["device", "device_type", "cpu", "cpu_count", "torch_threads", "gpu", "torch", "cuda", "triton",
              "diffusers", "numpy", "fastdiff", "python", "platform", "fastdiff_cpu_isa", "load_average_start",
              "load_average_end", "date", "command"]  # fmt: skip
SETTINGS_FIELDS = ["device", "suites", "all_suites", "sizes", "dtypes", "repeats", "quick", "compile"]
ROW_FIELDS = ["suite", "op", "size", "dtype", "device", "provider", "median_ms", "p20_ms", "p80_ms", "repeats",
              "bytes_moved", "gbps", "frac_copy_bw", "reference", "fastdiff_speedup"]  # fmt: skip
HEADLINE_FIELDS = ["what", "suite", "size", "dtype", "fastdiff", "fastdiff_ms", "other", "other_ms", "ratio", "kind",
                   "target", "target_met"]  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    """One tiny run of every available suite, shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", *TINY, "--out", str(out)]) == 0
    (path,) = out.glob("*.json")
    return json.loads(path.read_text()), out


def test_quick_run_writes_every_file(quick_run):
    result, out = quick_run
    stem = Path(report.output_stem(str(out), result))
    assert stem.name.startswith("cpu-") and stem.name.endswith("-quick")
    for ext in (".json", ".csv", ".md"):
        assert stem.with_suffix(ext).is_file(), ext
    assert f"`{result['command']}`" in stem.with_suffix(".md").read_text()
    assert result["command"].startswith("fastdiff bench --quick --sizes 4096")


def test_json_has_the_documented_fields(quick_run):
    result, _ = quick_run
    doc = bench.__doc__
    for group, fields in [
        (result, TOP_FIELDS),
        (result["environment"], ENV_FIELDS),
        (result["settings"], SETTINGS_FIELDS),
    ]:
        for field in fields:
            assert field in group, field
            assert f"`{field}`" in doc, f"{field} is not documented in fastdiff/bench/__init__.py"
    assert result["schema"] == "fastdiff-bench/1"
    assert result["copy_bandwidth"]["gbps"] > 0
    assert result["settings"]["sizes"] == [4096] and result["settings"]["dtypes"] == ["float32"]
    assert result["rows"], "no rows"
    for row in result["rows"]:
        for field in ROW_FIELDS:
            assert field in row, (field, row)
        assert row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
    for field in ROW_FIELDS + HEADLINE_FIELDS:
        assert f"`{field}`" in doc, field
    for h in result["headlines"]:
        assert sorted(h) == sorted(HEADLINE_FIELDS)


def test_every_available_suite_ran(quick_run):
    result, _ = quick_run
    for name, suite in SUITES.items():
        ok, why = suite.availability()
        status = result["suites"][name]
        if ok:
            assert status["status"] == "ok", name
            assert any(r["suite"] == name for r in result["rows"]), name
        else:
            assert status == {"status": "not available", "reason": why, "seconds": 0.0}
    # each case names the fastdiff provider it is compared with, and that provider's speedup is 1
    for row in result["rows"]:
        if row["provider"] == row["reference"]:
            assert row["fastdiff_speedup"] == 1.0
    providers = {r["provider"] for r in result["rows"] if r["suite"] == "stats"}
    assert {"naive-item", "aminmax+var_mean", "read-pass"} <= providers


def test_csv_carries_the_rows_and_the_machine(quick_run):
    result, out = quick_run
    with open(report.output_stem(str(out), result) + ".csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == len(result["rows"])
    assert {"provider", "median_ms", "p20_ms", "p80_ms", "gbps", "frac_copy_bw", "env_cpu", "env_torch"} <= set(
        lines[0]
    )
    assert lines[0]["env_torch"] == torch.__version__


def test_plot_when_matplotlib_is_there(tmp_path, quick_run):
    pytest.importorskip("matplotlib")
    result, _ = quick_run
    rows = [dict(r) for r in result["rows"] if r["suite"] == "stats"]
    rows += [{**r, "size": r["size"] * 4} for r in rows]  # a second size: a line per provider
    assert report.write_plot({**result, "rows": rows}, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_readme_table_from_results(tmp_path, quick_run):
    result, _ = quick_run
    full = {**result, "settings": {**result["settings"], "quick": False, "all_suites": True}}
    (tmp_path / "cpu-test.json").write_text(json.dumps(full))
    (tmp_path / "cpu-test-quick.json").write_text(json.dumps(result))  # left out: a quick run
    path = readme.write_readme_table(str(tmp_path))
    text = Path(path).read_text()
    assert Path(path).name == "README-table.md"
    assert f"`{result['command']}`" in text and "cpu-test.json" in text and "cpu-test-quick" not in text
    assert "**GPU**: unmeasured" in text
    assert result["environment"]["device"] in text
    # the latency suite's summary, per latent: scheduler loops as diffusers / fastdiff, host overhead, stats
    assert "| SD 1.5 latent (16,384) |" in text and "| DDIM |" in text and "host overhead" in text
    # the same through the command line
    os.remove(path)
    assert main(["bench", "--readme", "--out", str(tmp_path)]) == 0
    assert (tmp_path / readme.TABLE_FILE).read_text() == text
    with pytest.raises(SystemExit, match="does not exist"):
        main(["bench", "--readme", "--out", str(tmp_path / "nowhere")])


def test_latency_table_reads_ratios_and_overheads_from_the_rows():
    from fastdiff.bench import latency

    def row(op, provider, ms):
        return {"suite": "latency", "shape": "SD 1.5 latent", "size": 16384, "op": op, "provider": provider,
                "median_ms": ms}  # fmt: skip

    rows = [row("loop:DDIM", "diffusers", 0.09), row("loop:DDIM", "fastdiff", 0.045),
            row("fused_step", "fastdiff", 0.030), row("fused_step", "fastdiff-backend-call", 0.018),
            row("sample_step", "fastdiff", 0.05), row("sample_step", "model-calls-alone", 0.011),
            row("tensor_stats", "fastdiff", 0.02), row("tensor_stats", "naive-item", 0.1)]  # fmt: skip
    table = latency.table(rows).splitlines()
    assert table[0] == "| scheduler (per step) | SD 1.5 latent (16,384) |"
    assert table[2] == "| DDIM | 2.00x (45 µs vs 90 µs) |"
    assert table[4] == (
        "| latent | fused_step: host overhead | sample(): per step over the model "
        "| tensor_stats().to_dict() vs 8 .item() |"
    )
    assert table[6] == (
        "| SD 1.5 latent (16,384) | 12 µs (call 30 µs) | 39 µs (step 50 µs) | 5.00x (20 µs vs 100 µs) |"
    )
    assert latency.table([{**r, "suite": "stats"} for r in rows]) == ""


def test_committed_readme_table_is_rendered_from_the_committed_results():
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    table = results / readme.TABLE_FILE
    if not table.exists():
        pytest.skip("no README-table.md committed")
    assert table.read_text() == readme.render(str(results)), "re-run: python -m fastdiff.bench.readme"


def test_readme_performance_block_is_the_rendered_table():
    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    table = readme.render(str(root / "benchmarks" / "results"))
    assert readme.splice(text, table) == text, "re-run: python -m fastdiff.bench.readme"
    with pytest.raises(ValueError, match="bench-table:start"):
        readme.splice("# no markers\n", table)


# --------------------------------------------------------------------------------------------------
# bad input: a clear error, before anything runs


@pytest.fixture
def nothing_runs(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started before the input was checked")

    monkeypatch.setattr(harness, "measure_copy_bandwidth", refuse)
    monkeypatch.setattr(Suite, "run", refuse)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--suite", "stats,nope"], r"unknown suite\(s\) \['nope'\]; accepted: step, stats"),
        (["--sizes", "4096,abc"], r"--sizes: cannot read 'abc'.*accepted"),
        (["--sizes", "0k"], r"--sizes: '0k' is 0 elements; accepted: 1 to"),
        (["--sizes", "2^40"], r"--sizes: '2\^40' is .* accepted: 1 to 2,147,483,648"),
        (["--dtype", "fp32,int7"], r"--dtype: unknown dtype 'int7'; accepted: fp32, float32, bf16"),
        (["--device", "mps"], r"--device: 'mps' is not supported; accepted: cpu, cuda"),
        (["--device", "gpu0"], r"--device: cannot read 'gpu0'; accepted: cpu, cuda"),
        (["--repeats", "0"], r"--repeats: 0 given; accepted: 1 or more"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, nothing_runs, flags, message):
    with pytest.raises(SystemExit, match=message):
        main(["bench", *TINY, "--out", str(tmp_path), *flags])
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, nothing_runs):
    with pytest.raises(SystemExit, match=r"--device cuda: no CUDA GPU is visible here .*use --device cpu"):
        main(["bench", *TINY, "--out", str(tmp_path), "--device", "cuda"])


def test_unwritable_output_folder_is_a_clear_error(tmp_path, nothing_runs):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match=r"--out .*a-file/results: the results folder is not writable"):
        main(["bench", *TINY, "--out", str(blocker / "results")])
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SystemExit, match="not writable"):
            main(["bench", *TINY, "--out", str(locked)])


def test_unavailable_suite_asked_by_name_is_a_clear_error(monkeypatch, nothing_runs):
    missing = Suite("ghost", "a suite whose module is not there", ("fastdiff_no_such_module.bench",))
    monkeypatch.setitem(SUITES, "ghost", missing)
    ok, why = missing.availability()
    assert not ok and "fastdiff_no_such_module.bench" in why
    with pytest.raises(SystemExit, match=r"--suite ghost: not available here: none of its modules is importable"):
        main(["bench", *TINY, "--no-files", "--suite", "ghost"])
    # left out of a default run, with the reason recorded
    assert bench_cli.select_suites(None)[1]["ghost"] == why


def test_schedulers_suite_is_registered_lazily():
    suite = SUITES["schedulers"]
    assert suite.signature == "plain" and "fastdiff.integrations.diffusers" in suite.requires
    ok, why = suite.availability()
    assert ok or why  # either it runs, or it says why not


def test_plain_signature_suites_are_adapted(tmp_path, monkeypatch):
    """A suite written as run(device, sizes, dtypes, repeats, quick) -> harness rows (fastdiff/bench/schedulers.py)."""
    (tmp_path / "fastdiff_fake_suite.py").write_text(
        "def run(device, sizes, dtypes, repeats, quick):\n"
        "    return [{'op': 'fake', 'size': n, 'dtype': str(d), 'provider': 'p', 'median_ms': 1.0,\n"
        "             'p20_ms': 1.0, 'p80_ms': 1.0, 'gbps': 2.0} for n in sizes for d in dtypes]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = Suite("fake", "fake", ("fastdiff_fake_suite",), signature="plain")
    done = []
    cfg = bench.BenchConfig(sizes=(8, 16), copy_gbps=4.0, progress=done.append)
    rows = suite.run(cfg)
    assert [r["size"] for r in rows] == [8, 16]
    assert all(r["suite"] == "fake" and r["device"] == "cpu" and r["frac_copy_bw"] == 0.5 for r in rows)
    assert sum(done) == 2


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("4096", (4096,)), ("24", (1 << 24,)), ("16M", (1 << 24,)), ("2^20,1k", (1 << 20, 1024)), ("20,20", (1 << 20,))],
)
def test_sizes_are_read_as_documented(text, sizes):
    assert bench_cli.parse_sizes(text) == sizes
