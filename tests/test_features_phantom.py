"""The phantoms' own truth is consistent (tests/phantoms.py)."""

from __future__ import annotations

import pytest
from phantoms import build_phantom

from cdeg import labels


def test_phantom_truth_is_consistent():
    ph = build_phantom()
    # Concave endplates: the middle of every disc is taller than its edges.
    for d in labels.DISC_NAMES:
        t = ph.truth[d]
        assert t["disc_height_middle_mm"] > t["disc_height_anterior_mm"] - 1.0
        assert t["disc_height_middle_mm"] > 0
    # Segmental angles of C2-C3..C6-C7 add up to the Cobb angle (cdeg.measures).
    seg = sum(ph.truth[d]["segmental_angle_deg"] for d in labels.DISC_NAMES[:5])
    assert seg == pytest.approx(ph.truth["C2-C7"]["cobb_c2c7_deg"], abs=1e-9)
