"""Roles the doctor works out itself, for logs written with the names users pick and no `role=`.

The rules read roles (API.md section 3). A record without one gets, in this order:

1. a role the user gave the doctor (`diagnose(..., roles={"imgs": "x0"})`, `fastdiff doctor --role imgs=x0`);
2. the default role of its name (`fastdiff.probe.default_role`: `images` -> x0, `timesteps` -> t, ...);
3. a role read from its statistics and its company in the log:
   - `t`: a small tensor (one value per sample: its element count divides the batch tensors') of whole
     numbers in [0, T) with T <= 10000, or of values in [0, 1] (flow matching's time);
   - `x0` (the data): a batch-shaped tensor (the element count of most tensors of a training step) whose
     values lie in [0, 1], [0, 16], [0, 255] or [-1, 1] (pixels, scaled or not), when the log has none yet;
   - `pred` / `target`: the two tensors of a pair record `a~b` (log_pair of the prediction and its target);
   - `sample`: a batch-shaped tensor logged only after the last training step (no loss at its steps).

Whatever is still unplaced is named in one note, with how to place it; nothing is skipped quietly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..probe.roles import ROLES, default_role
from .log import Record, RunLog

WATCH_PREFIXES = ("param/", "grad/", "update/", "update_ratio/", "act/")
PIXEL_RANGES = ((0.0, 1.0), (0.0, 16.0), (0.0, 255.0), (-1.0, 1.0))
MAX_T = 10_000


@dataclass
class Placement:
    """How the doctor placed the log's tensors: name -> (role, why), and the names it could not place."""

    placed: dict[str, tuple[str, str]] = field(default_factory=dict)
    unplaced: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        out = []
        inferred = [f"{n!r} as {role} ({why})" for n, (role, why) in self.placed.items()]
        if inferred:
            out.append("roles worked out from names and statistics: " + "; ".join(inferred))
        if self.unplaced:
            names = ", ".join(repr(n) for n in self.unplaced[:12])
            more = f" and {len(self.unplaced) - 12} more" if len(self.unplaced) > 12 else ""
            example = self.unplaced[0]
            out.append(
                f"could not tell what {names}{more} {'is' if len(self.unplaced) == 1 else 'are'}: the rules that "
                f"need them are skipped. Say it once: rec.log({example!r}, x, role='x0') when logging, or "
                f"`fastdiff doctor RUN.jsonl --role {example}=x0` (roles: {', '.join(ROLES)})"
            )
        return out


def _set_role(log: RunLog, name: str, role: str, kinds=("tensor",)) -> None:
    for r in log.records:
        if r.name == name and r.kind in kinds and r.role is None:
            r.role = role


def _fits(lo: float, hi: float, ranges) -> tuple[float, float] | None:
    for a, b in ranges:
        tol = 1e-6 * (b - a)
        if lo >= a - tol and hi <= b + tol:
            return a, b
    return None


def infer_roles(log: RunLog, roles: dict[str, str] | None = None) -> Placement:
    """Give records without a role one (module docstring); returns what was placed and what was not."""
    placement = Placement()
    for name, role in (roles or {}).items():
        if role not in ROLES:
            raise ValueError(f"role {role!r} for {name!r} is not a role; accepted: {', '.join(ROLES)}")
        hits = [r for r in log.records if r.name == name]
        if not hits:
            raise ValueError(f"--role {name}={role}: the log has no record named {name!r}")
        for r in hits:
            r.role = role
    for r in log.records:
        if r.role is None and not r.name.startswith(WATCH_PREFIXES):
            r.role = default_role(r.name)

    unplaced: dict[str, list[Record]] = defaultdict(list)
    for r in log.records:
        if r.kind == "tensor" and r.role is None and not r.name.startswith(WATCH_PREFIXES):
            unplaced[r.name].append(r)
    if not unplaced:
        return placement

    training = log.training_steps()
    tensors = [r for r in log.records if r.kind == "tensor" and not r.name.startswith(WATCH_PREFIXES)]
    counts = Counter(int(r.get("count") or 0) for r in tensors if not training or r.step in training)
    batch_count = counts.most_common(1)[0][0] if counts else 0
    have = {r.role for r in log.records}

    def span(recs: list[Record]) -> tuple[float | None, float | None]:
        lows = [r.get("min") for r in recs if r.get("min") is not None]
        highs = [r.get("max") for r in recs if r.get("max") is not None]
        return (min(lows), max(highs)) if lows else (None, None)

    for pair in log.names(kind="pair"):
        for sep in ("~", " vs ", "|"):
            if sep in pair:
                a, b = (s.strip() for s in pair.split(sep, 1))
                for n, role in ((a, "pred"), (b, "target")):
                    if n in unplaced:
                        _set_role(log, n, role)
                        placement.placed[n] = (role, f"the {'first' if role == 'pred' else 'second'} of pair {pair!r}")
                        del unplaced[n]
                break

    for name, recs in list(unplaced.items()):
        lo, hi = span(recs)
        if lo is None:
            continue
        sizes = {int(r.get("count") or 0) for r in recs}
        at_training = not training or all(r.step in training for r in recs)
        small = batch_count > 0 and all(0 < c < batch_count and batch_count % c == 0 for c in sizes)
        whole = float(lo).is_integer() and float(hi).is_integer()
        if small and at_training and "t" not in have and lo >= 0 and (whole and hi < MAX_T or hi <= 1.0):
            role, why = "t", f"one value per sample, in [{lo:g}, {hi:g}]"
        elif (
            batch_count
            and sizes == {batch_count}
            and at_training
            and "x0" not in have
            and (rng := _fits(lo, hi, PIXEL_RANGES)) is not None
        ):
            role, why = "x0", f"batch-shaped, values in [{lo:g}, {hi:g}] within [{rng[0]:g}, {rng[1]:g}]: data"
        elif training and batch_count and all(r.step not in training for r in recs) and "sample" not in have:
            if all(r.step > max(training) for r in recs) and len({r.step for r in recs}) == 1:
                role, why = "sample", "logged once, after training"
            else:
                continue
        else:
            continue
        _set_role(log, name, role)
        have.add(role)
        placement.placed[name] = (role, why)
        del unplaced[name]
    placement.unplaced = list(unplaced)
    return placement
