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
CLIP_FAIL, CLIP_WARN = 0.2, 0.02  # share of clipped x0 values over the second half of a sampling run ...
CLIP_FAIL_ONE_STEP = 0.35  # ... or over a whole run logged at one step (its noisy steps clip more), above
# what the data's own edges explain (`edge_share`: data piled on the clip bounds, like an image's background,
# is clipped by any small error of a good model)
BLOWUP = 10.0  # sampling state / x0 estimates reaching 10x the data's largest |value|: report 001's blow-up
LOSS_SPIKE = 5.0  # a value > 5x the running median of the previous ones
LOSS_MIN_DROP = 0.1  # less than 10% drop from the first to the last window: not learning
SAMPLE_SHIFT_FAIL, SAMPLE_SHIFT_WARN = 0.6, 0.25  # |mean_gen - mean_real| / std_real
SAMPLE_STD_FAIL, SAMPLE_STD_WARN = (1 / 3, 3.0), (2 / 3, 1.5)  # std_gen / std_real
SAMPLE_OVERSHOOT_WARN = 0.5  # generated values beyond the real range by half its width (bounded data)
T_COVER_FAIL = 0.5  # integer t reaching less than half of the schedule's timesteps
NOISE_SEEN_FAIL = 0.3  # mean sigma^2 of the training batches below this: the model never sees high noise


@dataclass
class Finding:
    id: str
    status: str  # ok | warn | fail | skip
    summary: str
    evidence: dict = field(default_factory=dict)
    label: str | None = None  # tells apart findings of one id (e.g. "sampler as x0", "sampler as eps")

    @property
    def title(self) -> str:
        return f"{self.id} ({self.label})" if self.label else self.id

    def to_json(self) -> dict:
        out = {"id": self.id, "status": self.status, "summary": self.summary, "evidence": _clean(self.evidence)}
        if self.label:
            out["label"] = self.label
        return out


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

# the order in which a NaN travels through a training step: the first of these to show it is the cause
_CAUSAL = {"x0": 0, "latents": 0, "real": 0, "noise": 1, "t": 1, "x_t": 2, "pred": 3, "pred_x0": 3, "target": 3}
_CAUSAL |= {"loss": 5, "grad": 6, "update": 7, "param": 8, "sample": 9}


def _causal_rank(r: Record) -> float:
    if r.kind == "pair":
        return 4.0
    return _CAUSAL.get(r.role, 4.5)


def _nonfinite_detail(r: Record) -> dict | None:
    if r.kind == "scalar" and r.role == "update" and r.name.startswith("update_ratio/"):
        # the watch's update_ratio ||dw|| / ||w|| is 0/0 for a zero weight that did not move (a frozen,
        # zero-initialised bias): not a NaN in training. A non-finite weight or update shows in the
        # param/ and update/ tensor records.
        return None
    if r.kind == "tensor":
        detail = {k: int(r.get(k) or 0) for k in ("nan_count", "posinf_count", "neginf_count")}
        return detail if sum(detail.values()) else None
    if r.kind == "scalar":
        return {"value": None} if r.get("value") is None else None
    # pair: NaN inputs make the mse / max diff NaN (a zero norm only makes cos NaN)
    return {"mse": r.get("mse")} if r.get("mse") is None or r.get("max_abs_diff") is None else None


def nonfinite_records(log: RunLog) -> list[Record]:
    """Records holding a NaN/Inf, first step first; within a step in causal order (data -> x_t -> pred ->
    loss -> grad -> param), so the tensor named first is where the NaN entered, not where it ended up."""
    hits = [r for r in log.records if _nonfinite_detail(r) is not None]
    return sorted(hits, key=lambda r: (r.step, _causal_rank(r), r.line))


def nonfinite(log: RunLog) -> Finding:
    hits: dict[str, dict] = {}
    for r in nonfinite_records(log):
        h = hits.setdefault(r.name, {"first_step": r.step, "records": 0, "first": _nonfinite_detail(r)})
        h["records"] += 1
    if not hits:
        return Finding("nonfinite", "ok", f"no NaN/Inf in {len(log.records)} records", {"records": len(log.records)})
    first_name = next(iter(hits))
    first = hits[first_name]
    role = next((r.role for r in log.records if r.name == first_name), None)
    where = f" (role {role})" if role else ""
    later = [n for n in hits if n != first_name]
    consequence = f"; {len(later)} more names follow from it (first: {', '.join(later[:4])})" if later else ""
    return Finding(
        "nonfinite",
        "fail",
        f"NaN/Inf first at step {first['first_step']} in {first_name!r}{where}{consequence}. The other rules "
        "judge the run up to that step",
        {"first_step": first["first_step"], "first_name": first_name, "names": hits},
    )


def _until_nonfinite(log: RunLog) -> int | None:
    first = log.first_nonfinite()
    return first[0] if first else None


def _cut(records: list[Record], until: int | None) -> list[Record]:
    return records if until is None else [r for r in records if r.step < until]


def _cut_note(until: int | None) -> str:
    return f" (judged before step {until}, where NaN/Inf first appears: see nonfinite)" if until is not None else ""


def _unplaced_hint(log: RunLog) -> str:
    names = getattr(log, "unplaced", [])
    return f"; tensors without a role: {', '.join(repr(n) for n in names[:6])} (see the note on roles)" if names else ""


def _training(records: list[Record], log: RunLog) -> list[Record]:
    """The records logged at training steps (those with a loss), or all of them in a log without a loss."""
    steps = log.training_steps()
    if not steps:
        return records
    inside = [r for r in records if r.step in steps]
    return inside or records


def _data_records(log: RunLog) -> tuple[list[Record], str]:
    """The training data: role x0 at training steps, else latents there (latent diffusion trains on them)."""
    recs = _training(_all_tensor_records(log, "x0"), log)
    if recs:
        return recs, "x0"
    steps = log.training_steps()
    recs = [r for r in _all_tensor_records(log, "latents") if not steps or r.step in steps]
    return recs, "latents"


def data_normalization(log: RunLog, data_range: tuple[float, float] | None = None) -> Finding:
    recs, what = _data_records(log)
    if not recs:
        return Finding(
            "data_normalization",
            "skip",
            "no training data in the log (role x0, or latents logged at training steps)" + _unplaced_hint(log),
        )
    a = aggregate(recs)
    ev = {
        "role": what,
        "mean": a.mean,
        "std": a.std,
        "range": a.range,
        "records": a.records,
        "per_step_mean_range": _per_step_range(recs, "mean"),
        "per_step_std_range": _per_step_range(recs, "std"),
    }
    if a.mean is None:
        return Finding("data_normalization", "fail", f"{what} has no finite values", ev)
    names = ", ".join(sorted({r.name for r in recs}))
    desc = f"{names} ({what}) mean {_g(a.mean)}, std {_g(a.std)}, range [{_g(a.min)}, {_g(a.max)}]"
    if not a.std:
        return Finding("data_normalization", "fail", f"the data are constant ({desc})", ev)
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
    if abs(a.mean) > 3 or a.std > 3 or (a.min >= 0 and a.max > 2):
        kind = "unscaled latents (multiply by the VAE's scaling factor)" if what == "latents" else "raw pixel values?"
        return Finding(
            "data_normalization",
            "fail",
            f"{desc}: not normalised ({kind}); the noise has std 1, so the data drown it or it drowns them",
            ev,
        )
    return Finding("data_normalization", "warn", f"{desc}: neither standardised nor in [-1, 1]", ev)


def _schedule_length(log: RunLog) -> tuple[int, str] | None:
    """T from a logged schedule tensor (betas, alphas_cumprod, ...: one value per timestep)."""
    for r in log.records:
        key = r.name.lower().rsplit("/", 1)[-1]
        if r.kind == "tensor" and any(k in key for k in ("alphas_cumprod", "alpha_bar", "betas")) and r.get("count"):
            return int(r.get("count")), r.name
    return None


def _noise_seen(log: RunLog) -> float | None:
    """Mean sigma^2 of the training batches, from E[x_t^2] = (1 - s) E[x0^2] + s (VP: alpha^2 + sigma^2 = 1)."""
    xt, x0 = _training(_all_tensor_records(log, "x_t"), log), _training(_all_tensor_records(log, "x0"), log)
    if not xt or not x0:
        return None
    a, b = aggregate(xt), aggregate(x0)
    if a.std is None or b.std is None:
        return None
    m2_t, m2_0 = a.std**2 + a.mean**2, b.std**2 + b.mean**2
    if abs(1 - m2_0) < 0.15:  # standardised data: x_t looks the same at every noise level
        return None
    return min(1.0, max(0.0, (m2_t - m2_0) / (1 - m2_0)))


def timestep_distribution(log: RunLog, num_train_timesteps: int | None = None) -> Finding:
    recs = _all_tensor_records(log, "t")
    if not recs:
        return Finding("timestep_distribution", "skip", "no tensor with role t in the log" + _unplaced_hint(log))
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
    desc = f"t in [{_g(lo)}, {_g(hi)}]: mean {_g(a.mean)} vs {_g(mu)}, std {_g(a.std)} vs {_g(sd_u)} (uniform)"
    if discrete:  # integer timesteps: do they cover the schedule?
        known = (num_train_timesteps, "given") if num_train_timesteps else _schedule_length(log)
        seen = _noise_seen(log)
        ev.update(num_train_timesteps=known[0] if known else None, mean_noise_variance=seen)
        if known and hi + 1 < T_COVER_FAIL * known[0]:
            return Finding(
                "timestep_distribution",
                "fail",
                f"{desc}: t covers only [0, {_g(hi)}] of the schedule's {known[0]} timesteps ({known[1]}); the "
                "model never trains at high noise (T mixed up with the number of sampling steps?)",
                ev,
            )
        if seen is not None and seen < NOISE_SEEN_FAIL:
            return Finding(
                "timestep_distribution",
                "fail",
                f"{desc}: x_t is mostly data (mean noise variance {seen:.2f}; uniform t over a whole schedule gives "
                f"0.5..0.75), so the model never trains at high noise: t is drawn from [0, {_g(hi + 1)}) - "
                "num_inference_steps instead of num_train_timesteps?",
                ev,
            )
        if not known and seen is None and hi + 1 <= 250:
            return Finding(
                "timestep_distribution",
                "warn",
                f"{desc}: t only reaches {_g(hi)}; right if the schedule has {_g(hi + 1)} timesteps, wrong if it "
                "has more (1000 is usual): give --num-train-timesteps to check",
                ev,
            )
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
    if z < 5 and abs(ratio - 1) < tol:
        return Finding("timestep_distribution", "ok", desc, ev)
    return Finding("timestep_distribution", "warn", f"{desc}: not uniform (intended? e.g. logit-normal)", ev)


def forward_process(log: RunLog) -> Finding:
    noise, xt, x0 = (_training(_all_tensor_records(log, r), log) for r in ("noise", "x_t", "x0"))
    if not noise and not xt:
        return Finding("forward_process", "skip", "no tensors with roles noise or x_t in the log" + _unplaced_hint(log))
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
    until = _until_nonfinite(log)
    pairs = []
    for pred_role, ref_role in (("pred", "target"), ("pred_x0", "x0")):
        preds, refs = log.by_role(pred_role), log.by_role(ref_role)
        if preds and refs:
            ref_recs = _cut([r for recs in refs.values() for r in recs], until)
            for name, recs in preds.items():
                pairs.append((name, _cut(recs, until), ref_recs))
    if not pairs:
        return Finding(
            "prediction_range",
            "skip",
            "no prediction (role pred/pred_x0) with its target/x0 logged" + _unplaced_hint(log),
        )
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
    return Finding("prediction_range", worst, "; ".join(lines) + _cut_note(until), ev)


def _rank(status: str) -> int:
    return {"skip": 0, "ok": 0, "warn": 1, "fail": 2}[status]


def _loss_series(log: RunLog) -> list[tuple[int, float | None]]:
    recs = [
        r for r in log.records if r.kind == "scalar" and (r.role == "loss" or (r.role is None and r.name == "loss"))
    ]
    return [(r.step, r.get("value")) for r in sorted(recs, key=lambda r: r.step)]


def loss_trend(log: RunLog) -> Finding:
    until = _until_nonfinite(log)
    series = _loss_series(log)
    values = [(s, v) for s, v in series if v is not None and (until is None or s < until)]
    if len(values) < 4:
        why = f" before step {until}, where NaN/Inf first appears" if until is not None else ""
        return Finding("loss_trend", "skip", f"{len(values)} finite loss values logged{why}; need at least 4")
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
    # still falling: the last quarter of the run is clearly below the quarter before it (stopped too early)
    q = len(values) // 4
    q3, q4 = _median(v for _, v in values[2 * q : 3 * q]), _median(v for _, v in values[3 * q :])
    still_falling = bool(q >= 2 and q3 and q4 is not None and q4 < 0.9 * q3)
    ev = {
        "first": l0,
        "last": l1,
        "drop": drop,
        "steps": [values[0][0], values[-1][0]],
        "spikes": len(spikes),
        "first_spike_steps": spikes[:10],
        "plateau_since": plateau_since,
        "still_falling": still_falling,
        "values": len(values),
        "judged_until": until,
    }
    desc = f"loss {_g(l0)} -> {_g(l1)} ({'fell' if drop >= 0 else 'rose'} {abs(drop):.1%}){_cut_note(until)}"
    distinct = {v for _, v in values}
    if len(distinct) == 1:
        return Finding("loss_trend", "fail", f"loss is constant at {_g(l1)}: nothing is being optimised", ev)
    if l1 > 1.1 * l0:
        return Finding("loss_trend", "fail", f"{desc}: the loss grows", ev)
    notes = []
    if plateau_since is not None and plateau_since > values[0][0]:
        notes.append(f"flat since step {plateau_since}")
    elif still_falling:
        notes.append("still falling when training stopped")
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
    """Parameters whose stats stop changing while training goes on. Only steps that trained (a loss logged
    there) and steps before the first NaN count: a watch left on while sampling, or weights turned NaN,
    are not frozen weights."""
    until = _until_nonfinite(log)
    training = log.training_steps()
    last_training = max(training) if training else None

    def keep(recs: list[Record]) -> list[Record]:
        return [
            r for r in recs if (until is None or r.step < until) and (last_training is None or r.step <= last_training)
        ]

    params = {k: v for k, v in ((k, keep(v)) for k, v in log.by_role("param").items()) if v}
    updates = {k: v for k, v in ((k, keep(v)) for k, v in log.by_role("update").items()) if v}
    grads = {_param_key(k): keep(v) for k, v in log.by_role("grad").items()}
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
    # frozen although its gradient is there and non-zero: the optimizer does not update it
    with_grads = {
        p: since
        for p, since in frozen.items()
        if sum(1 for r in grads.get(p, []) if r.step >= since and (r.get("absmax") or 0.0) > 0) >= 2
    }
    # one parameter appears as param/w, update/w and update_ratio/w (the Recorder's watch): count it once
    total = len({_param_key(n) for n in (*params, *updates)})
    ev = {
        "parameters": total,
        "frozen": len(frozen),
        "last_step": last_step,
        "frozen_since": dict(sorted(frozen.items(), key=lambda kv: kv[1])[:50]),
        "frozen_with_gradients": sorted(with_grads)[:50],
        "judged_until": until,
        "last_training_step": last_training,
    }
    note = _cut_note(until)
    if not frozen:
        return Finding("params_frozen", "ok", f"all {total} watched parameters keep changing{note}", ev)
    since = min(frozen.values())
    ev["since"] = since
    if with_grads:
        names = ", ".join(sorted(with_grads)[:4]) + (", ..." if len(with_grads) > 4 else "")
        return Finding(
            "params_frozen",
            "fail",
            f"{len(with_grads)} of {total} parameters ({names}) have non-zero gradients but never change from step "
            f"{min(with_grads.values())}: the optimizer does not update them (built before these layers were "
            f"replaced? left out of its param groups? learning rate 0?){note}",
            ev,
        )
    if len(frozen) >= max(1, 0.5 * total):
        return Finding(
            "params_frozen",
            "fail",
            f"{len(frozen)} of {total} parameters identical from step {since} to {last_step} "
            f"({last_step - since} steps) while the loss was still logged: training stopped updating the "
            f"weights{note}",
            ev,
        )
    return Finding(
        "params_frozen",
        "warn",
        f"{len(frozen)} of {total} parameters stop changing (first from step {since}) and get no gradient: "
        f"frozen on purpose (requires_grad=False)?{note}",
        ev,
    )


def fm_alignment(log: RunLog) -> Finding:
    until = _until_nonfinite(log)
    names = log.names(kind="pair")
    if not names:
        return Finding("fm_alignment", "skip", "no pair statistics (log_pair of prediction vs target) in the log")
    worst, ev, lines = "ok", {}, []
    for name in names:
        recs = _cut(log.series(name, "pair"), until)
        if not recs:
            continue
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
    if not lines:
        return Finding("fm_alignment", "skip", f"every pair record is at or after the first NaN/Inf (step {until})")
    tail = {"fail": ": the prediction does not point along the target", "warn": ": weak alignment", "ok": ""}[worst]
    cos_v = _finite(c for _, _, c, _ in lines)
    rat_v = _finite(r for _, _, _, r in lines)
    span = lambda v: _g(min(v), 3) if _g(min(v), 3) == _g(max(v), 3) else f"{_g(min(v), 3)}..{_g(max(v), 3)}"  # noqa: E731
    head = f"{len(lines)} pair series: " if len(lines) > 1 else f"{lines[0][1]}: "
    text = f"{head}cos {span(cos_v) if cos_v else 'n/a'}, norm ratio pred/target {span(rat_v) if rat_v else 'n/a'}"
    return Finding("fm_alignment", worst, text + tail + _cut_note(until), {**ev, "judged_until": until})


def edge_share(a: Agg) -> float:
    """How much of the data sits on the edges of its range, in [0, 1] (Bhatia-Davis: Var <= (max - m)(m - min),
    with equality when every value is at min or max). Digits in [-1, 1] (half background at -1): 0.67."""
    if a.mean is None or a.std is None or a.min is None or a.max is None or a.max <= a.min:
        return 0.0
    room = (a.max - a.mean) * (a.mean - a.min)
    return min(1.0, a.std**2 / room) if room > 0 else 1.0


def _clip_runs(log: RunLog) -> dict[str, list[tuple[int, float]]]:
    """Per clip series, (step, share of clipped x0 values). Counts logged several times within one step are
    summed back (a scalar record's value is the mean of its `logs` calls) and divided by all the x0 values
    logged in that step."""
    x0_count: dict[int, float] = defaultdict(float)
    for r in log.records:
        if r.kind == "tensor" and r.role == "pred_x0" and r.get("count"):
            x0_count[r.step] += r.get("count")
    runs: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in log.records:
        if "clip" not in r.name.lower() or r.role in ("param", "grad", "update"):
            continue
        if r.kind == "scalar" and r.get("value") is not None:
            total, share = r.get("value") * r.logs, r.get("value")
        elif r.kind == "tensor" and r.get("mean") is not None and (r.get("count") or 0) <= 64:
            total, share = r.get("mean") * r.get("count"), r.get("mean")  # clip counts logged with log()
        else:
            continue
        if any(k in r.name.lower() for k in ("frac", "share", "ratio", "pct", "percent")):
            runs[r.name].append((r.step, share / 100 if ("pct" in r.name or "percent" in r.name) else share))
        elif x0_count.get(r.step):
            runs[r.name].append((r.step, total / x0_count[r.step]))
    return runs


def _sampling_blowup(log: RunLog, data: Agg) -> dict | None:
    """The sampling state (role latents outside training steps), the x0 estimates (pred_x0) or the samples far
    beyond the data's largest |value| over the second half of sampling (report 001: "Final latents range:
    [-100, 100]")."""
    if data.min is None or data.max is None:
        return None
    scale = max(abs(data.min), abs(data.max), 1e-6)
    training = log.training_steps()
    worst = None
    for role in ("latents", "pred_x0", "sample"):
        recs = [r for r in _all_tensor_records(log, role) if not training or r.step not in training]
        steps = sorted({r.step for r in recs})
        late = set(steps[len(steps) // 2 :])  # the first, noisiest steps' x0 estimates are rough by nature
        for r in recs:
            if r.step not in late:
                continue
            amax = r.get("absmax")
            if amax is not None and amax > BLOWUP * scale and (worst is None or amax > worst["absmax"]):
                worst = {"name": r.name, "role": role, "step": r.step, "absmax": amax, "data_absmax": scale}
    return worst


def _clip_bounds(log: RunLog) -> tuple[float, float] | None:
    """The range of the x0 estimates logged while sampling (the clip range when they are logged clipped)."""
    training = log.training_steps()
    recs = [r for r in _all_tensor_records(log, "pred_x0") if not training or r.step not in training]
    lows, highs = _finite(r.get("min") for r in recs), _finite(r.get("max") for r in recs)
    return (min(lows), max(highs)) if lows and highs else None


def clip_saturation(log: RunLog) -> Finding:
    """Share of clipped x0 values per sampling run (scalars named '*clip*'), judged on the second half of
    each run: at high noise every x0 estimate is rough and clipping many of them is normal; a model whose
    x0 still leaves the data range near the end is one that clipping is rescuing (report 001). Data piled on
    the clip bounds (an image's background) is clipped by any small error: that share is allowed for. Also
    the blow-up that clipping prevents: sampling state or x0 estimates far beyond the data's range."""
    data_recs, _ = _data_records(log)
    real = _all_tensor_records(log, "real") or data_recs
    data = aggregate(real)
    blowup = _sampling_blowup(log, data) if real else None
    runs = _clip_runs(log)
    if not runs and blowup is None:
        skip = "no clipping statistics (scalar '*clip*') logged during sampling"
        return Finding("clip_saturation", "skip", skip)
    if blowup is not None:
        return Finding(
            "clip_saturation",
            "fail",
            f"sampling blew up: {blowup['name']} ({blowup['role']}) reaches |x| = {_g(blowup['absmax'], 3)} at step "
            f"{blowup['step']} while the data stay within {_g(blowup['data_absmax'], 3)}: x0 estimates are not "
            "clipped and run away (report 001); clip x0 to the data range, and check normalisation / training",
            {"blowup": blowup, "clip_runs": len(runs)},
        )
    edge = edge_share(data) if real else 0.0
    bounds = _clip_bounds(log)
    cuts_data = bool(
        bounds and real and data.min is not None and (data.min < bounds[0] - 0.05 or data.max > bounds[1] + 0.05)
    )
    # without the clipped x0 in the log the clip range is unknown: assume the usual one ([-1, 1] or [0, 1])
    usual = bool(real and data.min is not None and data.min >= -1.001 and data.max <= 1.001)
    if cuts_data or (bounds is None and not usual):
        edge = 0.0  # a clip range narrower than the data: the clipping is not small errors at the edges
    allowed = 0.5 * edge  # symmetric small errors clip about half of the values sitting on the bounds
    late: dict[str, float] = {}
    every = []
    one_step = False
    for name, series in runs.items():
        series.sort()
        every += series
        if len({s for s, _ in series}) < 4:
            one_step = True
            tail = [v for _, v in series]
        else:
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
        "data_edge_share": edge,
        "allowed_for_edges": allowed,
        "one_record_step": one_step,
        "x0_range_in_sampling": list(bounds) if bounds else None,
        "clip_range_cuts_data": cuts_data,
    }
    edges = (
        f"; the data sit on their range's edges (edge share {edge:.2f}), so up to {allowed:.0%} is expected"
        if allowed >= 0.05
        else ""
    )
    if cuts_data:
        edges = (
            f"; the clipped x0 span [{_g(bounds[0], 3)}, {_g(bounds[1], 3)}] but the data span "
            f"[{_g(data.min, 3)}, {_g(data.max, 3)}]: the clip range cuts the data"
        )
    if one_step:
        desc = (
            f"{late_f:.1%} of x0 values clipped over the whole sampling run ({worst_run}), logged at one record step "
            f"(call rec.step() after each sampling step to let the doctor judge the last steps alone){edges}"
        )
        fail_at = CLIP_FAIL_ONE_STEP
    else:
        desc = (
            f"{late_f:.1%} of x0 values clipped over the second half of sampling ({worst_run}); "
            f"{mean_f:.1%} over all steps, {max_f:.1%} at worst{edges}"
        )
        fail_at = CLIP_FAIL
    if late_f > allowed + fail_at:
        return Finding(
            "clip_saturation",
            "fail",
            f"{desc}: clipping is doing the model's work (its x0 estimates leave the data range: check "
            "normalisation, the prediction type the sampler assumes, and whether the model is trained enough)",
            ev,
        )
    if late_f > allowed + CLIP_WARN and not one_step:
        return Finding("clip_saturation", "warn", desc, ev)
    if mean_f > allowed + CLIP_FAIL and not one_step:
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


def _training_state(log: RunLog) -> dict:
    """What the training log says about the model: loss drop, still falling, alignment at the end."""
    out: dict = {}
    lt = loss_trend(log)
    if lt.status != "skip":
        out.update(loss_drop=lt.evidence.get("drop"), still_falling=lt.evidence.get("still_falling"))
    fm = fm_alignment(log)
    cos = [v["cos_last"] for v in fm.evidence.values() if isinstance(v, dict) and v.get("cos_last") is not None]
    if cos:
        out["cos_last"] = min(cos)
    return out


def _cause_hint(log: RunLog) -> str:
    if data_normalization(log).status == "fail":
        return "the training data are not normalised (see data_normalization): fix that first"
    st = _training_state(log)
    drop, falling, cos = st.get("loss_drop"), st.get("still_falling"), st.get("cos_last")
    facts = []
    if drop is not None:
        facts.append(f"the loss fell {drop:.0%}" + (" and was still falling" if falling else ""))
    if cos is not None:
        facts.append(f"cos(pred, target) {cos:.2f} at the end")
    told = f" ({', '.join(facts)})" if facts else ""
    # the loss of a denoiser cannot reach 0 (flow matching's stays high), so a small drop says little where
    # the alignment of prediction and target is known
    undertrained = falling or (cos < FM_COS_WARN if cos is not None else drop is not None and drop < 0.3)
    if undertrained:
        return (
            f"the model looks undertrained{told}: train longer before blaming the sampler; if it stays so, "
            "check that sampling reads the output as the prediction type it was trained on"
        )
    if not facts:
        return (
            "check that sampling reads the model output as the prediction type it was trained on (eps vs x0 vs v, "
            "report 002), and that the sampler integrates the whole time range at full step size (report 003); "
            "or the model is undertrained (log its loss to tell)"
        )
    return (
        f"training looks fine{told}, so suspect the sampler: does it read the model output as the prediction type "
        "it was trained on (eps vs x0 vs v, report 002), and integrate the whole time range at full step size "
        "(report 003)? `which_target` and `teacher_euler(sampler=...)` check each"
    )


def samples_like_noise(log: RunLog) -> Finding:
    samples = _all_tensor_records(log, "sample")
    real = _all_tensor_records(log, "real")
    ref = "real"
    if not real:  # the training data are the real reference
        real, ref = _data_records(log)
    if not samples or not real:
        missing = "generated samples (role sample)" if not samples else "real data (role real, or the x0 of training)"
        return Finding("samples_like_noise", "skip", f"needs {missing} in the log" + _unplaced_hint(log))
    last = max(r.step for r in samples)
    s, r = aggregate([x for x in samples if x.step == last]), aggregate(real)
    ev = {
        "sample": {"mean": s.mean, "std": s.std, "range": s.range, "step": last},
        "real": {"mean": r.mean, "std": r.std, "range": r.range, "from": ref},
    }
    if s.mean is None or r.mean is None or not r.std or not s.std:
        return Finding("samples_like_noise", "fail", "generated or real samples have no finite values", ev)
    shift = abs(s.mean - r.mean) / r.std
    ratio = s.std / r.std
    width = r.max - r.min
    overshoot = max(r.min - s.min, s.max - r.max, 0.0) / width if width > 0 else 0.0
    bounded = width > 0 and width < 8 * r.std  # a range a few stds wide: data with hard limits (pixels)
    ev.update(
        mean_shift_in_real_std=shift,
        std_ratio=ratio,
        overshoot_of_real_range=overshoot,
        real_bounded=bounded,
        sample_noise_like=_noise_like(s),
        real_noise_like=_noise_like(r),
    )
    desc = (
        f"generated mean {_g(s.mean, 3)} / std {_g(s.std, 3)} / range [{_g(s.min, 3)}, {_g(s.max, 3)}] vs "
        f"{'real' if ref == 'real' else 'training data'} {_g(r.mean, 3)} / {_g(r.std, 3)} / [{_g(r.min, 3)}, "
        f"{_g(r.max, 3)}]"
    )
    if ratio > 3 * SAMPLE_STD_FAIL[1] or overshoot > BLOWUP / 2:
        return Finding(
            "samples_like_noise",
            "fail",
            f"the samples blew up ({desc}): sampling diverges; clip x0 to the data range (report 001), and check "
            "the prediction type and the step size",
            ev,
        )
    if _noise_like(s) and not _noise_like(r):
        return Finding(
            "samples_like_noise",
            "fail",
            f"samples look like N(0, {_g(s.std, 3)}^2), unlike the real data ({desc}): {_cause_hint(log)}",
            ev,
        )
    if shift > SAMPLE_SHIFT_FAIL or not SAMPLE_STD_FAIL[0] <= ratio <= SAMPLE_STD_FAIL[1]:
        return Finding(
            "samples_like_noise",
            "fail",
            f"generated distribution differs from the real one ({desc}): {_cause_hint(log)}",
            ev,
        )
    if shift > SAMPLE_SHIFT_WARN or not SAMPLE_STD_WARN[0] <= ratio <= SAMPLE_STD_WARN[1]:
        return Finding("samples_like_noise", "warn", f"generated distribution is off ({desc}): {_cause_hint(log)}", ev)
    if bounded and overshoot > SAMPLE_OVERSHOOT_WARN:
        return Finding(
            "samples_like_noise",
            "warn",
            f"the samples leave the data's range ({desc}): a few outliers, or a sampler that stops short of t = 0",
            ev,
        )
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


def evaluate(
    log: RunLog, *, data_range: tuple[float, float] | None = None, num_train_timesteps: int | None = None
) -> list[Finding]:
    """All findings, in the order of API.md section 4. A rule that breaks reports `skip` with the reason."""
    findings = []
    for rule_id, rule in RULES.items():
        try:
            if rule_id == "data_normalization":
                f = rule(log, data_range)
            elif rule_id == "timestep_distribution":
                f = rule(log, num_train_timesteps)
            else:
                f = rule(log)
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            f = Finding(rule_id, "skip", f"could not evaluate: {type(exc).__name__}: {exc}")
        findings.append(f)
    return findings
