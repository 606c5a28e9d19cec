"""When judging a pull request's bundle (`tinygate judge`): its gate.toml changes, and its float model's export."""
from tinygate.pytest_checks.review import test_bundle_float_matches_build, test_config_changes_approved  # noqa: F401
