"""The third-party licence notices (assets/THIRD_PARTY_LICENSES), for an About dialog or
``enclave`` to show. The file sits in ``assets/`` next to the packages, both in the source
tree and in a frozen build (``_internal/assets``)."""

from __future__ import annotations

from pathlib import Path

THIRD_PARTY_LICENSES = Path(__file__).resolve().parent.parent / "assets" / "THIRD_PARTY_LICENSES"


def third_party_licenses() -> str:
    """The text of THIRD_PARTY_LICENSES, or a short note where to find it if it is missing."""
    try:
        return THIRD_PARTY_LICENSES.read_text(encoding="utf-8")
    except OSError:
        return (
            "The third-party licence notices were not found at "
            f"{THIRD_PARTY_LICENSES}. Generate them with scripts/third_party_licenses.py."
        )
