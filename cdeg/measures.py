"""Definitions of the clinical measurements, shared by the synthetic truth and by `cdeg extract`.

The generator writes true values under these definitions into ``truth/levels.csv``; the feature
extractor measures the same quantities on masks. Keeping the definitions here (and only here) is what
makes "measured vs truth" a meaningful comparison.

Geometry (sagittal plane, per level)
------------------------------------
* The **endplate chord** of a vertebral body is the straight line from its anterior to its posterior
  endplate corner, the corners being where the body's anterior and posterior walls meet the endplate
  surface. Each endplate has one chord, shared by its body and the disc it bounds.
* A piece (body or disc) is measured in the frame of its **lower chord**: its AP axis is the chord of the
  endplate below it (a body: its own inferior endplate; a disc: the superior endplate of the vertebra
  below), its **SI axis** is perpendicular to that chord. A body's walls are perpendicular to its inferior
  chord.
* Positions along a disc or body are fractions ``t`` of its AP extent along the AP axis, 0 = anterior
  edge, 1 = posterior edge: a body's extent runs between its walls (its endplate corners); a disc's from
  the mean of the two anterior corners to the mean of the two posterior corners of the bodies bounding it.
  Measurements are taken inset from the rounded corners, at :data:`POSITIONS`.
* **Disc height** at ``t``: distance along the SI axis between the superior endplate surface of the
  vertebra below and the inferior endplate surface of the vertebra above (mm). The endplates are
  concave, so the middle height exceeds the anterior and posterior heights.
* **Disc height index** (DHI): middle disc height / AP depth of the vertebral body above.
* **Vertebral body height** at ``t``: distance between the body's superior and inferior endplate surfaces
  along the body's SI axis (perpendicular to its inferior chord, mm). **Body depth**: AP extent of the body
  at mid-height, between its walls (mm), excluding posterior elements and away from the endplate
  osteophytes.
* **Disc angle**: angle between the inferior endplate chord of the vertebra above and the superior endplate
  chord of the vertebra below; positive = lordotic (disc taller anteriorly).
* **Body wedge angle**: angle between a body's superior and inferior endplate chords; positive = taller
  anteriorly.
* **Segmental angle** of level X-Y: angle between the inferior endplate chords of X and Y
  (= disc angle of X-Y + wedge angle of Y); positive = lordotic.
* **C2-C7 Cobb angle**: angle between the inferior endplate chords of C2 and C7 (sum of the segmental
  angles C2-C3..C6-C7); positive = lordosis.
* **Disc-to-CSF T2 signal ratio** (MRI): mean T2 signal of the disc's central third (nucleus region)
  divided by the mean signal of the CSF in the spinal canal behind the disc at the same level.
"""

from __future__ import annotations

#: Fractions of the AP extent (anterior edge = 0) at which anterior, middle and posterior heights are taken.
POSITIONS: dict[str, float] = {"anterior": 0.1, "middle": 0.5, "posterior": 0.9}

#: Units of each measurement, for tables, plots and the report.
UNITS: dict[str, str] = {
    "disc_height_anterior_mm": "mm",
    "disc_height_middle_mm": "mm",
    "disc_height_posterior_mm": "mm",
    "disc_height_index": "ratio",
    "disc_angle_deg": "deg",
    "segmental_angle_deg": "deg",
    "body_height_anterior_mm": "mm",
    "body_height_middle_mm": "mm",
    "body_height_posterior_mm": "mm",
    "body_depth_mm": "mm",
    "body_wedge_deg": "deg",
    "disc_csf_signal_ratio": "ratio",
    "cobb_c2c7_deg": "deg",
}

#: Direction of degeneration per measurement: -1 where degeneration lowers the value, +1 where it raises it.
#: Degeneration narrows the disc (Kellgren-Lawrence grade 3: 25-75% narrowing, grade 4: > 75%), which lowers
#: every disc height and the disc height index, and dehydrates the nucleus (Miyazaki grades III-V: intermediate
#: to hypointense T2 signal), which lowers the disc/CSF signal ratio. No measurement here rises with
#: degeneration (osteophytes, which do, are left out of the body depth by its definition). Angles and body
#: heights have no known direction (lordosis may rise or fall; body height is not a disc measurement): a
#: measurement absent from this table (or 0) has no "worst" level.
DEGENERATION_SIGN: dict[str, int] = {
    "disc_height_anterior_mm": -1,
    "disc_height_middle_mm": -1,
    "disc_height_posterior_mm": -1,
    "disc_height_index": -1,
    "disc_csf_signal_ratio": -1,
}

#: Words a clinician reads, per measurement (feature names in plots are translated with these).
DESCRIPTIONS: dict[str, str] = {
    "disc_height_anterior_mm": "anterior disc height",
    "disc_height_middle_mm": "disc height",
    "disc_height_posterior_mm": "posterior disc height",
    "disc_height_index": "disc height index",
    "disc_angle_deg": "disc angle",
    "segmental_angle_deg": "segmental angle",
    "body_height_anterior_mm": "anterior vertebral body height",
    "body_height_middle_mm": "middle vertebral body height",
    "body_height_posterior_mm": "posterior vertebral body height",
    "body_depth_mm": "vertebral body depth",
    "body_wedge_deg": "vertebral body wedge angle",
    "disc_csf_signal_ratio": "disc/CSF T2 signal ratio",
    "cobb_c2c7_deg": "C2-C7 Cobb angle",
}


def quadratic_profile(anterior: float, middle: float, posterior: float) -> tuple[float, float, float]:
    """Coefficients (a, b, c) of h(t) = a + b t + c t**2 through the three heights at :data:`POSITIONS`.

    The synthetic generator draws vertebral bodies from this profile (so their wedge angle is
    atan((h(0.1) - h(0.9)) / (0.8 D))); a disc's profile is whatever fills the space between its two
    bodies, solved so that its heights at :data:`POSITIONS` and its angle are the true ones.
    """
    import numpy as np

    ts = np.array([POSITIONS["anterior"], POSITIONS["middle"], POSITIONS["posterior"]])
    A = np.stack([np.ones(3), ts, ts**2], axis=1)
    a, b, c = np.linalg.solve(A, np.array([anterior, middle, posterior], dtype=float))
    return float(a), float(b), float(c)
