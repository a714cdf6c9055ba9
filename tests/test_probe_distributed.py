"""Under torch.distributed, records of a name and step merge exactly across ranks; rank 0 writes once."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastdiff as fd

WORLD = 2


def rank_tensors(rank: int, step: int) -> dict[str, torch.Tensor]:
    """Deterministic, different data per rank and step (sizes differ; rank 1 has NaN/Inf)."""
    g = torch.Generator().manual_seed(100 * rank + step)
    x = torch.randn(50 + 37 * rank, generator=g, dtype=torch.float64) * (1 + rank) + 1e6 * (rank - 0.5)
    rows = torch.randn(2 + rank, 6, generator=g)
    if rank == 1:
        x[3], x[7], rows[0, 1] = math.nan, math.inf, -math.inf
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    return {"x": x, "x_half": x[: 20 + rank], "rows": rows, "a": a, "b": b}


def worker(rank: int, init: str, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        with fd.Recorder(path, backend="torch") as rec:
            for step in range(2):
                d = rank_tensors(rank, step)
                rec.log("x_t", d["x"])
                rec.log("x_t", d["x_half"])  # twice in one step on every rank: merges too
                rec.log("rows", d["rows"], per_sample=True)
                rec.log_pair("a~b", d["a"], d["b"])
                rec.log_scalar("loss", torch.tensor(float(rank + step)))
                if rank == 1:
                    rec.log("only_rank1", d["x"])
                rec.step()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_merge_exactly(tmp_path):
    path = tmp_path / "run.jsonl"
    ctx = mp.start_processes(
        worker, args=(f"file://{tmp_path / 'init'}", str(path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    for _ in range(120):  # joins raise if a worker failed
        if ctx.join(timeout=1):
            break
    else:
        for p in ctx.processes:
            p.kill()
        pytest.fail("the distributed workers did not finish in 120 s")

    records = [json.loads(line) for line in path.read_text().splitlines()]
    got = {(r["step"], r["name"]): r for r in records}
    assert len(got) == len(records)  # written once
    for step in range(2):
        data = [rank_tensors(r, step) for r in range(WORLD)]
        x = torch.cat([t for d in data for t in (d["x"], d["x_half"])])
        want = fd.tensor_stats(x, backend="torch").to_dict()
        r = got[step, "x_t"]
        for k in ("count", "nan_count", "posinf_count", "neginf_count", "zero_count", "min", "max", "absmax"):
            assert r[k] == want[k], k
        for k in ("mean", "std", "l2"):
            assert r[k] == pytest.approx(want[k], rel=1e-9), k

        rows = torch.cat([d["rows"] for d in data])
        want_rows = fd.tensor_stats(rows, dim=0, backend="torch").to_dict()
        got_rows = got[step, "rows"]["per_sample"]
        assert got_rows["count"] == want_rows["count"] and got_rows["mean"] == want_rows["mean"]
        assert got[step, "rows"]["neginf_count"] == 1 and got[step, "rows"]["count"] == rows.numel()

        want_pair = fd.pair_stats(torch.cat([d["a"] for d in data]), torch.cat([d["b"] for d in data]), backend="torch")
        want_pair = want_pair.to_dict()
        for k, v in want_pair.items():
            assert got[step, "a~b"][k] == pytest.approx(v, rel=1e-12)
        assert got[step, "loss"]["value"] == pytest.approx(step + 0.5)  # mean over ranks
        assert got[step, "loss"]["logs"] == WORLD

        solo = fd.tensor_stats(data[1]["x"], backend="torch").to_dict()
        assert got[step, "only_rank1"]["mean"] == solo["mean"]
