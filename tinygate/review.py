"""What a pull request's gate.toml changes in the target branch's, and the config the judge gates it with.

The judge lists every change. One that loosens the gate (a budget or regression threshold loosened, a check,
variant or model removed or added, a machine profile changed) fails until a person approves it; without
approval the target's budgets stay in force. Both files are read as TOML data: nothing they name is imported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tinygate.budgets import BUDGETS
from tinygate.errors import GateError

# [regression] thresholds: which way loosens (lets a larger regression through)
LOOSER_WHEN_HIGHER = {"size_growth_pct", "size_growth_floor_kb", "psnr_drop_db", "accuracy_drop_pct",
                      "drift_psnr_db", "drift_accuracy_pct", "confidence", "slowdown_pct", "absolute_slowdown_pct",
                      "absolute_floor_ms", "fidelity_drop_db"}
LOOSER_WHEN_LOWER = {"latency_p_value", "float_change_sqnr_db"}
# an added variant is gated by the budgets it brings, if it brings at least one of these
QUALITY = {k for k, b in BUDGETS.items() if b.unit not in ("KB", "ms", "x", "MB", "x float")} - {"min_weight_sqnr_db"}


@dataclass(frozen=True)
class Change:
    where: str  # the TOML key: models.digits.variants.float.budgets.min_accuracy_pct
    what: str
    needs_approval: bool

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


def changes(target: dict, candidate: dict) -> list[Change]:
    """Every difference between the target's config and the pull request's that the verdict depends on."""
    found: list[Change] = []
    t_models, c_models = target.get("models", {}), candidate.get("models", {})
    for m in sorted(set(t_models) | set(c_models)):
        key = f"models.{m}"
        if m not in c_models:
            found.append(Change(key, "model removed", True))
        elif m not in t_models:
            found.append(Change(key, "model added: the judge has no trusted data for it (add its data and budgets "
                                     "on the target branch first)", True))
        else:
            found += _model_changes(key, t_models[m], c_models[m])
    t_reg, c_reg = target.get("regression", {}), candidate.get("regression", {})
    from tinygate.config import RegressionSettings

    defaults = {f.name: f.default for f in fields(RegressionSettings)}
    for k in sorted(set(t_reg) | set(c_reg)):
        old, new = t_reg.get(k, defaults.get(k)), c_reg.get(k, defaults.get(k))
        if old != new:
            looser = _looser(old, new, higher_is_looser=k in LOOSER_WHEN_HIGHER) if k in \
                LOOSER_WHEN_HIGHER | LOOSER_WHEN_LOWER else True
            found.append(Change(f"regression.{k}", f"{'loosened' if looser else 'tightened'} {old} -> {new}", looser))
    if target.get("machines", {}) != candidate.get("machines", {}):
        found.append(Change("machines", "machine profiles changed (they decide where latency limits hold)", True))
    if target.get("networks", {}) != candidate.get("networks", {}):
        found.append(Change("networks", "network profiles changed (they decide what download times are)", True))
    if target.get("steps", {}) != candidate.get("steps", {}):
        found.append(Change("steps", "user steps changed (they ran in the pull request's build only)", False))
    return found


def _model_changes(key: str, tm: dict, cm: dict) -> list[Change]:
    found = [Change(f"{key}.{f}", f"changed {_short(tm.get(f))} -> {_short(cm.get(f))} (the judge keeps the "
                                  "target's data and shapes)", False)
             for f in sorted((set(tm) | set(cm)) - {"variants"}) if tm.get(f) != cm.get(f)]
    tv, cv = tm.get("variants", {}), cm.get("variants", {})
    for v in sorted(set(tv) | set(cv)):
        vk = f"{key}.variants.{v}"
        if v not in cv:
            found.append(Change(vk, "variant removed", True))
            continue
        if v not in tv:
            found.append(_added_variant(vk, cv[v].get("budgets", {}), tv))
            continue
        old_steps, new_steps = tv[v].get("steps", []), cv[v].get("steps", [])
        if old_steps != new_steps:
            dropped = _quantizing(old_steps) if not _quantizing(new_steps) else set()  # no longer quantized
            found.append(Change(f"{vk}.steps", f"changed {_short(old_steps)} -> {_short(new_steps)}"
                                + (f": drops {', '.join(sorted(dropped))} and its quantization checks" if dropped
                                   else ""), bool(dropped)))
        for f in sorted((set(tv[v]) | set(cv[v])) - {"steps", "budgets"}):  # machine, speedup_reference, ...
            if tv[v].get(f) != cv[v].get(f):
                found.append(Change(f"{vk}.{f}", f"changed {tv[v].get(f)} -> {cv[v].get(f)}", True))
        tb, cb = tv[v].get("budgets", {}), cv[v].get("budgets", {})
        for b in sorted(set(tb) | set(cb)):
            bk = f"{vk}.budgets.{b}"
            if b not in cb:
                found.append(Change(bk, f"check removed (was {tb[b]})", True))
            elif b not in tb:
                found.append(Change(bk, f"check added: {cb[b]}", False))
            elif isinstance(tb[b], dict) and isinstance(cb[b], dict):  # max_download_s: seconds per profile
                for p in sorted(set(tb[b]) | set(cb[b])):
                    old, new = tb[b].get(p), cb[b].get(p)
                    if new is None:
                        found.append(Change(f"{bk}.{p}", f"check removed (was {old})", True))
                    elif old is None:
                        found.append(Change(f"{bk}.{p}", f"check added: {new}", False))
                    elif old != new:
                        looser = _looser(old, new, higher_is_looser=True)
                        found.append(Change(f"{bk}.{p}", f"{'loosened' if looser else 'tightened'} {old} -> {new}",
                                            looser))
            elif tb[b] != cb[b]:
                spec = BUDGETS.get(b)
                looser = _looser(tb[b], cb[b], higher_is_looser=spec.kind == "max") if spec else True
                found.append(Change(bk, f"{'loosened' if looser else 'tightened'} {tb[b]} -> {cb[b]}", looser))
    return found


def _added_variant(key: str, budgets: dict, target_variants: dict) -> Change:
    """An added variant is gated by the budgets it brings if it brings a quality or fidelity budget and none looser
    than the loosest of the same key among the model's variants on the target branch."""
    held = sorted(QUALITY & set(budgets))
    if not held:
        return Change(key, "variant added without a quality or fidelity budget", True)
    looser = []
    for b in held:
        existing = [t["budgets"][b] for t in target_variants.values() if b in t.get("budgets", {})]
        loosest = (max if BUDGETS[b].kind == "max" else min)(existing) if existing else None
        if loosest is not None and _looser(loosest, budgets[b], higher_is_looser=BUDGETS[b].kind == "max"):
            looser.append(f"{b} {budgets[b]} (loosest on the target: {loosest})")
    if looser:
        return Change(key, f"variant added with budgets looser than the model's others: {', '.join(looser)}", True)
    return Change(key, f"variant added, gated by the budgets it brings: {_short(budgets)}", False)


def _quantizing(steps: Any) -> set[str]:
    from tinygate.budgets import QUANTIZING_STEPS

    return {s.get("step") for s in steps if isinstance(s, dict) and s.get("step") in QUANTIZING_STEPS} \
        if isinstance(steps, list) else set()


def check_shape(raw: Any, where: Path) -> None:
    """The pull request's gate.toml must have the shape of a config before it is compared: tables where tables go,
    a list of step tables, numbers or strings as budgets. One line names the first key that does not."""
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise GateError(where, key, f"the pull request's gate config: {what}")

    need(isinstance(raw, dict), "", "is not a table")
    for table in ("models", "regression", "machines", "steps", "networks"):
        need(isinstance(raw.get(table, {}), dict), table, "must be a table")
    for m, model in raw.get("models", {}).items():
        need(isinstance(model, dict), f"models.{m}", "must be a table")
        need(isinstance(model.get("variants", {}), dict), f"models.{m}.variants", "must be a table")
        for v, variant in model.get("variants", {}).items():
            key = f"models.{m}.variants.{v}"
            need(isinstance(variant, dict), key, "must be a table")
            need(isinstance(variant.get("budgets", {}), dict), f"{key}.budgets", "must be a table")
            steps = variant.get("steps", [])
            need(isinstance(steps, list) and all(isinstance(s, dict) and isinstance(s.get("step"), str)
                                                 for s in steps), f"{key}.steps", "must be a list of step tables")
            for b, value in variant.get("budgets", {}).items():
                values = value.values() if b == "max_download_s" and isinstance(value, dict) else [value]
                need(all(isinstance(v, int | float | str) and not isinstance(v, bool) for v in values),
                     f"{key}.budgets.{b}", "must be a number" if b != "max_download_s" else
                     "must be a table of seconds per network profile")


def _looser(old: Any, new: Any, higher_is_looser: bool) -> bool:
    if not (isinstance(old, int | float) and isinstance(new, int | float)):
        return True  # not comparable: a person decides
    return new > old if higher_is_looser else new < old


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def judged_config(target: dict, candidate: dict, approved: bool, known_steps: set[str]) -> tuple[dict, list[Change]]:
    """The config the judge gates the bundle with: the target's models (data, shapes), each variant built as the
    pull request builds it (its steps), held to the target's budgets and thresholds, or to the pull request's
    where a person approved the change; an added variant is held to the budgets it brings. Also the variants it
    cannot gate: those whose steps the target branch does not have (their verdict needs the target's code)."""
    merged, unknown = copy.deepcopy(target), []
    if approved:
        for table in ("regression", "machines", "networks"):
            merged.pop(table, None)
            if table in candidate:
                merged[table] = copy.deepcopy(candidate[table])
    for m, cm in candidate.get("models", {}).items():
        if m not in merged.get("models", {}):
            continue  # an added model: no trusted data to judge it with (changes() lists it)
        variants = merged["models"][m].setdefault("variants", {})
        for v, body in cm.get("variants", {}).items():
            steps = body.get("steps") if isinstance(body, dict) else None
            names = [s.get("step") for s in steps if isinstance(s, dict)] if isinstance(steps, list) else [None]
            if not set(names) <= known_steps:
                unknown.append(Change(f"models.{m}.variants.{v}.steps", f"uses steps the target branch does not have "
                                      f"({', '.join(map(str, sorted(set(names) - known_steps, key=str)))}): "
                                      "add them on the target branch first", True))
            elif v not in variants or approved:
                variants[v] = copy.deepcopy(body)
            else:
                variants[v]["steps"] = copy.deepcopy(steps)
        if approved:
            for v in [v for v in variants if v not in cm.get("variants", {})]:
                del variants[v]
    return merged, unknown
