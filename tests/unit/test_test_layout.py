"""The test tree must not shadow importable packages: tests/triton/ (the real-Triton tier) would otherwise
import as a package named ``triton``, and torch would then take it for OpenAI Triton and fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_tests_folder_is_not_on_sys_path() -> None:
    assert str(TESTS) not in [str(Path(p).resolve()) for p in sys.path if p]


def test_triton_name_is_not_taken_by_the_test_tier() -> None:
    spec = importlib.util.find_spec("triton")
    locations = [str(p) for p in (spec.submodule_search_locations or [])] if spec else []
    assert not any(location.startswith(str(TESTS)) for location in locations), locations
