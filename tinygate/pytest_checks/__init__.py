"""The gate's checks as test functions. A repository's test module runs them by importing them:

    from tinygate.pytest_checks import *  # noqa: F403  (every check)
    from tinygate.pytest_checks.budgets import test_size_budget  # or only some

Each runs once per configured variant it applies to (the tinygate plugin parametrizes `variant`).
"""

from tinygate.pytest_checks.budgets import *  # noqa: F403
from tinygate.pytest_checks.budgets import __all__ as _budgets
from tinygate.pytest_checks.latency import *  # noqa: F403
from tinygate.pytest_checks.latency import __all__ as _latency
from tinygate.pytest_checks.regression import *  # noqa: F403
from tinygate.pytest_checks.regression import __all__ as _regression
from tinygate.pytest_checks.review import *  # noqa: F403
from tinygate.pytest_checks.review import __all__ as _review
from tinygate.pytest_checks.web import *  # noqa: F403
from tinygate.pytest_checks.web import __all__ as _web

__all__ = [*_budgets, *_latency, *_regression, *_review, *_web]
