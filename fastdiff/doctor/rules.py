"""The doctor's rules: each finding of API.md section 4, judged from a probe log.

Every rule takes a `RunLog` and returns a `Finding` (id, status ok|warn|fail|skip, a one-line
summary in words, evidence with the figures and the steps they come from). Thresholds are named
constants below, each with the failure it separates; the reports in shared/seeds/ are the cases.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from .log import Record, RunLog

# --- thresholds -----------------------------------------------------------------------------------
WINDOW = 0.2  # first / last fraction of a series compared for trends
NORM_MEAN_OK, NORM_STD_OK = 0.25, (0.5, 2.0)  # standardised data: |mean| and std range
NOISE_STD_TOL = 0.05  # noise std within 1 +- this (plus sampling error)
FM_COS_FAIL, FM_COS_WARN = 0.2, 0.5  # report 003: cos 0.015..0.05 fails; "ideal >= 0.5"
FM_RATIO_FAIL, FM_RATIO_WARN = (0.35, 3.0), (0.5, 2.0)  # report 003: ratio 0.28..0.30 fails
PRED_RATIO_FAIL, PRED_RATIO_WARN = (0.2, 5.0), (0.5, 2.0)
CLIP_FAIL, CLIP_WARN = 0.2, 0.02  # share of clipped x0 values over the second half of a sampling run
LOSS_SPIKE = 5.0  # a value > 5x the running median of the previous ones
LOSS_MIN_DROP = 0.1  # less than 10% drop from the first to the last window: not learning
SAMPLE_SHIFT_FAIL, SAMPLE_SHIFT_WARN = 1.0, 0.25  # |mean_gen - mean_real| / std_real
SAMPLE_STD_FAIL, SAMPLE_STD_WARN = (1 / 3, 3.0), (2 / 3, 1.5)  # std_gen / std_real


@dataclass
class Finding:
    id: str
    status: str  # ok | warn | fail | skip
    summary: str
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"id": self.id, "status": self.status, "summary": self.summary, "evidence": _clean(self.evidence)}


def _clean(v):
    """Strict JSON: non-finite floats become None, tuples lists, floats rounded to 6 significant digits."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float):
        return float(f"{v:.6g}") if math.isfinite(v) else None
    return v


# --- helpers --------------------------------------------------------------------------------------


def _g(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _windows(records: list, frac: float = WINDOW) -> tuple[list, list]:
    k = max(1, round(len(records) * frac))
    return records[:k], records[-k:]


def _median(values) -> float | None:
    v = _finite(values)
    return statistics.median(v) if v else None


@dataclass
class Agg:
    """Stats of several tensor records merged (Chan): as if all logged tensors were one."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    records: int

    @property
    def range(self) -> list:
        return [self.min, self.max]


def aggregate(records: list[Record]) -> Agg:
    parts = []
    for r in records:
        count = r.get("count") or 0
        nf = int(count) - sum(int(r.get(k) or 0) for k in ("nan_count", "posinf_count", "neginf_count"))
        mean = r.get("mean")
        if nf <= 0 or mean is None:
            continue
        std = r.get("std") or 0.0
        parts.append((nf, mean, std * std * (nf - 1) if nf > 1 else 0.0, r.get("min"), r.get("max")))
    if not parts:
        return Agg(0, None, None, None, None, len(records))
    n = sum(p[0] for p in parts)
    mean = sum(p[0] * p[1] for p in parts) / n
    m2 = sum(p[2] + p[0] * (p[1] - mean) ** 2 for p in parts)
    mins = _finite(p[3] for p in parts)
    maxs = _finite(p[4] for p in parts)
    return Agg(
        n,
        mean,
        math.sqrt(m2 / (n - 1)) if n > 1 else None,
        min(mins) if mins else None,
        max(maxs) if maxs else None,
        len(records),
    )


def _per_step_range(records: list[Record], key: str) -> list:
    v = _finite(r.get(key) for r in records)
    return [min(v), max(v)] if v else [None, None]


def _all_tensor_records(log: RunLog, *roles: str) -> list[Record]:
    return [r for recs in log.by_role(*roles).values() for r in recs]


# --- the rules ------------------------------------------------------------------------------------


def nonfinite(log: RunLog) -> Finding:
    hits: dict[str, dict] = {}
    for r in sorted(log.records, key=lambda r: (r.step, r.line)):
        if r.kind == "scalar" and r.role == "update" and r.name.startswith("update_ratio/"):
            # the watch's update_ratio ||dw|| / ||w|| is 0/0 for a zero weight that did not move (a frozen,
            # zero-initialised bias): not a NaN in training. A non-finite weight or update shows in the
            # param/ and update/ tensor records, which are read below.
            continue
        if r.kind == "tensor":
            bad = sum(int(r.get(k) or 0) for k in ("nan_count", "posinf_count", "neginf_count"))
            detail = {k: int(r.get(k) or 0) for k in ("nan_count", "posinf_count", "neginf_count")}
        elif r.kind == "scalar":
            bad = 1 if r.get("value") is None else 0
            detail = {"value": None}
        else:  # pair: NaN inputs make the mse / max diff NaN (a zero norm only makes cos NaN)
            bad = 1 if r.get("mse") is None or r.get("max_abs_diff") is None else 0
            detail = {"mse": r.get("mse")}
        if bad:
            h = hits.setdefault(r.name, {"first_step": r.step, "records": 0, "first": detail})
            h["records"] += 1
    if not hits:
        return Finding("nonfinite", "ok", f"no NaN/Inf in {len(log.records)} records", {"records": len(log.records)})
    first_name = min(hits, key=lambda n: hits[n]["first_step"])
    first = hits[first_name]
    return Finding(
        "nonfinite",
        "fail",
        f"NaN/Inf first at step {first['first_step']} in {first_name!r} ({len(hits)} names affected)",
        {"first_step": first["first_step"], "first_name": first_name, "names": hits},
    )


def data_normalization(log: RunLog, data_range: tuple[float, float] | None = None) -> Finding:
    recs = _all_tensor_records(log, "x0")
    if not recs:
        return Finding("data_normalization", "skip", "no tensor with role x0 in the log")
    a = aggregate(recs)
    ev = {
        "mean": a.mean,
        "std": a.std,
        "range": a.range,
        "records": a.records,
        "per_step_mean_range": _per_step_range(recs, "mean"),
        "per_step_std_range": _per_step_range(recs, "std"),
    }
    if a.mean is None:
        return Finding("data_normalization", "fail", "x0 has no finite values", ev)
    desc = f"x0 mean {_g(a.mean)}, std {_g(a.std)}, range [{_g(a.min)}, {_g(a.max)}]"
    if not a.std:
        return Finding("data_normalization", "fail", f"x0 is constant ({desc})", ev)
    if data_range is not None:
        lo, hi = data_range
        tol = 1e-3 * (hi - lo)
        ev["stated_range"] = list(data_range)
        inside = a.min >= lo - tol and a.max <= hi + tol
        return Finding(
            "data_normalization",
            "ok" if inside else "fail",
            f"{desc}: {'within' if inside else 'OUTSIDE'} the stated range [{lo:g}, {hi:g}]",
            ev,
        )
    if abs(a.mean) <= NORM_MEAN_OK and NORM_STD_OK[0] <= a.std <= NORM_STD_OK[1]:
        return Finding("data_normalization", "ok", f"{desc}: standardised", ev)
    if a.min >= -1.001 and a.max <= 1.001:
        return Finding("data_normalization", "ok", f"{desc}: data in [-1, 1]", ev)
    if a.min >= -0.001 and a.max <= 1.001:
        return Finding(
            "data_normalization",
            "warn",
            f"{desc}: data in [0, 1]; diffusion code usually expects [-1, 1] or mean 0 / std 1",
            ev,
        )
    if abs(a.mean) > 5 or a.std > 5:
        return Finding(
            "data_normalization", "fail", f"{desc}: not normalised (raw pixel values? unscaled latents?)", ev
        )
    return Finding("data_normalization", "warn", f"{desc}: neither standardised nor in [-1, 1]", ev)


def timestep_distribution(log: RunLog) -> Finding:
    recs = _all_tensor_records(log, "t")
    if not recs:
        return Finding("timestep_distribution", "skip", "no tensor with role t in the log")
    a = aggregate(recs)
    if a.mean is None or a.n < 2:
        return Finding("timestep_distribution", "skip", "too few finite timesteps logged")
    lo, hi = a.min, a.max
    discrete = float(lo).is_integer() and float(hi).is_integer() and hi - lo >= 2
    mu = (lo + hi) / 2
    sd_u = math.sqrt(((hi - lo + 1) ** 2 - 1) / 12) if discrete else (hi - lo) / math.sqrt(12)
    ev = {
        "range": [lo, hi],
        "mean": a.mean,
        "std": a.std,
        "uniform_mean": mu,
        "uniform_std": sd_u,
        "count": a.n,
        "per_step_mean_range": _per_step_range(recs, "mean"),
        "per_step_std_range": _per_step_range(recs, "std"),
    }
    if not a.std or hi == lo:
        return Finding("timestep_distribution", "fail", f"every logged t is {_g(lo)}: t is not sampled", ev)
    z = abs(a.mean - mu) / (sd_u / math.sqrt(a.n))
    ratio = a.std / sd_u
    ev.update(mean_z=z, std_ratio=ratio)
    per_step_std = _finite(r.get("std") for r in recs)
    if per_step_std and max(per_step_std) == 0 and len(recs) > 1:
        return Finding(
            "timestep_distribution",
            "warn",
            "one t per batch (per-step std 0): valid but a high-variance estimate of the loss",
            ev,
        )
    tol = max(0.05, 5 / math.sqrt(2 * a.n))
    desc = f"t in [{_g(lo)}, {_g(hi)}]: mean {_g(a.mean)} vs {_g(mu)}, std {_g(a.std)} vs {_g(sd_u)} (uniform)"
    if z < 5 and abs(ratio - 1) < tol:
        return Finding("timestep_distribution", "ok", desc, ev)
    return Finding("timestep_distribution", "warn", f"{desc}: not uniform (intended? e.g. logit-normal)", ev)


def forward_process(log: RunLog) -> Finding:
    noise, xt, x0 = (_all_tensor_records(log, r) for r in ("noise", "x_t", "x0"))
    if not noise and not xt:
        return Finding("forward_process", "skip", "no tensors with roles noise or x_t in the log")
    problems, warnings, ev = [], [], {}
    if noise:
        a = aggregate(noise)
        ev["noise"] = {"mean": a.mean, "std": a.std, "range": a.range, "count": a.n}
        tol = NOISE_STD_TOL + 5 / math.sqrt(max(a.n, 1))
        if a.mean is None or a.std is None or abs(a.mean) > tol or abs(a.std - 1) > tol:
            problems.append(f"noise is not N(0, 1): mean {_g(a.mean)}, std {_g(a.std)}")
    if xt:
        a = aggregate(xt)
        ev["x_t"] = {
            "mean": a.mean,
            "std": a.std,
            "range": a.range,
            "count": a.n,
            "per_step_std_range": _per_step_range(xt, "std"),
        }
        renorm = all(
            r.get("min") is not None and abs(r.get("min") + 1) < 1e-6 and abs(r.get("max") - 1) < 1e-6 for r in xt
        )
        if renorm and len(xt) > 1:
            problems.append("x_t spans exactly [-1, 1] at every step: it is re-normalised after adding noise")
        if x0 and a.std is not None:
            b = aggregate(x0)
            if b.std is not None:
                # x_t = alpha x0 + sigma eps, (alpha, sigma) on the VP circle (a^2 + s^2 = 1) or the flow line
                # (a + s = 1): Var(x_t) >= min over the path of a^2 v0 + s^2 = v0 / (1 + v0) (v0 = Var(x0)), and
                # E[x_t^2] <= max(E[x0^2], 1); a mixture over t keeps both bounds.
                v0 = b.std**2
                lower = math.sqrt(v0 / (1 + v0))
                upper = math.sqrt(max(v0 + (b.mean or 0.0) ** 2, 1.0))
                ev["x_t"]["std_bounds"] = [lower, upper]
                if a.std < 0.9 * lower:
                    problems.append(
                        f"x_t std {_g(a.std)} is below {_g(lower)}, the least any mix of x0 "
                        f"(std {_g(b.std)}) and unit noise gives: noise is not added as the schedule says"
                    )
                elif a.std > 1.1 * upper:
                    warnings.append(
                        f"x_t std {_g(a.std)} exceeds {_g(upper)}: fine for VE/EDM schedules, "
                        "wrong for variance-preserving or flow paths"
                    )
    if problems:
        return Finding("forward_process", "fail", "; ".join(problems), ev)
    if warnings:
        return Finding("forward_process", "warn", "; ".join(warnings), ev)
    return Finding("forward_process", "ok", "noise is N(0, 1) and x_t stays between x0 and noise", ev)


def _ratio_series(preds: list[Record], refs: list[Record], key: str) -> list[tuple[int, float]]:
    ref_by_step = {r.step: r for r in refs}
    out = []
    for p in preds:
        ref = ref_by_step.get(p.step)
        if ref is not None and p.get(key) is not None and ref.get(key):
            out.append((p.step, p.get(key) / ref.get(key)))
    return out


def prediction_range(log: RunLog) -> Finding:
    pairs = []
    for pred_role, ref_role in (("pred", "target"), ("pred_x0", "x0")):
        preds, refs = log.by_role(pred_role), log.by_role(ref_role)
        if preds and refs:
            ref_recs = [r for recs in refs.values() for r in recs]
            for name, recs in preds.items():
                pairs.append((name, recs, ref_recs))
    if not pairs:
        return Finding("prediction_range", "skip", "no prediction (role pred/pred_x0) with its target/x0 logged")
    worst, ev, lines = "ok", {}, []
    for name, recs, refs in pairs:
        series = _ratio_series(recs, refs, "std")
        if not series:
            continue
        first, last = _windows(series)
        r0, r1 = _median(v for _, v in first), _median(v for _, v in last)
        amax = _ratio_series(recs, refs, "absmax")
        ev[name] = {
            "std_ratio_first": r0,
            "std_ratio_last": r1,
            "absmax_ratio_last": _median(v for _, v in _windows(amax)[1]) if amax else None,
            "pred_std_range": _per_step_range(recs, "std"),
            "steps": [series[0][0], series[-1][0]],
        }
        status = "ok"
        if r1 is None or not PRED_RATIO_FAIL[0] <= r1 <= PRED_RATIO_FAIL[1]:
            status = "fail"
        elif not PRED_RATIO_WARN[0] <= r1 <= PRED_RATIO_WARN[1]:
            status = "warn"
        trend = (
            "towards" if r0 is not None and r1 is not None and abs(math.log(r1)) < abs(math.log(r0)) else "away from"
        )
        lines.append(f"{name}: std / target std {_g(r0, 3)} -> {_g(r1, 3)} ({trend} 1)")
        worst = max(worst, status, key=_rank)
    if not lines:
        return Finding("prediction_range", "skip", "predictions and targets were never logged at the same steps")
    return Finding("prediction_range", worst, "; ".join(lines), ev)


def _rank(status: str) -> int:
    return {"skip": 0, "ok": 0, "warn": 1, "fail": 2}[status]


def _loss_series(log: RunLog) -> list[tuple[int, float | None]]:
    recs = [
        r for r in log.records if r.kind == "scalar" and (r.role == "loss" or (r.role is None and r.name == "loss"))
    ]
    return [(r.step, r.get("value")) for r in sorted(recs, key=lambda r: r.step)]


def loss_trend(log: RunLog) -> Finding:
    series = _loss_series(log)
    values = [(s, v) for s, v in series if v is not None]
    if len(values) < 4:
        return Finding("loss_trend", "skip", f"{len(values)} finite loss values logged; need at least 4")
    first, last = _windows(values, 0.1)
    l0, l1 = _median(v for _, v in first), _median(v for _, v in last)
    drop = 1 - l1 / l0 if l0 else 0.0
    spikes = []
    for i in range(max(5, len(values) // 10), len(values)):
        ref = _median(v for _, v in values[max(0, i - 20) : i])
        if ref and values[i][1] > LOSS_SPIKE * ref:
            spikes.append(values[i][0])
    # plateau: the first step after which the running median stays within 5% of the final level
    plateau_since = None
    k = max(3, len(values) // 20)
    for i in range(len(values) - k, -1, -k):
        m = _median(v for _, v in values[i : i + k])
        if m is None or abs(m - l1) > 0.05 * abs(l1) + 1e-12:
            break
        plateau_since = values[i][0]
    ev = {
        "first": l0,
        "last": l1,
        "drop": drop,
        "steps": [values[0][0], values[-1][0]],
        "spikes": len(spikes),
        "first_spike_steps": spikes[:10],
        "plateau_since": plateau_since,
        "values": len(values),
    }
    desc = f"loss {_g(l0)} -> {_g(l1)} ({'fell' if drop >= 0 else 'rose'} {abs(drop):.1%})"
    distinct = {v for _, v in values}
    if len(distinct) == 1:
        return Finding("loss_trend", "fail", f"loss is constant at {_g(l1)}: nothing is being optimised", ev)
    if l1 > 1.1 * l0:
        return Finding("loss_trend", "fail", f"{desc}: the loss grows", ev)
    notes = []
    if plateau_since is not None and plateau_since > values[0][0]:
        notes.append(f"flat since step {plateau_since}")
    if spikes:
        notes.append(f"{len(spikes)} spikes (first at step {spikes[0]})")
    suffix = (": " + ", ".join(notes)) if notes else ""
    if drop < LOSS_MIN_DROP:
        return Finding("loss_trend", "warn", f"{desc}{suffix}: barely learning", ev)
    if len(spikes) > max(1, 0.01 * len(values)):
        return Finding("loss_trend", "warn", f"{desc}{suffix}", ev)
    return Finding("loss_trend", "ok", f"{desc}{suffix} (a falling loss alone does not show that sampling works)", ev)


_STAT_KEYS = ("mean", "std", "min", "max", "l2")


def _frozen_since(recs: list[Record]) -> int | None:
    """First step from which every later record repeats the same stats exactly (>= 2 repeats)."""
    if len(recs) < 3:
        return None
    sig = [tuple(r.get(k) for k in _STAT_KEYS) for r in recs]
    i = len(sig) - 1
    while i > 0 and sig[i - 1] == sig[-1]:
        i -= 1
    return recs[i].step if len(sig) - 1 - i >= 2 else None


WATCH_PREFIXES = ("param/", "update/", "update_ratio/", "grad/")


def _param_key(name: str) -> str:
    """The parameter a watched record is about: `update_ratio/block.0.weight` -> `block.0.weight`."""
    return next((name[len(p) :] for p in WATCH_PREFIXES if name.startswith(p)), name)


def params_frozen(log: RunLog) -> Finding:
    params, updates = log.by_role("param"), log.by_role("update")
    if not params and not updates:
        return Finding("params_frozen", "skip", "no parameter (role param) or update statistics in the log")
    last_step = max(r.step for recs in (*params.values(), *updates.values()) for r in recs)
    frozen: dict[str, int] = {}  # parameter -> first step of its frozen stretch
    for name, recs in params.items():
        s = _frozen_since(recs)
        if s is not None:
            frozen[_param_key(name)] = min(s, frozen.get(_param_key(name), s))
    for name, recs in updates.items():  # an update whose norm is 0 from some step on
        zero_from = None
        for r in reversed(recs):
            if r.get("l2") == 0.0 or (r.get("absmax") == 0.0):
                zero_from = r.step
            else:
                break
        if zero_from is not None and sum(r.step >= zero_from for r in recs) >= 2:
            frozen[_param_key(name)] = min(zero_from, frozen.get(_param_key(name), zero_from))
    # one parameter appears as param/w, update/w and update_ratio/w (the Recorder's watch): count it once
    total = len({_param_key(n) for n in (*params, *updates)})
    ev = {
        "parameters": total,
        "frozen": len(frozen),
        "last_step": last_step,
        "frozen_since": dict(sorted(frozen.items(), key=lambda kv: kv[1])[:50]),
    }
    if not frozen:
        return Finding("params_frozen", "ok", f"all {total} watched parameters keep changing", ev)
    since = min(frozen.values())
    ev["since"] = since
    if len(frozen) >= max(1, 0.5 * total):
        return Finding(
            "params_frozen",
            "fail",
            f"{len(frozen)} of {total} parameters identical from step {since} to {last_step} "
            f"({last_step - since} steps): training stopped updating the weights",
            ev,
        )
    return Finding(
        "params_frozen",
        "warn",
        f"{len(frozen)} of {total} parameters stop changing (first from step {since}): frozen on purpose?",
        ev,
    )


def fm_alignment(log: RunLog) -> Finding:
    names = log.names(kind="pair")
    if not names:
        return Finding("fm_alignment", "skip", "no pair statistics (log_pair of prediction vs target) in the log")
    worst, ev, lines = "ok", {}, []
    for name in names:
        recs = log.series(name, "pair")
        first, last = _windows(recs)
        cos0, cos1 = _median(r.get("cos") for r in first), _median(r.get("cos") for r in last)
        ratio1 = _median(r.get("norm_ratio") for r in last)
        ev[name] = {
            "cos_first": cos0,
            "cos_last": cos1,
            "norm_ratio_last": ratio1,
            "mse_last": _median(r.get("mse") for r in last),
            "steps": [recs[0].step, recs[-1].step],
        }
        if cos1 is None or ratio1 is None:
            status = "fail"
        elif cos1 < FM_COS_FAIL or not FM_RATIO_FAIL[0] <= ratio1 <= FM_RATIO_FAIL[1]:
            status = "fail"
        elif cos1 < FM_COS_WARN or not FM_RATIO_WARN[0] <= ratio1 <= FM_RATIO_WARN[1]:
            status = "warn"
        else:
            status = "ok"
        lines.append((status, name, cos1, ratio1))
        worst = max(worst, status, key=_rank)
    tail = {"fail": ": the prediction does not point along the target", "warn": ": weak alignment", "ok": ""}[worst]
    cos_v = _finite(c for _, _, c, _ in lines)
    rat_v = _finite(r for _, _, _, r in lines)
    span = lambda v: _g(min(v), 3) if _g(min(v), 3) == _g(max(v), 3) else f"{_g(min(v), 3)}..{_g(max(v), 3)}"  # noqa: E731
    head = f"{len(lines)} pair series: " if len(lines) > 1 else f"{lines[0][1]}: "
    text = f"{head}cos {span(cos_v) if cos_v else 'n/a'}, norm ratio pred/target {span(rat_v) if rat_v else 'n/a'}"
    return Finding("fm_alignment", worst, text + tail, ev)


def clip_saturation(log: RunLog) -> Finding:
    """Share of clipped x0 values per sampling run (scalars named '*clip*'), judged on the second half of
    each run: at high noise every x0 estimate is rough and clipping many of them is normal; a model whose
    x0 still leaves the data range near the end is one that clipping is rescuing (report 001)."""
    counts_by_step = {}
    for r in log.records:
        if r.kind == "tensor" and r.role == "pred_x0" and r.get("count"):
            counts_by_step[r.step] = r.get("count")
    runs: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in log.records:
        if r.kind != "scalar" or "clip" not in r.name or r.get("value") is None:
            continue
        v = r.get("value")
        if "frac" in r.name or "share" in r.name:  # "clip_fraction", SampleResult.step_stats()'s "clipped_frac"
            runs[r.name].append((r.step, v))
        elif r.step in counts_by_step:
            runs[r.name].append((r.step, v / counts_by_step[r.step]))
    if not runs:
        return Finding("clip_saturation", "skip", "no clipping statistics (scalar '*clip*') logged during sampling")
    late: dict[str, float] = {}
    every = []
    for name, series in runs.items():
        series.sort()
        every += series
        tail = [v for _, v in series[len(series) // 2 :]]
        late[name] = sum(tail) / len(tail)
    vals = [v for _, v in every]
    mean_f, max_f = sum(vals) / len(vals), max(vals)
    worst_run = max(late, key=late.get)
    late_f = late[worst_run]
    ev = {
        "late_fraction": late_f,
        "late_fraction_per_run": late,
        "mean_fraction": mean_f,
        "max_fraction": max_f,
        "max_at_step": every[vals.index(max_f)][0],
        "steps": len(vals),
    }
    desc = (
        f"{late_f:.1%} of x0 values clipped over the second half of sampling ({worst_run}); "
        f"{mean_f:.1%} over all steps, {max_f:.1%} at worst"
    )
    if late_f > CLIP_FAIL:
        return Finding(
            "clip_saturation",
            "fail",
            f"{desc}: clipping is doing the model's work (out-of-range x0: check normalisation / training)",
            ev,
        )
    if late_f > CLIP_WARN:
        return Finding("clip_saturation", "warn", desc, ev)
    if mean_f > CLIP_FAIL:
        return Finding(
            "clip_saturation",
            "warn",
            f"{desc}: the x0 estimates leave the clip range through the noisy steps (an undertrained model, or "
            "a clip range narrower than the data?); the end of sampling is unclipped",
            ev,
        )
    return Finding("clip_saturation", "ok", desc, ev)


def _noise_like(a: Agg) -> bool:
    """Centred and symmetric, as N(0, s^2) samples are."""
    if a.mean is None or not a.std or a.min is None:
        return False
    return abs(a.mean) < 0.1 * a.std and abs(a.max + a.min) < 0.25 * (a.max - a.min)


def samples_like_noise(log: RunLog) -> Finding:
    samples, real = _all_tensor_records(log, "sample"), _all_tensor_records(log, "real")
    if not samples or not real:
        return Finding("samples_like_noise", "skip", "needs tensors with role sample and role real in the log")
    last = max(r.step for r in samples)
    s, r = aggregate([x for x in samples if x.step == last]), aggregate(real)
    ev = {
        "sample": {"mean": s.mean, "std": s.std, "range": s.range, "step": last},
        "real": {"mean": r.mean, "std": r.std, "range": r.range},
    }
    if s.mean is None or r.mean is None or not r.std or not s.std:
        return Finding("samples_like_noise", "fail", "generated or real samples have no finite values", ev)
    shift = abs(s.mean - r.mean) / r.std
    ratio = s.std / r.std
    ev.update(
        mean_shift_in_real_std=shift, std_ratio=ratio, sample_noise_like=_noise_like(s), real_noise_like=_noise_like(r)
    )
    desc = f"generated mean {_g(s.mean, 3)} / std {_g(s.std, 3)} vs real {_g(r.mean, 3)} / {_g(r.std, 3)}"
    if _noise_like(s) and not _noise_like(r):
        return Finding(
            "samples_like_noise",
            "fail",
            f"samples look like N(0, {_g(s.std, 3)}^2), unlike the real data ({desc}): check that "
            "sampling reads the model output as the prediction type it was trained on",
            ev,
        )
    if shift > SAMPLE_SHIFT_FAIL or not SAMPLE_STD_FAIL[0] <= ratio <= SAMPLE_STD_FAIL[1]:
        return Finding("samples_like_noise", "fail", f"generated distribution differs from the real one: {desc}", ev)
    if shift > SAMPLE_SHIFT_WARN or not SAMPLE_STD_WARN[0] <= ratio <= SAMPLE_STD_WARN[1]:
        return Finding("samples_like_noise", "warn", f"generated distribution is off: {desc}", ev)
    return Finding("samples_like_noise", "ok", desc, ev)


RULES = {
    "nonfinite": nonfinite,
    "data_normalization": data_normalization,
    "timestep_distribution": timestep_distribution,
    "forward_process": forward_process,
    "prediction_range": prediction_range,
    "loss_trend": loss_trend,
    "params_frozen": params_frozen,
    "fm_alignment": fm_alignment,
    "clip_saturation": clip_saturation,
    "samples_like_noise": samples_like_noise,
}


def evaluate(log: RunLog, *, data_range: tuple[float, float] | None = None) -> list[Finding]:
    """All findings, in the order of API.md section 4. A rule that breaks reports `skip` with the reason."""
    findings = []
    for rule_id, rule in RULES.items():
        try:
            f = rule(log, data_range) if rule_id == "data_normalization" else rule(log)
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            f = Finding(rule_id, "skip", f"could not evaluate: {type(exc).__name__}: {exc}")
        findings.append(f)
    return findings
