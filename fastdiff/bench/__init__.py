"""`fastdiff bench`: the benchmark suites of BENCHMARKS.md, run on the user's hardware.

    fastdiff bench --quick                                  # < 2 minutes on a 2-core CPU
    fastdiff bench --sizes 20,22,24 --dtype fp32,bf16       # the full CPU run (the default)
    fastdiff bench --suite stats --sizes 4096 --repeats 3 --no-compile --out /tmp/b
    python -m fastdiff.bench.readme benchmarks/results      # README-table.md from the committed JSON

Suites (`fastdiff.bench.suites.SUITES`): `step` (DDIM step with clipping and x0 output: fused vs
diffusers' `step()`, eager maths, `torch.compile`), `stats` (tensor stats vs naive `.item()`,
`aminmax`+`var_mean`, `torch.compile`), `multi_stats` (every parameter of a UNet1D in one call vs a
per-tensor loop), `probe` (training-loop overhead of `Recorder` + `watch` vs naive `.item()` logging
vs histograms), `schedulers` (drop-in diffusers schedulers; run when its module and
`fastdiff.integrations.diffusers` import, else reported "not available").

Files: `<out>/<cpu|gpu>-<device slug>[-<suites>][-quick].{json,csv,md,png}` (the PNG when matplotlib is
installed). The JSON document:

- `schema`: "fastdiff-bench/1"; `command`: the exact command line (`fastdiff bench ...`);
  `elapsed_s`: wall time of the run.
- `environment`: `device` (CPU model or GPU name), `device_type`, `cpu`, `cpu_count`, `torch_threads`,
  `gpu` (null on CPU), versions `torch`, `cuda`, `triton`, `diffusers`, `numpy`, `fastdiff`, `python`
  (null when not installed), `platform`, `fastdiff_cpu_isa`, `load_average_start`, `load_average_end`
  ([1, 5, 15]-minute load averages), `date`, `command`.
- `settings`: `device`, `suites` (run), `all_suites` (no `--suite` given), `sizes`, `dtypes`, `repeats`,
  `quick`, `compile`.
- `copy_bandwidth`: `numel`, `dtype`, `median_ms`, `gbps` of `out.copy_(x)` measured in the same run.
- `suites`: {name: {`status`: "ok" | "not available", `reason`, `seconds`}}.
- `headlines`: the issue-5 ratios at the largest float32 size: `what`, `suite`, `size`, `dtype`,
  `fastdiff`, `fastdiff_ms`, `other`, `other_ms`, `ratio`, `kind` ("speedup": other / fastdiff,
  "cost": fastdiff / other), `target` (e.g. ">= 15x", or null), `target_met`.
- `rows`: one per (suite, case, provider): `suite`, `op`, `size` (elements; parameters for the model
  suites), `dtype`, `device`, `provider`, `median_ms`, `p20_ms`, `p80_ms`, `repeats`, `bytes_moved`
  (what the op must move: inputs read once, outputs written once; null for a training step), `gbps`,
  `frac_copy_bw` (gbps / copy bandwidth), `reference` (the fastdiff provider of the case),
  `fastdiff_speedup` (this provider's median / the reference's: > 1 means fastdiff is faster),
  and where they apply `compile_s` (torch.compile's first call, compile included), `tensors`
  (multi_stats), `overhead` (probe: step time over `none`, median of per-round ratios, minus 1),
  `stats_backend` (probe).
"""

from .config import BenchConfig
from .suites import SUITES, Suite

__all__ = ["SUITES", "BenchConfig", "Suite"]
