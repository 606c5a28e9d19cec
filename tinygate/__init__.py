"""tinygate: a pytest release gate for optimized (pruned, quantized, converted) ML models."""

__version__ = "0.1.0"
