"""Decisions against the baseline that do not cry wolf: size growth with an absolute floor, paired quality
statistics (a bootstrap confidence interval of the mean PSNR change, McNemar's test on flipped predictions),
and a sequential latency rule on interleaved timings of the baseline and candidate artifacts.

Statistics come from scipy (a scikit-image dependency): scipy.stats.bootstrap, binomtest and wilcoxon.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verdict:
    regressed: bool
    figure: float  # the number the decision is about (growth %, mean delta, median ratio)
    detail: str  # one line a person can check the decision with


def size_growth(base_bytes: int, new_bytes: int, max_pct: float, floor_bytes: float) -> Verdict:
    """Regressed when the artifact grew by more than max_pct percent AND by more than floor_bytes."""
    growth = new_bytes - base_bytes
    pct = 100.0 * growth / base_bytes if base_bytes else float("inf")
    regressed = bool(pct > max_pct and growth > floor_bytes)
    return Verdict(regressed, pct, f"{base_bytes} -> {new_bytes} bytes ({growth:+d} B, {pct:+.2f}%); allowed "
                                   f"{max_pct:g}% or {floor_bytes:g} B, whichever is larger")


def absolute_latency(base_ms: float, new_ms: float, max_pct: float, floor_ms: float) -> Verdict:
    """Today's p50 against the baseline's stored p50 (same machine fingerprint only): regressed when it grew
    by more than max_pct percent AND by more than floor_ms. Coarse on purpose: job-to-job drift is large."""
    growth = new_ms - base_ms
    pct = 100.0 * growth / base_ms
    regressed = bool(pct > max_pct and growth > floor_ms)
    return Verdict(regressed, pct, f"p50 {base_ms:.4g} -> {new_ms:.4g} ms ({pct:+.1f}%); allowed {max_pct:g}% "
                                   f"unless under {floor_ms:g} ms")


def mean_delta(base: np.ndarray, new: np.ndarray, max_drop: float, confidence: float = 0.95) -> Verdict:
    """Paired per-sample change (new - base, e.g. PSNR in dB): regressed when the mean drops by more than
    max_drop AND the drop is significant (the bootstrap interval of the mean change lies below 0)."""
    from scipy.stats import bootstrap

    delta = np.asarray(new, np.float64) - np.asarray(base, np.float64)
    if not np.all(np.isfinite(delta)):
        return Verdict(True, float("nan"), "a sample scored NaN or inf: the change cannot be measured")
    mean = float(delta.mean())
    if np.ptp(delta) == 0:  # identical changes on every sample: the interval is that value
        low = high = mean
    else:
        ci = bootstrap((delta,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                       random_state=np.random.default_rng(0)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    regressed = bool(-mean > max_drop and high < 0)
    return Verdict(regressed, mean, f"mean change {mean:+.4f} over {len(delta)} paired samples, "
                                    f"{100 * confidence:g}% CI [{low:+.4f}, {high:+.4f}]; allowed drop {max_drop:g}")


def flipped(base_correct: np.ndarray, new_correct: np.ndarray, max_drop_pct: float,
            alpha: float = 0.05) -> Verdict:
    """Paired accuracy change with McNemar's exact test: regressed when accuracy drops by more than
    max_drop_pct points AND significantly more samples turned wrong than turned right (one-sided p < alpha)."""
    from scipy.stats import binomtest

    base_correct, new_correct = np.asarray(base_correct, bool), np.asarray(new_correct, bool)
    broke, fixed = int(np.sum(base_correct & ~new_correct)), int(np.sum(~base_correct & new_correct))
    drop = 100.0 * (broke - fixed) / len(base_correct)
    p = binomtest(broke, broke + fixed, 0.5, alternative="greater").pvalue if broke + fixed else 1.0
    regressed = bool(drop > max_drop_pct and p < alpha)
    change = 0.0 - drop  # not -drop: no "-0.00"
    return Verdict(regressed, change, f"accuracy change {change:+.2f} pts: {broke} samples turned wrong, {fixed} "
                                      f"turned right (McNemar one-sided p = {p:.3g}); allowed drop {max_drop_pct:g} "
                                      f"pts at p < {alpha:g}")


@dataclass(frozen=True)
class LatencyDecision:
    verdict: str  # "regressed", "unchanged", or "not regressed" (decided at the round cap)
    median_ratio: float  # candidate / baseline time, per round, median
    ratio_high: float  # upper end of the confidence interval of the median ratio
    p_value: float  # one-sided Wilcoxon signed-rank test that the candidate is slower
    rounds: int

    @property
    def regressed(self) -> bool:
        return self.verdict == "regressed"

    def detail(self, slowdown_pct: float) -> str:
        return (f"median time ratio {self.median_ratio:.3f} (CI upper {self.ratio_high:.3f}) over {self.rounds} "
                f"interleaved rounds, Wilcoxon one-sided p = {self.p_value:.2g}; {self.verdict} "
                f"(allowed slowdown {slowdown_pct:g}%)")


def time_pair(base: Callable[[], object], new: Callable[[], object], rng: np.random.Generator) -> tuple[float, float]:
    """One round: both called once, in random order, timed with perf_counter."""
    times = {}
    for name in (("base", "new") if rng.random() < 0.5 else ("new", "base")):
        fn = base if name == "base" else new
        start = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - start
    return times["base"], times["new"]


def decide_latency(ratios: np.ndarray, slowdown_pct: float, p_value: float, final: bool,
                   confidence: float = 0.95) -> LatencyDecision | None:
    """The rule on per-round time ratios (candidate / baseline): regressed if the median ratio exceeds the
    allowed slowdown AND the one-sided Wilcoxon test is significant; unchanged if the interval of the median
    ratio stays under the allowed slowdown (the effect is clearly small); otherwise None (time more rounds),
    or, when `final`, not regressed unless the median exceeds the allowed slowdown."""
    from scipy.stats import bootstrap, wilcoxon

    ratios = np.asarray(ratios, np.float64)
    limit = 1.0 + slowdown_pct / 100.0
    median = float(np.median(ratios))
    logs = np.log(ratios)
    p = float(wilcoxon(logs, alternative="greater").pvalue) if np.any(logs != 0) else 1.0
    high = float(bootstrap((ratios,), np.median, confidence_level=confidence, n_resamples=999, method="percentile",
                           random_state=np.random.default_rng(0)).confidence_interval.high)
    n = len(ratios)
    if median > limit and p < p_value:
        return LatencyDecision("regressed", median, high, p, n)
    if high < limit:
        return LatencyDecision("unchanged", median, high, p, n)
    if final:
        return LatencyDecision("regressed" if median > limit else "not regressed", median, high, p, n)
    return None


def compare_latency(base: Callable[[], object], new: Callable[[], object], slowdown_pct: float = 10.0,
                    p_value: float = 0.001, rounds: int = 20, max_rounds: int = 120, warmup: int = 3,
                    seed: int = 0) -> LatencyDecision:
    """Time baseline and candidate interleaved, in random order, `rounds` at a time until the rule decides
    or `max_rounds` is reached."""
    rng = np.random.default_rng(seed)
    for _ in range(warmup):
        time_pair(base, new, rng)
    ratios: list[float] = []
    while True:
        for _ in range(rounds):
            t_base, t_new = time_pair(base, new, rng)
            ratios.append(t_new / t_base)
        decision = decide_latency(np.array(ratios), slowdown_pct, p_value, final=len(ratios) >= max_rounds)
        if decision is not None:
            return decision


def replay_latency(pairs, slowdown_pct: float = 10.0, p_value: float = 0.001, rounds: int = 20,
                   max_rounds: int = 120) -> LatencyDecision:
    """compare_latency's sequential rule on recorded (baseline, candidate) round times: the decision it would
    have taken timing them itself, after as many rounds. For benchmarks that judge several rules on one run."""
    ratios = np.array([new / base for base, new in pairs], np.float64)
    if len(ratios) < max_rounds:
        raise ValueError(f"{len(ratios)} recorded rounds; the rule may need {max_rounds}")
    for end in range(rounds, max_rounds + rounds, rounds):
        decision = decide_latency(ratios[:end], slowdown_pct, p_value, final=end >= max_rounds)
        if decision is not None:
            return decision
    raise AssertionError("unreachable: the final step always decides")


def _upper_mean(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The mean and its one-sided upper confidence bound (percentile bootstrap; exact for constant values)."""
    from scipy.stats import bootstrap

    mean = float(values.mean())
    if np.ptp(values) == 0:
        return mean, mean
    ci = bootstrap((values,), np.mean, confidence_level=2 * confidence - 1, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return mean, float(ci.high)


def worse_by(base, new, max_drop: float, confidence: float = 0.95) -> Verdict:
    """Paired per-sample change (new - base, one sample = one evaluation input): regressed only when it is worse
    by more than max_drop at the stated confidence, i.e. the one-sided upper bound of the mean change lies below
    -max_drop. A change that is merely different, or worse by less than max_drop, passes."""
    delta = np.asarray(new, np.float64) - np.asarray(base, np.float64)
    if delta.size == 0 or not np.all(np.isfinite(delta)):
        return Verdict(True, float("nan"), "a sample scored NaN or inf, or none was paired: the change cannot be "
                                           "measured")
    mean, high = _upper_mean(delta, confidence)
    return Verdict(bool(high < -max_drop), mean, f"mean change {mean:+.3f} dB over {len(delta)} paired inputs, "
                                                 f"{100 * confidence:g}% upper bound {high:+.3f}; allowed drop "
                                                 f"{max_drop:g} dB")


def mostly_at_least(values, floor: float, share: float = 0.05) -> Verdict:
    """Per-input figures (dB) that must reach a floor: regressed when more than `share` of the inputs fall below
    it. A share, not a mean: identical inputs score a capped maximum that would average a broken minority away."""
    values = np.asarray(values, np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return Verdict(True, float("nan"), "an input scored NaN or inf: the figure cannot be measured")
    below = int(np.sum(values < floor))
    return Verdict(below > share * values.size, float(np.median(values)),
                   f"{below} of {values.size} inputs under {floor:g} dB (median {np.median(values):.2f} dB, lowest "
                   f"{values.min():.2f} dB); allowed {share:.0%}")


def same_data(baseline, model: str, data_digest: str, variant_id: str, root) -> None:
    """Refuse, naming both hashes, a baseline measured on other evaluation data: its per-sample scores cannot be
    paired with today's."""
    from tinygate.errors import GateError

    theirs = baseline.data_digest(model)
    if theirs != data_digest:
        raise GateError(root, None, f"{variant_id}: the baseline was evaluated on different data "
                                    f"(hash {str(theirs)[:12]}, today {data_digest[:12]}); per-sample comparison is "
                                    "refused: accept a new baseline on today's data")
