"""Quantity parsing used to size emptyDirs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelservice.render.quantity import mebibytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [("2Gi", 2 * 2**30), ("500m", Decimal("0.5")), ("1.5G", 1_500_000_000), ("64Mi", 64 * 2**20), ("10", 10)],
)
def test_parse(text: str, value: Decimal | int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "2 Gi", "2GiB", "-1Gi", "abc"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_mebibytes() -> None:
    assert mebibytes("1Gi") == "1Gi"
    assert mebibytes("1536Mi") == "1536Mi"
    assert mebibytes("1") == "1Mi"
    assert mebibytes(str(3 * 2**29)) == "1536Mi"
