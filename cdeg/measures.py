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
* **Chord heights** (``*_chord_mm``, ``disc_height_index_chord``): the same heights taken between the two
  endplate *chords* instead of the endplate surfaces, which is all that the four corner points of each
  vertebral body show (lateral radiographs are measured that way in the clinic). Same frames, same ``t``.
  The endplates are concave, so a chord height is lower than the surface height for a disc and higher for a
  body; the two are different quantities and carry different names (:data:`CHORD_FEATURES`).
* **Disc-to-CSF T2 signal ratio** (MRI): mean T2 signal of the disc's central third (nucleus region)
  divided by the mean signal of the CSF in the spinal canal behind the disc at the same level.
"""

from __future__ import annotations

from typing import Any

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

#: The sign of disc degeneration each measurement of :data:`DEGENERATION_SIGN` reads: loss of disc height or
#: loss of nucleus T2 signal. The patient-level degeneration score counts each sign once, whatever the number
#: of measurements reading it (four heights, one signal ratio).
DEGENERATION_KIND: dict[str, str] = {
    "disc_height_anterior_mm": "height",
    "disc_height_middle_mm": "height",
    "disc_height_posterior_mm": "height",
    "disc_height_index": "height",
    "disc_csf_signal_ratio": "signal",
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


#: The heights, and their chord-to-chord counterparts (see the module docstring: "Chord heights").
HEIGHT_FEATURES: tuple[str, ...] = (
    "disc_height_anterior_mm",
    "disc_height_middle_mm",
    "disc_height_posterior_mm",
    "disc_height_index",
    "body_height_anterior_mm",
    "body_height_middle_mm",
    "body_height_posterior_mm",
)


def _chord_name(feature: str) -> str:
    return feature.removesuffix("_mm") + "_chord_mm" if feature.endswith("_mm") else feature + "_chord"


CHORD_FEATURES: dict[str, str] = {f: _chord_name(f) for f in HEIGHT_FEATURES}
UNITS.update({CHORD_FEATURES[f]: UNITS[f] for f in HEIGHT_FEATURES})
DEGENERATION_SIGN.update({CHORD_FEATURES[f]: s for f, s in DEGENERATION_SIGN.items() if f in CHORD_FEATURES})
DEGENERATION_KIND.update({CHORD_FEATURES[f]: k for f, k in DEGENERATION_KIND.items() if f in CHORD_FEATURES})
DESCRIPTIONS.update({CHORD_FEATURES[f]: DESCRIPTIONS[f] + " (between corners)" for f in HEIGHT_FEATURES})


def heights_between_chords(
    lower: tuple[Any, Any], upper: tuple[Any, Any], anterior: Any, posterior: Any
) -> dict[str, float]:
    """Chord heights of one piece at :data:`POSITIONS` (mm): "anterior", "middle", "posterior".

    Parameters
    ----------
    lower, upper : pair of points
        The piece's lower and upper endplate chords, each (anterior corner, posterior corner), as 2D points
        in mm in any right- or left-handed sagittal frame.
    anterior, posterior : point
        The ends of the piece's AP extent (a body: its inferior corners; a disc: the means of the two
        anterior and of the two posterior corners bounding it); projected onto the lower chord.

    The height at ``t`` is the distance from the lower chord to the line of the upper chord, perpendicular to
    the lower chord, at ``s = s_ant + t (s_post - s_ant)`` along it. Positive when the upper chord lies above.
    """
    import numpy as np

    p0, p1 = (np.asarray(p, float) for p in lower)
    q0, q1 = (np.asarray(p, float) for p in upper)
    a = (p1 - p0) / np.linalg.norm(p1 - p0)
    n = np.array([-a[1], a[0]])
    if ((q0 + q1) / 2 - (p0 + p1) / 2) @ n < 0:  # n points from the lower chord towards the upper one
        n = -n
    s_ant, s_post = (float((np.asarray(x, float) - p0) @ a) for x in (anterior, posterior))
    sq0, sq1 = float((q0 - p0) @ a), float((q1 - p0) @ a)
    vq0, vq1 = float((q0 - p0) @ n), float((q1 - p0) @ n)
    out = {}
    for k, t in POSITIONS.items():
        s = s_ant + t * (s_post - s_ant)
        out[k] = vq0 + (s - sq0) * (vq1 - vq0) / (sq1 - sq0) if abs(sq1 - sq0) > 1e-9 else float("nan")
    return out


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
