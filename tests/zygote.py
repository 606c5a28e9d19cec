"""A process that imports what every gate run imports (torch, onnxruntime, matplotlib, pytest: about 2.3 s of the
3.3 s a failing gate takes) once, then forks a child for each `pytest model_tests` a test runs.

The tests run about 150 gates; started afresh, each paid those imports again. A child is a fresh process all the
same: its own environment, working folder, output and pytest session; no user module is ever imported here.
Runs whose environment must reach the interpreter's start (PYTHONPATH, a plugin) still start a new one.

Protocol, one JSON line each way: {"args", "cwd", "env", "output", "timeout"} in on stdin; {"rc", "timed_out"} out (a
run past its timeout is killed).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

# Not tinygate, pytest-benchmark or xdist: pytest rewrites the asserts of its plugins' packages at import, and warns
# (an error under the gate's filterwarnings) when one is imported already.
PRELOAD = ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime.quantization", "scipy.stats", "matplotlib.pyplot",
           "safetensors", "filelock", "platformdirs", "pytest")


def _child(request: dict) -> None:
    """Become `python -m pytest ARGS` in the request's folder, environment and output file; never returns."""
    rc = 70
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = request["cwd"]  # as `python -m pytest` puts the working folder first
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False, buffering=1)
        sys.stderr = open(2, "w", closefd=False, buffering=1)
        sys.argv = ["pytest", *request["args"]]
        import pytest

        rc = int(pytest.main(request["args"]))
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()  # what an interpreter's exit runs: the browser's close, pytest's cleanups
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def main() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            channel.close()
            _child(request)
        handle = os.pidfd_open(pid)
        ended = select.select([handle], [], [], request["timeout"])[0]
        os.close(handle)
        if not ended:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        channel.write(json.dumps({"rc": os.waitstatus_to_exitcode(status), "timed_out": not ended}) + "\n")


if __name__ == "__main__":
    main()
