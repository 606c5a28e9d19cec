"""The browser runtime (onnxruntime-web in headless Chromium) and download time per network profile."""

from tinygate.pytest_checks.web import (  # noqa: F401
    test_download_time,
    test_web_compatibility,
    test_web_latency,
    test_web_matches_onnxruntime,
)
