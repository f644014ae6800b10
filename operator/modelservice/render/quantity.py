"""Kubernetes resource quantities, parsed to bytes (for sizing emptyDirs)."""

from __future__ import annotations

import re
from decimal import Decimal

_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_SUFFIX: dict[str, Decimal] = {
    **{k: Decimal(v) for k, v in (_DECIMAL | _BINARY).items()},
    "m": Decimal("0.001"),
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


def parse_quantity(value: str) -> Decimal:
    """``"2Gi"`` -> 2147483648; raises ValueError for anything that is not a plain quantity."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]


def mebibytes(value: str) -> str:
    """A quantity rounded down to whole Mi (at least 1Mi), e.g. ``"1536Mi"``; whole Gi as ``"2Gi"``."""
    mib = max(int(parse_quantity(value) // (2**20)), 1)
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"
