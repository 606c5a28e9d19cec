"""The library core: build, measure and judge a variant of a gate config, without pytest.

    gate = Gate("gate.toml")
    checks = gate.variant("tinybeauty-coreml_int8").judge()   # [Check], each pass / fail / not measured

A Gate holds the validated config, the on-disk cache and the run's Recorder; a VariantRun chains the
variant's steps through the cache and measures its artifact, each measurement once per Gate. The pytest
plugin (tinygate.pytest_plugin) is a thin layer over these two classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from tinygate import checks as checks_
from tinygate import evaluate, pipeline
from tinygate.artifacts import Artifact, backend_name
from tinygate.budgets import QUANTIZING_STEPS
from tinygate.bundle import Bundle
from tinygate.cache import Cache
from tinygate.checks import Check
from tinygate.config import GateConfig, Step, Variant
from tinygate.errors import GateError
from tinygate.reports import Recorder


def fidelity_key(output: str) -> str:
    """Where an output's per-sample SQNR is kept among a variant's samples (and in a baseline's scores)."""
    return f"sqnr_db__{output}"


class Gate:
    """A gate config with its cache and the record of what was measured and judged."""

    def __init__(self, config: GateConfig | str | Path, cache_dir: str | Path | None = None, threads: int = 1,
                 recorder: Recorder | None = None, bundle: Bundle | None = None,
                 root: str | Path | None = None) -> None:
        from tinygate.config import load

        self.config = config if isinstance(config, GateConfig) else load(config, root=root)
        self.bundle = bundle  # judging a pull request's bundle: its artifacts are measured, nothing is built
        self.review: list = []  # judging: how the pull request's config differs (tinygate.review.Change)
        self.approved = False  # judging: a person approved those changes
        self.progress: Callable[[str], None] | None = None  # told of each build and evaluation as it starts
        self.cache = Cache(Path(cache_dir) if cache_dir else self.config.path.parent / ".tinygate-cache")
        self.threads = threads
        self.recorder = recorder or Recorder()
        self._memo: dict[tuple, object] = {}

    @property
    def variants(self) -> list[Variant]:
        return self.config.variants

    def variant(self, ref: str | Variant) -> VariantRun:
        """A variant by id (`model-variant`) or as configured."""
        if isinstance(ref, Variant):
            return VariantRun(self, ref)
        found = next((v for v in self.config.variants if v.id == ref), None)
        if found is None:
            known = ", ".join(v.id for v in self.config.variants)
            raise GateError(self.config.path, None, f"no variant {ref!r} (known: {known})")
        return VariantRun(self, found)

    def judge(self, variants: list[str] | None = None) -> list[Check]:
        """Every check of every variant (or of those named), latency aside."""
        return [c for v in self.config.variants if variants is None or v.id in variants
                for c in self.variant(v).judge()]

    def once(self, key: tuple, compute: Callable[[], object]):
        """compute() once per key for this Gate; a GateError is kept too and raised again on every call."""
        if key not in self._memo:
            try:
                self._memo[key] = compute()
            except GateError as exc:
                self._memo[key] = exc
        if isinstance(self._memo[key], GateError):
            raise self._memo[key]
        return self._memo[key]

    def apply(self, src: Artifact, step: Step, variant: Variant) -> Artifact:
        """One step through the cache, once per Gate; a step that crashes becomes one line naming it."""
        def build() -> Artifact:
            say = self.progress and (lambda message: self.progress(f"{variant.id}: building, {message}"))
            ctx = pipeline.Context(self.config.models[variant.model], self.cache, self.config.steps, say)
            try:
                art = pipeline.apply_step(src, step, ctx)
            except GateError:
                raise
            except Exception as exc:  # any crash in a step must fail the run, clearly
                first = (str(exc).strip().splitlines() or [""])[0]
                raise GateError(variant.id, f"step {step.name}", f"failed: {type(exc).__name__}: {first}") from None
            if pipeline.choice_of(art):
                self.recorder.note(f"{variant.id}, step {step.name}: {pipeline.choice_of(art)}")
            return art
        params = tuple(sorted((k, repr(v)) for k, v in step.params.items()))
        return self.once(("step", src.digest, step.name, params, variant.model), build)


class VariantRun:
    """One variant of a Gate: its chain of artifacts, its measurements, and its checks."""

    def __init__(self, gate: Gate, variant: Variant) -> None:
        self.gate, self.variant = gate, variant
        self.model = gate.config.models[variant.model]

    def __repr__(self) -> str:
        return f"VariantRun({self.variant.id})"

    # -- build ------------------------------------------------------------------------------------------------

    def chain(self) -> list[Artifact]:
        """The float model, then what each configured step made of the one before, in order (from the bundle
        when judging one)."""
        if self.gate.bundle is not None:
            chain = list(self.gate.once(("bundle", self.variant.id), self._judged_chain))
        else:
            chain = [self.float_artifact()]
            for step in self.variant.steps:
                chain.append(self.gate.apply(chain[-1], step, self.variant))
        if self.variant.runtime == "web":  # the same file, run by another runtime: scored under its own digest
            from tinygate.browser import web_artifact

            chain[-1] = self.gate.once(("web", chain[-1].digest), lambda: web_artifact(chain[-1]))
        return chain

    def _judged_chain(self) -> list[Artifact]:
        """A bundle's artifacts for this variant, PyTorch weights run by this branch's factory. TorchScript is code
        (it can read and write files), so a step that made TorchScript is run again here, by this branch's code,
        on the bundle's PyTorch weights; the bundle's TorchScript is never loaded."""
        steps = self.gate.config.steps
        kinds = [self.model.source_kind] + [steps[s.name].produces for s in self.variant.steps]
        code = pipeline.float_artifact(self.model).digest if self.model.factory else ""  # this branch's model code
        chain = self.gate.bundle.chain(self.variant.id, self.model.name, kinds, self.model.factory, code)
        for i, art in enumerate(chain):
            if art.kind == "torchscript":
                chain[i] = self.gate.apply(chain[i - 1], self.variant.steps[i - 1], self.variant)
        return chain

    def after(self, step_name: str) -> Artifact:
        """The artifact the variant's (first) step of this name produced."""
        index = next((i for i, s in enumerate(self.variant.steps) if s.name == step_name), None)
        if index is None:
            raise GateError(self.variant.id, None, f"has no step {step_name!r}")
        return self.chain()[index + 1]

    def float_artifact(self) -> Artifact:
        if self.gate.bundle is not None:
            return self.gate.once(("bundle", self.variant.id), self._judged_chain)[0]
        return pipeline.float_artifact(self.model)

    def artifact(self) -> Artifact:
        """The variant's deployable artifact (the last of its chain); its size is recorded once per run."""
        art, rec, vid = self.chain()[-1], self.gate.recorder, self.variant.id
        if rec.hashes.get(vid) != art.digest:
            rec.hashes[vid] = art.digest
            wire = art.transfer_bytes()
            rec.figure(vid, model=self.variant.model, variant=self.variant.name, backend=self.variant.backend,
                       size_kb=art.disk_bytes() / 1000, transfer_kb=wire / 1000)
            if any(v.runtime == "web" or v.max_download_s for v in self.gate.config.variants):  # a browser config
                rec.figure(vid, download_s={n: net.seconds(wire) for n, net in self.gate.config.networks.items()})
            rec.artifacts[vid] = {"kind": art.kind, "path": str(art.path), "digest": art.digest,
                                  "factory": art.factory, "meta": [list(m) for m in art.meta],
                                  "bytes": art.disk_bytes()}
        return art

    # -- measure ----------------------------------------------------------------------------------------------

    def evaluation(self):
        """The model's evaluation data (whose hash the report records)."""
        data = pipeline.Context(self.model, self.gate.cache, self.gate.config.steps).evaluation()
        self.gate.recorder.data.setdefault(self.model.name, data.digest())
        return data

    def _scores(self, art: Artifact) -> evaluate.Scores:
        def compute():
            return evaluate.score(art, self.model, self.evaluation(), self.gate.cache, self.gate.threads,
                                  self._say(art), reference=self.float_artifact())
        return self.gate.once(("scores", art.digest, self.model.name), compute)

    def scores(self) -> evaluate.Scores:
        """Per-sample scores of the artifact on the evaluation set (psnr/ssim, or predictions/correct)."""
        result = self._scores(self.artifact())
        rec = self.gate.recorder
        rec.figure(self.variant.id, measured_on=result.backend, **evaluate.summary_figures(result))
        rec.samples.setdefault(self.variant.id, {}).update({k: v.tolist() for k, v in result.values.items()})
        return result

    def _say(self, art: Artifact) -> Callable[[str], None] | None:
        """The Gate's progress callback, each message naming what it is about: this variant or its float model."""
        if self.gate.progress is None:
            return None
        name = self.variant.id if art.digest != self.float_artifact().digest or self.variant.is_float else \
            f"{self.model.name} float model"
        return lambda message: self.gate.progress(f"{name}: {message}")

    def float_scores(self) -> evaluate.Scores:
        return self._scores(self.float_artifact())

    def fidelity(self) -> list:
        """Per-output fidelity to the float model on the evaluation inputs (tinygate.fidelity)."""
        art, ref = self.artifact(), self.float_artifact()

        def compute():
            return evaluate.fidelity(art, ref, self.model, self.evaluation(), self.gate.cache, self.gate.threads,
                                     self._say(art))
        result = self.gate.once(("fidelity", art.digest, ref.digest, self.model.name), compute)
        rec = self.gate.recorder
        rec.figure(self.variant.id, fidelity={r.output: r.figures() for r in result},
                   measured_on=backend_name(art.kind, art.meta))
        rec.samples.setdefault(self.variant.id, {}).update({fidelity_key(r.output): list(r.samples_db) for r in result})
        return result

    def _quantizing_index(self) -> int | None:
        return next((i for i, s in enumerate(self.variant.steps) if s.name in QUANTIZING_STEPS), None)

    def reference_weights(self) -> dict[str, list]:
        """The float weights the variant's quantizer saw, each name with its candidate forms: after the torch-side
        steps (prune), before export, as stored and with a following BatchNorm folded in; for a model given as
        ONNX, the initializers of the float ONNX model the quantizing step started from."""
        from tinygate.artifacts import bn_folded_weights, float_weights

        chain = self.chain()
        torch_steps = [i for i, art in enumerate(chain) if art.kind == "torch"]
        index = self._quantizing_index()
        source = chain[torch_steps[-1]] if torch_steps else chain[len(self.variant.steps) if index is None else index]
        refs = {name: [w] for name, w in float_weights(source).items()}
        for name, w in bn_folded_weights(source).items():
            refs.setdefault(name, []).append(w)
        return refs

    def explain(self) -> Callable[[], str] | None:
        """For a quantized variant, a callable naming the layers that lose the most (run only on a failure)."""
        from tinygate import attribution

        index = self._quantizing_index()
        if index is None:
            return None
        step, model, vid = self.variant.steps[index], self.model, self.variant.id

        def compute() -> str:
            try:
                chain = self.chain()
                ctx = pipeline.Context(model, self.gate.cache, self.gate.config.steps)
                calibration = ctx.calibration() if model.calibration else None
                losses = attribution.explain(step.name, step.params, chain[index], chain[index + 1],
                                             model.input_names, ctx.evaluation().head(4), calibration,
                                             self.reference_weights())
                self.gate.recorder.figure(vid, attribution=[asdict(loss) for loss in losses])
                return attribution.describe(losses)
            except Exception as exc:  # the failure stands; say why it could not be explained
                return f"attribution failed: {type(exc).__name__}: {exc}"
        return lambda: self.gate.once(("explain", vid), compute)

    # -- judge ------------------------------------------------------------------------------------------------

    def checks_to_run(self) -> list[str]:
        """The checks this variant gets: each configured budget (latency aside), the quantized-weight bound
        of a quantized variant, the spec of a Core ML package."""
        keys = [k for k in self.variant.budgets if k in checks_.BUDGET_CHECKS]
        if self._quantizing_index() is not None:
            keys += ["weight_error_vs_bound"] + ([] if "min_weight_sqnr_db" in keys else ["min_weight_sqnr_db"])
        elif checks_.came_int8(self.variant, self.model):
            keys += ["existing_scales_use_range"]
        if self.variant.kind == "mlpackage":
            keys += [k for k in checks_.SPEC_CHECKS if k.startswith("coreml")]
        return keys

    def check(self, key: str) -> list[Check]:
        """Measure and judge one check (a budget key, the quantized-weight bound, a Core ML spec check), recorded in
        the Gate's Recorder;
        what cannot be measured is a "not measured" Check carrying the reason."""
        fn = checks_.SPEC_CHECKS.get(key) or checks_.BUDGET_CHECKS[key]
        try:
            found = fn(self)
        except GateError as exc:
            found = [checks_.not_measured(self, key, str(exc))]
        except Exception as exc:  # a measurement that crashes is a check that cannot pass: say why, in one line
            first = (str(exc).strip().splitlines() or [""])[0]
            found = [checks_.not_measured(self, key, f"{self.variant.id}: {key} could not be measured: "
                                                     f"{type(exc).__name__}: {first}")]
        self.gate.recorder.checks.extend(found)
        return found

    def judge_value(self, key: str, value: float, note: str = "", budget: float | None = None) -> Check:
        """Hold a figure measured elsewhere (a timing) to a budget key, recorded like every check."""
        found = checks_.budget_check(self, key, value, note=note, budget=budget)
        self.gate.recorder.checks.append(found)
        return found

    def judge(self) -> list[Check]:
        """Every check of the variant (latency aside, which needs timing: tinygate.latency)."""
        return [c for key in self.checks_to_run() for c in self.check(key)]
