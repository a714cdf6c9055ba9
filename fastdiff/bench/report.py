"""Rendering a `fastdiff bench` result: terminal/Markdown tables, the headline ratios, JSON, CSV and a PNG plot.

`result` is the JSON document described in `fastdiff.bench`; every function here reads only it, so
committed JSON files can be re-rendered later (`fastdiff.bench.readme`).
"""

from __future__ import annotations

import csv
import json
import os

from .harness import markdown_table

COLUMNS = [
    ("provider", "provider", 0),
    ("median_ms", "median ms", 3),
    ("p20_ms", "p20", 3),
    ("p80_ms", "p80", 3),
    ("gbps", "GB/s", 2),
    ("frac_copy_bw", "of copy BW", 2),
    ("fastdiff_speedup", "fastdiff speedup ×", 2),
    ("compile_s", "compile s", 1),
]
PROBE_COLUMNS = [
    ("provider", "variant", 0),
    ("median_ms", "step ms", 1),
    ("p20_ms", "p20", 1),
    ("p80_ms", "p80", 1),
    ("overhead", "overhead vs none", 3),
    ("fastdiff_speedup", "step time / probe's", 2),
]

# The ratios issue 5 set as targets (CPU, 2^24 float32), and a few more: (suite, op or None for any, the
# other provider, how the ratio is formed, target or None, text). "speedup": other / fastdiff (want >= target);
# "cost": fastdiff / other (want <= target).
HEADLINES = [
    ("stats", "tensor_stats", "naive-item", "speedup", ">= 15x", "tensor_stats vs naive .item() stats"),
    ("stats", "tensor_stats", "torch.compile", "speedup", ">= 4x", "tensor_stats vs torch.compile of stacked stats"),
    ("stats", "tensor_stats", "read-pass", "cost", "<= 3x", "tensor_stats time / x.sum() (one read pass)"),
    ("step", "ddim_step", "diffusers", "speedup", ">= 8x", "DDIM step (clip, x0 out=) vs DDIMScheduler.step"),
    ("step", "ddim_step", "torch.compile", "speedup", ">= 3x", "DDIM step vs torch.compile of the same maths"),
    ("step", "ddim_step", "add-out", "cost", "<= 2x", "DDIM step time / torch.add(x, e, out=o)"),
    ("step", "euler_step", "diffusers", "speedup", None, "Euler step vs EulerDiscreteScheduler.step"),
    (
        "step",
        "flow_euler_step",
        "diffusers",
        "speedup",
        None,
        "flow Euler step vs FlowMatchEulerDiscreteScheduler.step",
    ),
    ("multi_stats", None, "fastdiff-cpp-loop", "speedup", None, "multi_tensor_stats vs a per-tensor tensor_stats loop"),
    ("multi_stats", None, "naive-item-loop", "speedup", None, "multi_tensor_stats vs a per-tensor naive .item() loop"),
]
TARGET_SIZE = 1 << 24


def _case_key(row: dict) -> tuple:
    return (row.get("suite"), row.get("op"), row.get("size"), row.get("dtype"))


def cases(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Rows grouped by (suite, op, size, dtype), in the order they were measured."""
    out: dict[tuple, list[dict]] = {}
    for row in rows:
        out.setdefault(_case_key(row), []).append(row)
    return out


def _size_text(n: int) -> str:
    exp = n.bit_length() - 1
    return f"{n:,} elements (2^{exp})" if n == 1 << exp else f"{n:,} elements"


def case_heading(key: tuple) -> str:
    suite, op, size, dtype = key
    return f"{suite}: {op}, {dtype}, {_size_text(size)}"


def headlines(rows: list[dict]) -> list[dict]:
    """The headline ratios at the largest float32 size measured (any dtype when there is no float32)."""
    out = []
    for suite, op, other, kind, target, what in HEADLINES:
        mine = [r for r in rows if r.get("suite") == suite and r.get("reference") and op in (None, r.get("op"))]
        if not mine:
            continue
        dtypes = {r["dtype"] for r in mine}
        dtype = "float32" if "float32" in dtypes else sorted(dtypes)[0]
        size = max(r["size"] for r in mine if r["dtype"] == dtype)
        case = [r for r in mine if r["dtype"] == dtype and r["size"] == size]
        ref = next((r for r in case if r["provider"] == r["reference"]), None)
        oth = next((r for r in case if r["provider"] == other), None)
        if ref is None or oth is None:
            continue
        ratio = oth["median_ms"] / ref["median_ms"] if kind == "speedup" else ref["median_ms"] / oth["median_ms"]
        met = None
        applies = size == TARGET_SIZE and dtype == "float32" and ref.get("device", "cpu") == "cpu"
        if target is not None and not applies:
            target = f"{target} at 2^24 float32 on CPU"
        elif target is not None:
            bound = float(target.split()[1].rstrip("x"))
            met = ratio >= bound if kind == "speedup" else ratio <= bound
        out.append(
            {
                "what": what,
                "suite": suite,
                "size": size,
                "dtype": dtype,
                "fastdiff": ref["provider"],
                "fastdiff_ms": ref["median_ms"],
                "other": other,
                "other_ms": oth["median_ms"],
                "ratio": ratio,
                "kind": kind,
                "target": target,
                "target_met": met,
            }
        )
    return out


def headline_table(result: dict) -> str:
    lines = [
        "| ratio | size, dtype | fastdiff ms | other ms | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for h in result.get("headlines", []):
        if h["target"] is None:
            target = "–"
        elif h["target_met"] is None:
            target = f"{h['target']} (other size)"
        else:
            target = f"{h['target']} ({'met' if h['target_met'] else 'not met'})"
        lines.append(
            f"| {h['what']} | {_size_text(h['size'])}, {h['dtype']} | {h['fastdiff_ms']:.2f} | {h['other_ms']:.2f} "
            f"| {h['ratio']:.2f}x | {target} |"
        )
    return "\n".join(lines)


def sections(result: dict) -> list[tuple[str, str]]:
    """(heading, Markdown table) per case."""
    out = []
    for key, part in cases(result["rows"]).items():
        columns = PROBE_COLUMNS if key[0] == "probe" else COLUMNS
        out.append((case_heading(key), markdown_table(part, columns)))
    return out


def _suite_notes(result: dict) -> list[str]:
    return [
        f"- {name}: {info['status']}" + (f" — {info['reason']}" if info.get("reason") else "")
        for name, info in result.get("suites", {}).items()
    ]


def _latency_table(result: dict) -> str:
    from .latency import table  # the latency suite renders its own summary (per shape, per scheduler)

    return table(result.get("rows", []))


def terminal_report(result: dict) -> str:
    copy = result.get("copy_bandwidth") or {}
    lines = []
    for heading, table in sections(result):
        lines += ["", f"## {heading}", table]
    if copy:
        lines += ["", f"copy bandwidth (out.copy_(x), {copy['numel']:,} {copy['dtype']}): {copy['gbps']:.2f} GB/s"]
    if result.get("headlines"):
        lines += ["", "## headline ratios", headline_table(result)]
    small = _latency_table(result)
    if small:
        lines += ["", "## at the sizes people sample", small]
    lines += ["", "suites:", *_suite_notes(result)]
    return "\n".join(lines)


ENV_KEYS = ("device", "cpu", "cpu_count", "torch_threads", "gpu", "torch", "cuda", "triton", "diffusers", "numpy")


def markdown_report(result: dict) -> str:
    env = result["environment"]
    copy = result.get("copy_bandwidth") or {}
    lines = [
        f"# fastdiff bench: {env['device']} ({result['settings']['device']})",
        "",
        f"Command: `{result['command']}`",
        "",
        "Written by `fastdiff bench` (fastdiff/bench); JSON and CSV twins beside this file. Every table is one "
        "case whose providers were timed interleaved (each repeat runs all of them, in rotating order): the "
        "ratios are what to quote, not the absolute times, on a shared machine. median / p20 / p80 in ms; GB/s "
        "counts what the op must move; `of copy BW` is that over the copy bandwidth measured in the same run; "
        "`fastdiff speedup ×` = this provider's median / fastdiff's (> 1: fastdiff is faster). `compile s` is "
        "torch.compile's first call, compile included (inductor's on-disk cache makes it short on a machine "
        "that compiled the same graph before; ~20 s cold on a 2-core CPU). The probe "
        "suite's table is a training step per variant: `overhead vs none` is the median over rounds of the "
        "step time over `none`'s in the same round, minus 1.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {env.get(k)}" for k in ENV_KEYS],
        f"- load average (1, 5, 15 min) at start: {env.get('load_average_start')}, "
        f"at end: {env.get('load_average_end')}",
        f"- date: {env.get('date')}; run time {result.get('elapsed_s', 0):.0f} s",
        f"- fastdiff C++ ISA: {env.get('fastdiff_cpu_isa')}",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in result["settings"].items()),
        "",
    ]
    if copy:
        lines += [f"Copy bandwidth (`out.copy_(x)`, {copy['numel']:,} {copy['dtype']}): {copy['gbps']:.2f} GB/s", ""]
    if result.get("headlines"):
        lines += ["## Headline ratios", "", headline_table(result), ""]
    small = _latency_table(result)
    if small:
        lines += ["## At the sizes people sample (latency suite)", "", small, ""]
    lines += ["## Suites", "", *_suite_notes(result)]
    for heading, table in sections(result):
        lines += ["", f"### {heading}", "", table]
    return "\n".join(lines) + "\n"


CSV_ENV = ("cpu", "torch_threads", "gpu", "torch", "triton", "diffusers")
CSV_FIRST = ["suite", "op", "size", "dtype", "device", "provider", "median_ms", "p20_ms", "p80_ms", "repeats",
             "bytes_moved", "gbps", "frac_copy_bw", "reference", "fastdiff_speedup", "compile_s"]  # fmt: skip


def write_csv(result: dict, path: str) -> None:
    """One line per row (Liger-style: data as data), with the machine's description on every line."""
    keys = list(CSV_FIRST)
    for row in result["rows"]:
        keys += [k for k in row if k not in keys]
    keys += [f"env_{k}" for k in CSV_ENV]
    env = result["environment"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for row in result["rows"]:
            w.writerow({**row, **{f"env_{k}": env.get(k) for k in CSV_ENV}})


def write_plot(result: dict, path: str) -> bool:
    """GB/s against size per provider, one panel per (suite, op, dtype); False (nothing written) without
    matplotlib or without a row that has GB/s."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels: dict[tuple, list[dict]] = {}
    for row in result["rows"]:
        if row.get("gbps"):
            panels.setdefault((row["suite"], row["op"], row["dtype"]), []).append(row)
    if not panels:
        return False
    n = len(panels)
    ncols = min(2, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.2 * nrows), squeeze=False)
    copy = (result.get("copy_bandwidth") or {}).get("gbps")
    for ax, ((suite, op, dtype), rows) in zip(axes.flat, panels.items()):
        for provider in dict.fromkeys(r["provider"] for r in rows):
            pts = sorted((r["size"], r["gbps"]) for r in rows if r["provider"] == provider)
            style = "-o" if provider.startswith("fastdiff") else "--."
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=provider)
        if copy:
            ax.axhline(copy, color="grey", linestyle=":", label="copy bandwidth")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel("GB/s (bytes the op must move)")
        ax.set_title(f"{suite}: {op}, {dtype}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"fastdiff bench — {result['environment']['device']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(result: dict, stem: str) -> list[str]:
    """stem.json, stem.csv, stem.md and stem.png (when matplotlib is there); the paths written."""
    paths = []
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    paths.append(stem + ".json")
    write_csv(result, stem + ".csv")
    paths.append(stem + ".csv")
    with open(stem + ".md", "w") as f:
        f.write(markdown_report(result))
    paths.append(stem + ".md")
    if write_plot(result, stem + ".png"):
        paths.append(stem + ".png")
    return paths


def output_stem(out_dir: str, result: dict) -> str:
    """<out>/<cpu|gpu>-<device slug>[-<suites>][-quick]: the full default run owns the plain name."""
    from .harness import slug

    s = result["settings"]
    kind = "cpu" if s["device"] == "cpu" else "gpu"
    name = f"{kind}-{slug(result['environment']['device'])}"
    if not s.get("all_suites"):
        name += "-" + "-".join(s["suites"])
    if s["quick"]:
        name += "-quick"
    return os.path.join(out_dir, name)
