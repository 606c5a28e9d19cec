"""Latency and memory of one artifact on this machine, and the machine profile absolute limits apply to.

Timings are wall-clock per call (time.perf_counter), the runner (session, loaded module) built before
any timed call, after warm-up calls; threads are pinned by the runner (--gate-threads).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


VECTOR_UNITS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def vector_units() -> str:
    """The CPU's vector and dot-product units that change kernels' speed and, for int8, their results (ONNX
    Runtime's u8s8 kernels saturate on x86 without VNNI; numpy's vectorized pow, exp and log differ in their last
    bit). Hosts sold under one model name ("AMD EPYC" in a VM) differ in them. Empty where /proc/cpuinfo is
    absent."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith(("flags", "Features"))),
                         [])
    except OSError:
        return ""
    return " ".join(unit for unit in VECTOR_UNITS if unit in flags)


@functools.cache
def int8_saturates() -> bool:
    """True where the installed ONNX Runtime's CPU int8 kernels saturate (x86 without VNNI: they add u8 x s8 products
    pairwise in 16 bits, its quantization docs say): asked of ONNX Runtime itself, by a MatMulInteger of 255s and
    127s whose pair sums (64770) pass 32767, so the answer holds on any OS and any ONNX Runtime build."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    depth = 64
    weights = np.full((depth, 8), 127, np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, depth])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [4, 8])],
                              [numpy_helper.from_array(weights, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"a": np.full((4, depth), 255, np.uint8)})[0]
    return bool(np.any(got != depth * 255 * 127))


def machine_fingerprint() -> dict[str, object]:
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "system": platform.system(),
            "machine": platform.machine(), "vector_units": vector_units()}


def matches(profile: dict[str, object]) -> bool:
    """A machine profile from gate.toml matches when its cpu_model is a substring of this CPU's model, its
    cpu_count (if given) equals this machine's, and this CPU has every one of its vector_units (if given): VM hosts
    sold under one model name differ in AVX-512 and VNNI."""
    here = machine_fingerprint()
    if str(profile["cpu_model"]).lower() not in str(here["cpu_model"]).lower():
        return False
    if not set(profile.get("vector_units", ())) <= set(str(here["vector_units"]).split()):
        return False
    return "cpu_count" not in profile or profile["cpu_count"] == here["cpu_count"]


def describe(profile: dict[str, object]) -> str:
    """A machine profile, or this machine, in words: CPU model, count and vector units where given."""
    units = profile.get("vector_units")
    return ", ".join([str(profile["cpu_model"])] + ([f"{profile['cpu_count']} CPUs"] if "cpu_count" in profile else [])
                     + ([f"vector units {' '.join(units) if isinstance(units, list | tuple) else units}"]
                        if units else []))


def interleaved(first: Callable[[], object], second: Callable[[], object], rounds: int, warmup: int,
                enough: Callable[[np.ndarray, np.ndarray], bool] | None = None,
                least: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-round times (seconds) of two callables run alternately, the order flipping every round, so that
    drift in the machine's speed hits both alike. With `enough(a, b)`, it stops early, after `least` rounds at
    the soonest, once that says the times so far settle what they are for."""
    for _ in range(warmup):
        first(), second()
    a, b = np.empty(rounds), np.empty(rounds)
    for i in range(rounds):
        pair = ((a, first), (b, second)) if i % 2 == 0 else ((b, second), (a, first))
        for store, fn in pair:
            start = time.perf_counter()
            fn()
            store[i] = time.perf_counter() - start
        if enough is not None and i + 1 >= least and enough(a[:i + 1], b[:i + 1]):
            return a[:i + 1], b[:i + 1]
    return a, b


def rss_mb() -> float:
    """This process's resident memory now, in MB (not the peak, which never falls and so hides a leak that stays
    under an earlier high): /proc/self/statm on Linux, `ps` elsewhere."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(os.getpid())], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1e3  # KB


def timings(fn: Callable[..., object], args: tuple, rounds: int, warmup: int) -> np.ndarray:
    """Per-call times (seconds) after warm-up calls: what pytest-benchmark's pedantic mode measures, for when
    it has turned itself off (under pytest-xdist)."""
    for _ in range(warmup):
        fn(*args)
    out = np.empty(rounds)
    for i in range(rounds):
        start = time.perf_counter()
        fn(*args)
        out[i] = time.perf_counter() - start
    return out


@contextlib.contextmanager
def machine_lock(path: Path, exclusive: bool):
    """A lock shared by every test of a pytest-xdist run: each test holds it shared, a timed test holds it
    exclusively, so nothing runs beside a latency measurement (flock: released if a worker dies)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
