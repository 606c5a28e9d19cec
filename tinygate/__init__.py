"""tinygate: a pytest release gate for optimized (pruned, quantized, converted) ML models.

    from tinygate import Gate
    checks = Gate("gate.toml").variant("mymodel-int8").judge()

Names are imported on first use, so that loading the pytest plugin in any pytest run stays cheap.
"""

__version__ = "0.1.0"

_WHERE = {"Gate": "tinygate.gate", "VariantRun": "tinygate.gate", "Check": "tinygate.checks",
          "Artifact": "tinygate.artifacts", "load_torch": "tinygate.artifacts", "save_torch": "tinygate.artifacts",
          "step": "tinygate.steps"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tinygate' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
