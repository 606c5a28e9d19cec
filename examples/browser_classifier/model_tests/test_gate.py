"""The gate: every check of tinygate on every variant in gate.toml (what `tinygate init` writes)."""

from tinygate.pytest_checks import *  # noqa: F403
