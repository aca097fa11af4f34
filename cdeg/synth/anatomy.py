"""Sagittal anatomy of the cervical spine built from one patient's truth rows.

The spine is built in a 2D *spine frame* (mm; X runs anterior -> posterior, Z inferior -> superior) as a
chain of pieces from T3 (bottom) up to C2, exactly under the definitions of :mod:`cdeg.measures`. Every
endplate has one chord, between the corners of its vertebral body, shared by the body and the disc it
bounds. Heights are measured perpendicular to a piece's lower chord, at fractions t of its AP extent
along that chord (t = 0 anterior, t = 1 posterior).

* **Body**: walls perpendicular to its inferior chord at the corners (AP extent = the true depth D); its
  height profile is the quadratic through the true heights at t = 0.1 / 0.5 / 0.9
  (:func:`cdeg.measures.quadratic_profile`), so the superior chord (through the upper surface at t = 0 and
  t = 1) is tilted by the true wedge angle atan((h(0) - h(1)) / D).
* **Disc** between body Y (below) and body X (above): its lower chord is Y's superior chord; X's inferior
  chord is that chord turned by the true disc angle, the two bodies centred on each other (their posterior
  walls step by half the difference of their depths). The disc's AP extent runs from the mean of the two
  anterior corners to the mean of the two posterior corners. X's inferior endplate is
  a curve through X's corners (sag + a small asymmetric term) placed and shaped so that the disc's heights
  at t = 0.1 / 0.5 / 0.9 are the true heights (:func:`_solve_disc`, a 3 x 3 system). Segmental and Cobb
  angles are then exact sums of disc and wedge angles: no chord turns at a junction.

The third dimension (left-right, x) enters as an LR extent per sagittal point: a structure covers
``inner <= |x - xc| < outer``. MRI slices test that condition at their LR position; the radiograph integrates
it (path length ``2 (outer - inner)``). Every structure is a :class:`Part` whose :meth:`Part.evaluate`
works on arrays of spine-frame points, so renderers only touch each part's bounding box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.measures import CHORD_FEATURES, heights_between_chords, quadratic_profile

# t samples of the surface polylines: beyond [0, 1] so a deeper neighbour can read the surface it rests on.
_TG = np.linspace(-0.6, 1.3, 96)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / float(np.hypot(v[0], v[1]))


def _normal(e: np.ndarray) -> np.ndarray:
    """Normal of a chord direction pointing superior (e = (1, 0) -> (0, 1))."""
    return np.array([-e[1], e[0]])


@dataclass
class Piece:
    """One vertebral body or disc of the chain, in the spine frame.

    Parameters
    ----------
    name, label, kind
        Level name, label (0 for unlabelled anatomy such as T2) and "vertebra"/"disc".
    pant : ndarray
        Anterior corner of the lower chord.
    e : ndarray
        Unit vector along the lower chord, anterior -> posterior.
    depth : float
        AP extent D (mm).
    coef : tuple
        Height profile h(t) = a + b t + c t**2 (mm), perpendicular to the lower chord.
    s_lower : ndarray
        Lower surface as offsets along the normal at ``_TG`` (0 at the corners).
    width : float
        Left-right width (mm).
    """

    name: str
    label: int
    kind: str
    pant: np.ndarray
    e: np.ndarray
    depth: float
    coef: tuple[float, float, float]
    s_lower: np.ndarray
    width: float
    row: dict[str, Any] = field(default_factory=dict)
    h_tab: np.ndarray | None = None

    @property
    def n(self) -> np.ndarray:
        return _normal(self.e)

    def h(self, t: np.ndarray | float) -> np.ndarray:
        """Height at t; constant beyond the ends so extrapolated surfaces stay sane.

        Bodies use the quadratic ``coef``; discs the solved profile ``h_tab`` (samples at ``_TG``).
        """
        tc = np.clip(t, 0.0, 1.0)
        if self.h_tab is not None:
            return np.interp(tc, _TG, self.h_tab)
        a, b, c = self.coef
        return a + b * tc + c * tc * tc

    def point(self, t: float, v: float) -> np.ndarray:
        """Spine-frame point at fraction t and height v above the chord line."""
        return self.pant + t * self.depth * self.e + v * self.n

    def lower(self, t: float) -> np.ndarray:
        return self.point(t, float(np.interp(t, _TG, self.s_lower)))

    def upper(self, t: float) -> np.ndarray:
        return self.point(t, float(np.interp(t, _TG, self.s_lower) + self.h(t)))

    def upper_polyline(self) -> np.ndarray:
        off = self.s_lower + self.h(_TG)
        return self.pant[None, :] + np.outer(_TG * self.depth, self.e) + np.outer(off, self.n)

    def local(self, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, v, h): fraction along the chord, height above the lower surface, local height."""
        dx, dz = X - self.pant[0], Z - self.pant[1]
        e, n = self.e, self.n
        t = (dx * e[0] + dz * e[1]) / self.depth
        v = dx * n[0] + dz * n[1] - np.interp(t, _TG, self.s_lower)
        return t, v, self.h(t)

    def chord_angle(self, upper: bool) -> float:
        """Angle (rad) of the lower or upper chord in the spine frame."""
        if upper:
            d = self.upper(1.0) - self.upper(0.0)
        else:
            d = self.e
        return math.atan2(d[1], d[0])

    def rotate(self, R: np.ndarray, about: np.ndarray) -> None:
        self.pant = about + R @ (self.pant - about)
        self.e = R @ self.e


def _endplate(tau: np.ndarray, k: float, j: float) -> np.ndarray:
    """Inferior endplate offset into the body above its chord: sag k, asymmetry j, 0 at and beyond the corners."""
    tc = np.clip(tau, 0.0, 1.0)
    b = 4.0 * tc * (1.0 - tc)
    return k * b + j * b * (2.0 * tc - 1.0)


def _solve_disc(
    below: Piece,
    heights: tuple[float, float, float],
    angle_deg: float,
    depth_above: float,
    sag: float | None = None,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Place the body above a disc so that the disc has its true heights and angle.

    With `sag` given (unlabelled discs: no true heights), the endplate above gets that sag and no asymmetry
    and only the middle height is matched: an unlabelled disc then hands the labelled spine an endplate of
    the intended shape, instead of passing on the mismatch of made-up heights.

    Returns the disc's anterior corner, AP extent, lower-surface and height samples at ``_TG`` (disc frame
    = the superior chord of `below`), and the inferior chord of the body above: anterior corner, direction,
    plus its endplate offsets at ``_TG``.
    """
    A, P = below.upper(0.0), below.upper(1.0)
    e = _unit(P - A)
    n = _normal(e)
    L = float(np.hypot(*(P - A)))
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    e_x = c * e - s * n  # lordotic (positive) angle: the chord above rises anteriorly
    Dx = float(depth_above)
    # The two bodies are centred on each other (along e): their endplates' concavities then sit
    # symmetrically in the disc and the endplate above needs next to no asymmetric term. The disc's AP
    # extent runs from the mean of the anterior to the mean of the posterior corners.
    sig = 0.5 * (Dx * c - L)  # posterior corner above, along e from the one below
    s_ant = 0.5 * (-L + sig - Dx * c)
    D = 0.5 * (L + Dx * c)
    pant = P + s_ant * e
    pts = below.upper_polyline()
    al = ((pts - pant) @ e) / D
    s_low = np.interp(_TG, al, (pts - pant) @ n)

    def upper_at(t: np.ndarray, k: float, j: float) -> tuple[np.ndarray, np.ndarray]:
        """(tau on the chord above, offset of the surface above minus u0) at disc fractions t."""
        sp = s_ant + t * D - (sig - Dx * c)  # along e, from the anterior corner above
        tau = sp / (Dx * c)
        for _ in range(4):
            tau = (sp - _endplate(tau, k, j) * s) / (Dx * c)
        return tau, Dx * s * (1.0 - tau) + c * _endplate(tau, k, j)

    ts = np.array([0.1, 0.5, 0.9])
    target = np.asarray(heights, float) + np.interp(ts, _TG, s_low)
    u0, k, j = float(heights[2]), (0.0 if sag is None else float(sag)), 0.0
    for _ in range(5):
        # tau depends on the endplate only through its small AP component: linear solve, then refresh tau
        tau, off = upper_at(ts, k, j)
        if sag is not None:
            u0 = float(target[1] - off[1])
            continue
        tc = np.clip(tau, 0.0, 1.0)
        b = 4.0 * tc * (1.0 - tc)
        lin = Dx * s * (1.0 - tau)
        M = np.stack([np.ones(3), c * b, c * b * (2.0 * tc - 1.0)], axis=1)
        u0, k, j = (float(x) for x in np.linalg.solve(M, target - lin))
    _, off = upper_at(_TG, k, j)
    h_tab = u0 + off - s_low
    ant_x = P + sig * e + u0 * n - Dx * e_x
    return pant, D, s_low, h_tab, ant_x, (e_x, _endplate(_TG, k, j))


def _concavity(heights: Any) -> float:
    """Middle height minus the mean of the anterior and posterior heights (mm)."""
    a, m, p = (float(x) for x in heights)
    return m - 0.5 * (a + p)


def _intended_sag(specs: list[dict[str, Any]], i: int) -> float:
    """Sag (at the chord's middle) of the inferior endplate of body ``specs[i]`` as its heights imply.

    Each endplate of a body is concave by half the concavity of the disc it borders: the body's own
    concavity is the sum of its two endplates', the superior one is half the disc above's. A parabola
    through the corners with sag k is 0.64 k deeper at t = 0.5 than at t = 0.1 / 0.9.
    """
    above = specs[i + 1] if i + 1 < len(specs) and specs[i + 1]["kind"] == "disc" else None
    upper = 0.5 * _concavity(above["heights"]) if above is not None else 0.0
    lower = -_concavity(specs[i]["heights"]) - upper
    return max(lower, 0.0) / 0.64


def build_chain(pieces_spec: list[dict[str, Any]], bottom_concavity: float = 0.6) -> list[Piece]:
    """Stack pieces bottom-up: bodies on their discs, each disc solved against its true heights and angle.

    Parameters
    ----------
    pieces_spec : list of dict
        Bottom-up, alternating body / disc, starting and ending with a body; each with name, label, kind,
        depth, heights (anterior, middle, posterior), width, row; discs may give ``angle_deg`` (default:
        atan((anterior - posterior) / (0.8 depth)), the relation of :mod:`cdeg.measures`).
    bottom_concavity : float
        Depth (mm) of the concave lower endplate of the lowest piece.
    """
    out: list[Piece] = []
    placed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # next body's corner, chord, endplate
    for i, spec in enumerate(pieces_spec):
        coef = quadratic_profile(*spec["heights"])
        D = float(spec["depth"])
        h_tab = None
        if not out:
            e = np.array([1.0, 0.0])
            pant = np.array([-D, 0.0])
            s = bottom_concavity * 4 * np.clip(_TG, 0, 1) * (1 - np.clip(_TG, 0, 1))
        elif spec["kind"] == "disc" and i + 1 < len(pieces_spec):
            ha, _hm, hp = (float(x) for x in spec["heights"])
            ang = spec.get("angle_deg")
            if ang is None or not np.isfinite(ang):
                ang = math.degrees(math.atan((ha - hp) / (0.8 * D)))
            pant, D, s, h_tab, ant_x, chord = _solve_disc(
                out[-1],
                tuple(spec["heights"]),
                float(ang),
                float(pieces_spec[i + 1]["depth"]),
                None if spec["label"] else _intended_sag(pieces_spec, i + 1),
            )
            e = _unit(out[-1].upper(1.0) - out[-1].upper(0.0))
            placed = (ant_x, chord[0], chord[1])
        elif placed is not None:
            pant, e, s = placed
            placed = None
        else:  # a body on a body (not built by cdeg): rest on the previous upper surface
            prev = out[-1]
            pts = prev.upper_polyline()
            ant, post = prev.upper(0.0), prev.upper(1.0)
            e = _unit(post - ant)
            pant = post - D * e
            n = _normal(e)
            s = np.interp(_TG, ((pts - pant) @ e) / D, (pts - pant) @ n)
        out.append(
            Piece(
                spec["name"],
                int(spec["label"]),
                spec["kind"],
                np.asarray(pant, float),
                np.asarray(e, float),
                D,
                coef,
                np.asarray(s, float),
                float(spec["width"]),
                dict(spec.get("row", {})),
                h_tab,
            )
        )
    return out


# --- parts -------------------------------------------------------------------------------------


@dataclass
class Evaluated:
    """A part evaluated on a set of points: where it is and its LR extent there, plus shape data."""

    inside: np.ndarray
    inner: np.ndarray | float
    outer: np.ndarray | float
    aux: dict[str, np.ndarray] = field(default_factory=dict)


class Part:
    """A structure: label, tissue name, spine-frame bounds and an LR extent, evaluated on point arrays.

    Parameters
    ----------
    name : str
        Descriptive name ("C5 body", "C5-C6 disc", ...).
    label : int
        Mask label (0 = unlabelled anatomy).
    tissue : str
        Tissue class the renderers know (see render_mri / render_xray).
    xc : float
        LR centre of the structure (mm, patient left positive).
    """

    def __init__(
        self,
        name: str,
        label: int,
        tissue: str,
        bounds: tuple[float, float, float, float],
        xc: float = 0.0,
        **info: Any,
    ):
        self.name, self.label, self.tissue = name, int(label), tissue
        self.bounds = bounds  # Xmin, Xmax, Zmin, Zmax
        self.xc = float(xc)
        self.info = info

    @property
    def max_outer(self) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def min_inner(self) -> float:
        return 0.0

    def evaluate(self, X: np.ndarray, Z: np.ndarray) -> Evaluated:  # pragma: no cover - overridden
        raise NotImplementedError


class PiecePart(Part):
    """Vertebral body or disc: the region between a piece's lower and upper surfaces, 0 <= t <= 1.

    LR extent: a superellipse in (AP, LR) of the piece's depth and width, so the mid-sagittal plane sees
    the full AP extent and lateral slices a shorter one.
    """

    def __init__(self, piece: Piece, tissue: str, rounding: float, label: int | None = None, **info: Any):
        pts = np.array(
            [
                piece.lower(0),
                piece.lower(1),
                piece.upper(0),
                piece.upper(1),
                piece.lower(0.5),
                piece.upper(0.5),
            ]
        )
        b = (pts[:, 0].min() - 1, pts[:, 0].max() + 1, pts[:, 1].min() - 1.5, pts[:, 1].max() + 1.5)
        super().__init__(piece.name, piece.label if label is None else label, tissue, b, **info)
        self.piece = piece
        self.rounding = rounding

    @property
    def max_outer(self) -> float:
        return self.piece.width / 2

    def evaluate(self, X: np.ndarray, Z: np.ndarray) -> Evaluated:
        p = self.piece
        t, v, h = p.local(X, Z)
        da = np.minimum(t, 1 - t) * p.depth
        dv = np.minimum(v, h - v)
        inside = (da >= 0) & (dv >= 0)
        r = self.rounding
        if r > 0:
            qa = np.maximum(r - da, 0)
            qv = np.maximum(r - dv, 0)
            inside &= qa * qa + qv * qv <= r * r
        rr = np.abs(2 * t - 1).clip(0, 1)
        outer = np.where(inside, p.width / 2 * np.cbrt(1 - rr**3), 0.0)
        return Evaluated(inside, 0.0, outer, {"t": t, "v": v, "h": h, "dist": np.minimum(da, dv)})


class ShapePart(Part):
    """A convex polygon, an ellipse or a tapered capsule in the spine frame, with a constant LR band.

    Parameters
    ----------
    shape : {"poly", "ellipse", "capsule"}
        poly: ``vertices`` (N x 2, counter-clockwise); ellipse: ``center``, ``radii``, ``angle`` (rad);
        capsule: ``p0``, ``p1``, ``r0``, ``r1`` (radius tapering from p0 to p1).
    inner, outer : float
        LR band ``inner <= |x - xc| < outer``.
    """

    def __init__(
        self,
        name: str,
        label: int,
        tissue: str,
        shape: str,
        inner: float,
        outer: float,
        xc: float = 0.0,
        **geom: Any,
    ):
        self.shape, self.geom = (
            shape,
            {
                k: np.asarray(v, float) if k in ("vertices", "center", "radii", "p0", "p1") else v
                for k, v in geom.items()
            },
        )
        g = self.geom
        if shape == "poly":
            V = g["vertices"]
            b = (V[:, 0].min(), V[:, 0].max(), V[:, 1].min(), V[:, 1].max())
        elif shape == "ellipse":
            rmax = float(np.max(g["radii"]))
            c = g["center"]
            b = (c[0] - rmax, c[0] + rmax, c[1] - rmax, c[1] + rmax)
        elif shape == "capsule":
            r = max(g["r0"], g["r1"])
            P = np.array([g["p0"], g["p1"]])
            b = (P[:, 0].min() - r, P[:, 0].max() + r, P[:, 1].min() - r, P[:, 1].max() + r)
        else:  # pragma: no cover - programming error
            raise ValueError(shape)
        super().__init__(name, label, tissue, b, xc)
        self._inner, self._outer = float(inner), float(outer)

    @property
    def max_outer(self) -> float:
        return self._outer

    @property
    def min_inner(self) -> float:
        return self._inner

    def evaluate(self, X: np.ndarray, Z: np.ndarray) -> Evaluated:
        g = self.geom
        if self.shape == "poly":
            V = g["vertices"]
            dist = np.full(X.shape, np.inf)
            for i in range(len(V)):
                a, b = V[i], V[(i + 1) % len(V)]
                d = _unit(b - a)
                # inward normal of a counter-clockwise polygon edge
                dist = np.minimum(dist, (X - a[0]) * -d[1] + (Z - a[1]) * d[0])
        elif self.shape == "ellipse":
            c, (ra, rb), ang = g["center"], g["radii"], float(g.get("angle", 0.0))
            dx, dz = X - c[0], Z - c[1]
            ca, sa = math.cos(ang), math.sin(ang)
            u, w = (dx * ca + dz * sa) / ra, (-dx * sa + dz * ca) / rb
            dist = (1 - np.sqrt(u * u + w * w)) * min(ra, rb)
        else:
            p0, p1 = g["p0"], g["p1"]
            L = float(np.hypot(*(p1 - p0)))
            d = (p1 - p0) / L
            s = ((X - p0[0]) * d[0] + (Z - p0[1]) * d[1]).clip(0, L)
            qx, qz = p0[0] + s * d[0], p0[1] + s * d[1]
            r = g["r0"] + (g["r1"] - g["r0"]) * s / L
            dist = r - np.hypot(X - qx, Z - qz)
        inside = dist >= 0
        return Evaluated(inside, self._inner, np.where(inside, self._outer, 0.0), {"dist": dist})


class TubePart(Part):
    """A band along the spine: ``d0(Z) <= X - Xref(Z) <= d1(Z)`` for Zmin <= Z <= Zmax (canal, airway...).

    Curves are given as samples (zs increasing); values beyond the ends are held constant.
    """

    def __init__(
        self,
        name: str,
        label: int,
        tissue: str,
        zs: np.ndarray,
        xref: np.ndarray,
        d0: np.ndarray,
        d1: np.ndarray,
        outer: float,
        zlim: tuple[float, float],
        inner: float = 0.0,
        xc: float = 0.0,
    ):
        x0, x1 = xref + d0, xref + d1
        super().__init__(name, label, tissue, (float(x0.min()), float(x1.max()), zlim[0], zlim[1]), xc)
        self.zs, self.xref, self.d0, self.d1 = zs, xref, d0, d1
        self._outer, self._inner = float(outer), float(inner)

    @property
    def max_outer(self) -> float:
        return self._outer

    @property
    def min_inner(self) -> float:
        return self._inner

    def evaluate(self, X: np.ndarray, Z: np.ndarray) -> Evaluated:
        d = X - np.interp(Z, self.zs, self.xref)
        lo, hi = np.interp(Z, self.zs, self.d0), np.interp(Z, self.zs, self.d1)
        inside = (d >= lo) & (d <= hi) & (Z >= self.bounds[2]) & (Z <= self.bounds[3])
        rel = (d - lo) / np.maximum(hi - lo, 1e-6)
        return Evaluated(
            inside,
            self._inner,
            np.where(inside, self._outer, 0.0),
            {"dist": np.minimum(d - lo, hi - d), "rel": rel},
        )


# Canal AP diameter relative to the patient's value, per level (C2 and the upper canal are wider).
_CANAL_FACTOR = {"C2": 1.15, "C3": 1.0, "C4": 0.98, "C5": 0.97, "C6": 0.98, "C7": 1.0}

# --- the whole spine ---------------------------------------------------------------------------


@dataclass
class Spine:
    """A patient's sagittal anatomy: pieces, parts in painting order and reference curves.

    Attributes
    ----------
    pieces : list of Piece
        Bottom-up chain (T3 .. C2).
    parts : list of Part
        Painting order: soft tissues, canal, disc bulges, bones, osteophytes, discs; later parts win.
    curves : dict
        Samples along Z (increasing) of the posterior wall ("zs", "xpw"), anterior wall ("xaw"), canal depth.
    landmarks : dict
        Points the renderers use (dens tip, top and bottom of the labelled spine, C7 level...).
    """

    pieces: list[Piece]
    parts: list[Part]
    curves: dict[str, np.ndarray]
    landmarks: dict[str, Any]


def chord_heights(spine: Spine) -> dict[str, dict[str, float]]:
    """True chord heights of each labelled body and disc, by the definition of :mod:`cdeg.measures`.

    The heights between the endplate chords that the four corners of each body define (what a radiograph
    annotated by corner points measures), named as :data:`cdeg.measures.CHORD_FEATURES`; C2 has no superior
    endplate of its own and gets none, as in :func:`cdeg.features.measurements.measure`.
    """
    out: dict[str, dict[str, float]] = {}
    chain = spine.pieces  # bottom-up: body, disc, body, ...
    for i, p in enumerate(chain):
        if not p.label or p.name == labels.VERTEBRA_NAMES[0]:
            continue
        if p.kind == "vertebra":
            lower, upper = (p.lower(0.0), p.lower(1.0)), (p.upper(0.0), p.upper(1.0))
            hs = heights_between_chords(lower, upper, *lower)
            out[p.name] = {CHORD_FEATURES[f"body_height_{k}_mm"]: v for k, v in hs.items()}
        elif 0 < i < len(chain) - 1:
            below, above = chain[i - 1], chain[i + 1]
            lower, upper = (below.upper(0.0), below.upper(1.0)), (above.lower(0.0), above.lower(1.0))
            hs = heights_between_chords(lower, upper, (lower[0] + upper[0]) / 2, (lower[1] + upper[1]) / 2)
            vals = {CHORD_FEATURES[f"disc_height_{k}_mm"]: v for k, v in hs.items()}
            vals[CHORD_FEATURES["disc_height_index"]] = hs["middle"] / above.depth
            out[p.name] = vals
    return out


def _finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _level_rows(levels: Any) -> dict[str, dict[str, Any]]:
    rows = {}
    for rec in levels.to_dict("records"):
        rows[str(rec["level"])] = rec
    return rows


def build_spine(patient: Mapping[str, Any], levels: Any, acfg: Any, rng: np.random.Generator) -> Spine:
    """Build the anatomy of one patient (see module docstring for the geometry).

    Parameters
    ----------
    patient : mapping
        One row of truth/patients.csv.
    levels : DataFrame
        The patient's rows of truth/levels.csv (one per structure of :data:`cdeg.labels.STRUCTURES`).
    acfg : AnatomyConfig
        Anatomy options of :class:`cdeg.synth.render.RenderConfig`.
    rng : Generator
        Patient-level random details (process angles, bulge side...).
    """
    rows = _level_rows(levels)
    scale = float(patient.get("size_scale", 1.0) or 1.0)
    spec = _thoracic_specs(rows, acfg, scale) + _labelled_specs(rows)
    pieces = build_chain(spec, acfg.bottom_concavity_mm)
    by = {p.name: p for p in pieces}
    _stand_upright(pieces, by)
    return _assemble(patient, pieces, by, acfg, rng, scale)


def _thoracic_specs(rows: dict[str, dict[str, Any]], acfg: Any, scale: float) -> list[dict[str, Any]]:
    """Chain specs of the unlabelled T3, T2 and their discs, scaled from T1 (bottom-up).

    They keep the image realistic below T1: a model must learn not to label them.
    """
    t1 = rows[labels.VERTEBRA_NAMES[-1]]
    spec: list[dict[str, Any]] = []
    for nm, grow in (("T3", 1.06), ("T2", 1.03)):
        spec.append(
            {
                "name": nm,
                "label": 0,
                "kind": "vertebra",
                "depth": t1["body_depth_mm"] * grow,
                "heights": [t1[f"body_height_{p}_mm"] * grow for p in ("anterior", "middle", "posterior")],
                "width": t1["body_width_mm"] * grow,
                "row": {},
            }
        )
        dh = acfg.thoracic_disc_mm * scale
        spec.append(
            {
                "name": f"{nm}-disc",
                "label": 0,
                "kind": "disc",
                "depth": t1["body_depth_mm"] * (grow - 0.015),
                "heights": [dh * 0.85, dh * 1.2, dh * 0.8],
                "width": t1["body_width_mm"] * grow,
                "row": {},
            }
        )
    return spec


def _labelled_specs(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain specs of the labelled structures T1 .. C2 from their truth rows (bottom-up)."""
    spec: list[dict[str, Any]] = []
    for s in reversed(labels.STRUCTURES):
        r = rows.get(s.name)
        if r is None:
            raise KeyError(f"levels table lacks structure {s.name}")
        if s.kind == "vertebra":
            spec.append(
                {
                    "name": s.name,
                    "label": s.label,
                    "kind": "vertebra",
                    "depth": r["body_depth_mm"],
                    "heights": [r[f"body_height_{p}_mm"] for p in ("anterior", "middle", "posterior")],
                    "width": r["body_width_mm"],
                    "row": r,
                }
            )
            continue
        up, lo = labels.vertebrae_of_disc(s.label)
        ru, rl = rows[labels.name_of(up)], rows[labels.name_of(lo)]
        spec.append(
            {
                "name": s.name,
                "label": s.label,
                "kind": "disc",
                "depth": 0.5 * (ru["body_depth_mm"] + rl["body_depth_mm"]),
                "heights": [r[f"disc_height_{p}_mm"] for p in ("anterior", "middle", "posterior")],
                "angle_deg": _finite_or_none(r.get("disc_angle_deg")),
                "width": 0.5 * (ru["body_width_mm"] + rl["body_width_mm"]),
                "row": r,
            }
        )
    return spec


def _stand_upright(pieces: list[Piece], by: dict[str, Piece]) -> None:
    """Rotate the chain about the T1 body centre so that the axis T1 centre -> C2 centre is vertical.

    The T1 body centre becomes the origin of the spine frame.
    """

    def centre(p: Piece) -> np.ndarray:
        return 0.25 * (p.lower(0) + p.lower(1) + p.upper(0) + p.upper(1))

    c_t1, c_c2 = centre(by[labels.VERTEBRA_NAMES[-1]]), centre(by[labels.VERTEBRA_NAMES[0]])
    ax = c_c2 - c_t1
    ang = math.pi / 2 - math.atan2(ax[1], ax[0])
    R = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    for p in pieces:
        p.rotate(R, c_t1)
        p.pant = p.pant - c_t1


@dataclass(frozen=True)
class _C2Frame:
    """C2's upper endplate frame and its dens, which the dens, C1 and the skull base are placed in."""

    top_post: np.ndarray  # posterior corner of the C2 upper endplate
    e: np.ndarray  # unit vector along the C2 upper chord, anterior -> posterior
    n: np.ndarray  # its superior normal
    dens_h: float  # dens height (mm)
    r_dens: float  # dens radius at its base (mm)
    base: np.ndarray  # dens axis: start inside the body
    tip: np.ndarray  # dens tip
    p1: np.ndarray  # end of the dens capsule's axis (its radius short of the tip)


def _assemble(
    patient: Mapping[str, Any],
    pieces: list[Piece],
    by: dict[str, Piece],
    acfg: Any,
    rng: np.random.Generator,
    scale: float,
) -> Spine:
    """Place every structure around the upright chain of pieces, in painting order.

    The steps draw from `rng` in a fixed order (vertebrae bottom-up, osteophytes, discs) that the
    generated images depend on.
    """
    c2 = by[labels.VERTEBRA_NAMES[0]]
    zs, xpw, xaw = _wall_curves(pieces)
    dens = _c2_frame(c2, acfg, scale)
    z_top = float(dens.tip[1])
    canal = float(patient.get("canal_ap_mm", 14.0) or 14.0)
    cz, canal_d = _canal_depth(pieces, by, canal, zs, z_top)
    curves = {"zs": zs, "xpw": xpw, "xaw": xaw, "canal": canal_d}

    parts_soft = _anterior_soft_tissues(curves, by, z_top, acfg, scale)
    parts_soft += _canal_contents(curves, z_top, cz, acfg, scale)
    parts_soft += _vertebral_arteries(curves, z_top, scale)
    joints = _facet_joints(pieces, acfg, scale)
    parts_bone: list[Part] = []
    for vn in [p.name for p in pieces if p.kind == "vertebra"]:  # bottom-up, incl. T3, T2
        parts_bone += _vertebra(pieces, by[vn], joints, dens, curves, acfg, rng, scale)
    parts_bone.append(_dens(c2, dens, acfg, scale))
    parts_bone += _atlas(c2, dens, canal, scale)
    parts_bone += _skull_base(dens, canal)
    parts_ost = _osteophytes(pieces, acfg, rng)
    parts_disc, parts_bulge = _discs_and_bulges(pieces, acfg, rng)

    # paint: soft tissue, bulges (over the CSF in front of the cord, but under the bone: a bulge reaches
    # above and below the disc and must not take the vertebral bodies' posterior corners), bones,
    # osteophytes, then discs (disc labels win at contact lines so disc heights are exact)
    parts = parts_soft + parts_bulge + parts_bone + parts_ost + parts_disc
    neck_depth = float(patient.get("neck_depth_mm", 120.0) or 120.0)
    return Spine(pieces, parts, curves, _landmarks(by, dens, neck_depth))


def _wall_curves(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference curves along Z: (zs, posterior wall X, anterior wall X) through the corners.

    The ends are extended 200 mm flat so that structures above and below the chain can read them.
    """
    pw, aw = [], []
    for p in pieces:
        for t_, lst in ((1.0, pw), (0.0, aw)):
            lst.append(p.lower(t_))
            lst.append(p.upper(t_))
    pw_a, aw_a = np.array(pw), np.array(aw)
    o = np.argsort(pw_a[:, 1])
    zs = pw_a[o, 1]
    xpw = pw_a[o, 0]
    xaw = np.interp(zs, *aw_a[np.argsort(aw_a[:, 1])][:, ::-1].T)
    zs = np.concatenate([[zs[0] - 200], zs, [zs[-1] + 200]])
    xpw = np.concatenate([[xpw[0]], xpw, [xpw[-1]]])
    xaw = np.concatenate([[xaw[0]], xaw, [xaw[-1]]])
    return zs, xpw, xaw


def _c2_frame(c2: Piece, acfg: Any, scale: float) -> _C2Frame:
    """The C2 upper endplate frame and the dens rising from the endplate's middle, tilted posteriorly."""
    dens_h = float(c2.row.get("dens_height_mm", 14.0) or 14.0)
    c2_top_mid = c2.upper(0.55)
    e_c2 = _unit(c2.upper(1.0) - c2.upper(0.0))
    n_c2u = _normal(e_c2)
    tilt = math.radians(acfg.dens_tilt_deg)
    dens_dir = _unit(math.cos(tilt) * n_c2u + math.sin(tilt) * e_c2)
    r_dens = acfg.dens_radius_mm * scale
    dens_tip = c2_top_mid + dens_h * dens_dir
    return _C2Frame(
        top_post=c2.upper(1.0),
        e=e_c2,
        n=n_c2u,
        dens_h=dens_h,
        r_dens=r_dens,
        base=c2_top_mid - 2.5 * n_c2u,
        tip=dens_tip,
        p1=dens_tip - r_dens * 0.8 * dens_dir,
    )


def _canal_depth(
    pieces: list[Piece], by: dict[str, Piece], canal: float, zs: np.ndarray, z_top: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canal AP depth behind the posterior wall: (Z of each vertebra's mid-wall and C1, depth at `zs`).

    `canal` is the patient's diameter; it varies by level (:data:`_CANAL_FACTOR`) and widens at C1.
    """
    cz, cd = [], []
    for vn in [p.name for p in pieces if p.kind == "vertebra"]:
        p = by[vn]
        fac = _CANAL_FACTOR.get(vn, 1.0)
        cz.append(0.5 * (p.lower(1.0)[1] + p.upper(1.0)[1]))
        cd.append(canal * fac)
    cz.append(z_top + 8)
    cd.append(canal * 1.45)  # C1 / foramen magnum: wider
    cz_a, cd_a = np.array(cz), np.array(cd)
    return cz_a, np.interp(zs, cz_a, cd_a)


def _soft_z_range(zs: np.ndarray, z_top: float) -> tuple[float, float]:
    """Z range of the soft-tissue bands: 60 mm beyond the chain's bottom and the dens tip."""
    return float(zs[1]) - 60, z_top + 60


def _anterior_soft_tissues(
    curves: dict[str, np.ndarray], by: dict[str, Piece], z_top: float, acfg: Any, scale: float
) -> list[Part]:
    """Prevertebral soft tissue (thicker below C4), the air column in front of it and the ALL."""
    zs, xaw = curves["zs"], curves["xaw"]
    zlo, zhi = _soft_z_range(zs, z_top)
    z_c4 = 0.5 * (by["C4"].lower(0)[1] + by["C4"].upper(0)[1])
    pv = np.where(zs > z_c4, acfg.prevertebral_upper_mm, acfg.prevertebral_lower_mm)
    pv = np.convolve(np.pad(pv, 3, mode="edge"), np.ones(7) / 7, mode="valid")
    airway = acfg.airway_ap_mm * scale
    return [
        TubePart("prevertebral", 0, "prevertebral", zs, xaw, -pv, np.full_like(zs, -0.8), 22.0, (zlo, zhi)),
        TubePart("airway", 0, "air", zs, xaw, -pv - airway, -pv, acfg.airway_halfwidth_mm, (zlo, z_top + 25)),
        TubePart("ALL", 0, "ligament", zs, xaw, np.full_like(zs, -0.9), np.zeros_like(zs), 9.0, (zlo, zhi)),
    ]


def _canal_contents(
    curves: dict[str, np.ndarray], z_top: float, cz: np.ndarray, acfg: Any, scale: float
) -> list[Part]:
    """What fills the canal behind the posterior wall: epidural space, ligaments, CSF and the cord.

    The cord is thicker near the brainstem (above the dens tip) and thinner below C7 (`cz[2]`).
    """
    zs, xpw, canal_d = curves["zs"], curves["xpw"], curves["canal"]
    zlo, zhi = _soft_z_range(zs, z_top)
    cord_c = 1.0 + 0.46 * (canal_d - 3.2)
    cord_t = np.where(zs > z_top - 5, acfg.cord_ap_mm * 1.3, acfg.cord_ap_mm) * np.where(zs < cz[2], 0.9, 1.0)
    return [
        TubePart("epidural", 0, "epidural", zs, xpw, np.zeros_like(zs), canal_d, 13.0, (zlo, zhi)),
        TubePart("flavum", 0, "ligament", zs, xpw, canal_d - 2.2, canal_d, 12.0, (zlo, zhi)),
        TubePart("PLL", 0, "ligament", zs, xpw, np.zeros_like(zs), np.full_like(zs, 1.0), 7.0, (zlo, zhi)),
        TubePart(
            "CSF",
            0,
            "csf",
            zs,
            xpw,
            np.full_like(zs, 1.0),
            canal_d - 2.2,
            acfg.thecal_halfwidth_mm * scale,
            (zlo, zhi + 40),
        ),
        TubePart(
            "cord",
            0,
            "cord",
            zs,
            xpw,
            cord_c - cord_t / 2,
            cord_c + cord_t / 2,
            acfg.cord_halfwidth_mm * scale,
            (zlo, zhi + 40),
        ),
    ]


def _vertebral_arteries(curves: dict[str, np.ndarray], z_top: float, scale: float) -> list[Part]:
    """The two vertebral arteries: flow voids lateral to the bodies, up to the dens tip."""
    zs = curves["zs"]
    zlo, _ = _soft_z_range(zs, z_top)
    return [
        TubePart(
            "vertebral artery",
            0,
            "vessel",
            zs,
            curves["xaw"],
            np.full_like(zs, 4.0),
            np.full_like(zs, 8.5),
            2.4,
            (zlo, z_top),
            xc=side * 16.5 * scale,
        )
        for side in (-1, 1)
    ]


def _facet_joints(pieces: list[Piece], acfg: Any, scale: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Facet joint lines, one per disc: a point behind the disc and the upward normal of the line.

    The line runs through the front of the articular pillars and slopes down posteriorly by the facet
    angle.
    """
    joints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    phi = math.radians(acfg.facet_angle_deg)
    for p in pieces:
        if p.kind != "disc":
            continue
        ed = _unit(p.upper(1.0) - p.upper(0.0) + p.e)
        nd = _normal(ed)
        mid_post = 0.5 * (p.lower(1.0) + p.upper(1.0))
        J = mid_post + ed * (acfg.pillar_start_mm * scale) + nd * 1.0
        dirv = _unit(math.cos(phi) * ed - math.sin(phi) * nd)
        joints[p.name] = (J, _normal(dirv))
    return joints


def _neighbours(pieces: list[Piece], p: Piece) -> tuple[Piece | None, Piece | None]:
    """The pieces just above and just below `p` in the chain (None at its ends)."""
    i = pieces.index(p)
    above = pieces[i + 1] if i + 1 < len(pieces) else None
    below = pieces[i - 1] if i > 0 else None
    return above, below


@dataclass(frozen=True)
class _ArchFrame:
    """Frame of a vertebra's posterior elements: origin at the posterior wall's mid-height.

    ``e`` runs posterior along the mean of the body's two chords, ``n`` superior; ``H`` is the posterior
    wall height, ``canal`` the canal depth there and ``sc`` the size scale of the elements.
    """

    o: np.ndarray
    e: np.ndarray
    n: np.ndarray
    H: float
    canal: float
    sc: float

    def at(self, a: float, b: float) -> np.ndarray:
        """The point `a` mm posterior and `b` mm superior of the origin."""
        return self.o + a * self.e + b * self.n


def _arch_frame(p: Piece, curves: dict[str, np.ndarray], scale: float) -> _ArchFrame:
    """The posterior-element frame of vertebra `p` (thoracic elements are 8% larger)."""
    e_m = _unit(p.e + _unit(p.upper(1.0) - p.upper(0.0)))
    o_pt = 0.5 * (p.lower(1.0) + p.upper(1.0))
    return _ArchFrame(
        o=o_pt,
        e=e_m,
        n=_normal(e_m),
        H=float(np.hypot(*(p.upper(1.0) - p.lower(1.0)))),
        canal=float(np.interp(o_pt[1], curves["zs"], curves["canal"])),
        sc=scale * (1.08 if p.name in ("T1", "T2", "T3") else 1.0),
    )


def _vertebra(
    pieces: list[Piece],
    p: Piece,
    joints: dict[str, tuple[np.ndarray, np.ndarray]],
    dens: _C2Frame,
    curves: dict[str, np.ndarray],
    acfg: Any,
    rng: np.random.Generator,
    scale: float,
) -> list[Part]:
    """One vertebra: its body, then the posterior elements (pedicles, pillars, lamina, processes)."""
    da, db = _neighbours(pieces, p)
    parts: list[Part] = [_vertebral_body(p, da, db, acfg, rng)]
    f = _arch_frame(p, curves, scale)
    cw2 = acfg.canal_halfwidth_mm * f.sc
    parts.append(_pedicles(p, f, cw2))
    # the joint lines above and below bound the pillar and the lamina
    if da is not None:
        Ja, na = joints[da.name]
    else:  # C2: flat superior facets at the top of the body
        Ja, na = dens.top_post + 1.0 * dens.n, dens.n
    if db is not None:
        Jb, nb = joints[db.name]
    else:
        Jb, nb = f.at(0, -0.5 * f.H - 6), f.n
    parts += _pillar(p, f, cw2, (Ja, na), (Jb, nb), acfg)
    lamina, lam_c = _lamina(p, f, cw2, (Ja, na), (Jb, nb), acfg)
    parts += lamina
    parts += _spinous_process(p, f, lam_c, acfg, rng)
    parts.append(_transverse_processes(p, f))
    return parts


def _vertebral_body(
    p: Piece, above: Piece | None, below: Piece | None, acfg: Any, rng: np.random.Generator
) -> PiecePart:
    """The body, with the marrow signs of its neighbouring discs and maybe a haemangioma."""
    info = {
        "modic_above": int(above.row.get("modic_type", 0) or 0) if above is not None else 0,
        "modic_below": int(below.row.get("modic_type", 0) or 0) if below is not None else 0,
        "scl_above": float(above.row.get("sclerosis", 0) or 0) if above is not None else 0.0,
        "scl_below": float(below.row.get("sclerosis", 0) or 0) if below is not None else 0.0,
        "hemangioma": bool(rng.random() < acfg.hemangioma_prob),
        "hem_pos": (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
    }
    return PiecePart(p, "body", acfg.corner_radius_mm, **info)


def _pedicles(p: Piece, f: _ArchFrame, cw2: float) -> ShapePart:
    """The pedicles, lateral to the canal (half-width `cw2`)."""
    H, sc = f.H, f.sc
    ped = [f.at(-2.0, -0.05 * H), f.at(6.5, -0.05 * H), f.at(6.5, 0.45 * H), f.at(-2.0, 0.45 * H)]
    return ShapePart(f"{p.name} pedicle", p.label, "bone", "poly", cw2, cw2 + 5.5 * sc, vertices=ped)


def _pillar(
    p: Piece,
    f: _ArchFrame,
    cw2: float,
    joint_above: tuple[np.ndarray, np.ndarray],
    joint_below: tuple[np.ndarray, np.ndarray],
    acfg: Any,
) -> list[Part]:
    """The articular pillar between the facet joint lines above and below (none when they meet)."""
    (Ja, na), (Jb, nb) = joint_above, joint_below
    sc = f.sc
    a0, a1 = acfg.pillar_start_mm * sc, (acfg.pillar_start_mm + acfg.pillar_depth_mm) * sc
    gap = acfg.facet_gap_mm / 2
    pillar = _clip_band(
        f.at(a0, -40), f.at(a1, -40), f.at(a1, 40), f.at(a0, 40), (Ja, -na, gap), (Jb, nb, gap)
    )
    if pillar is None:
        return []
    return [
        ShapePart(f"{p.name} pillar", p.label, "bone", "poly", cw2 - 1.0, cw2 + 11.0 * sc, vertices=pillar)
    ]


def _lamina(
    p: Piece,
    f: _ArchFrame,
    cw2: float,
    joint_above: tuple[np.ndarray, np.ndarray],
    joint_below: tuple[np.ndarray, np.ndarray],
    acfg: Any,
) -> tuple[list[Part], np.ndarray]:
    """The lamina behind the canal, between the joint lines shifted down (laminae sit low).

    Returns the part (none when the lines meet) and the lamina's centre, where the spinous process starts.
    """
    (Ja, na), (Jb, nb) = joint_above, joint_below
    cd_v = f.canal
    lam_t = acfg.lamina_thickness_mm * f.sc
    down = -acfg.lamina_drop_mm * f.n
    lam = _clip_band(
        f.at(cd_v - 0.3, -40),
        f.at(cd_v + lam_t, -40),
        f.at(cd_v + lam_t, 40),
        f.at(cd_v - 0.3, 40),
        (Ja + down, -na, acfg.interlaminar_gap_mm / 2),
        (Jb + down, nb, acfg.interlaminar_gap_mm / 2),
    )
    if lam is None:
        return [], f.at(cd_v + lam_t / 2, -0.2 * f.H)
    part = ShapePart(f"{p.name} lamina", p.label, "bone", "poly", 0.0, cw2 + 2.0, vertices=lam)
    return [part], np.mean(lam, axis=0)


def _spinous_process(
    p: Piece, f: _ArchFrame, lam_c: np.ndarray, acfg: Any, rng: np.random.Generator
) -> list[Part]:
    """A tapered bar from the lamina junction, down-posteriorly, and its bulbous tip.

    Length and slope per level come from the options, with a random scatter.
    """
    vn, lab, sc, e_m, n_m = p.name, p.label, f.sc, f.e, f.n
    k = ["C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3"].index(vn)
    L = acfg.spinous_length_mm[min(k, len(acfg.spinous_length_mm) - 1)] * sc * float(rng.uniform(0.9, 1.1))
    ang_sp = math.radians(acfg.spinous_angle_deg[min(k, len(acfg.spinous_angle_deg) - 1)] + rng.normal(0, 4))
    d_sp = _unit(math.cos(ang_sp) * e_m - math.sin(ang_sp) * n_m)
    p0 = lam_c + 1.0 * e_m
    p1 = p0 + L * d_sp
    thick = (5.5 if vn == "C2" else 3.4) * sc
    sw = (5.0 if vn == "C2" else 2.6) * sc
    return [
        ShapePart(
            f"{vn} spinous", lab, "bone", "capsule", 0.0, sw, p0=p0, p1=p1, r0=thick * 1.3, r1=thick * 0.5
        ),
        ShapePart(
            f"{vn} spinous tip",
            lab,
            "bone",
            "ellipse",
            0.0,
            sw + 1.5,
            center=p1 - 1.0 * d_sp,
            radii=(thick * 0.8, thick * 0.6),
            angle=ang_sp,
        ),
    ]


def _transverse_processes(p: Piece, f: _ArchFrame) -> ShapePart:
    """The transverse processes, anterolateral (thin bone beside the body)."""
    sc = f.sc
    return ShapePart(
        f"{p.name} transverse",
        p.label,
        "thin_bone",
        "ellipse",
        p.width / 2 - 1.0,
        p.width / 2 + 8.0 * sc,
        center=f.at(-2.5, 0.12 * f.H),
        radii=(4.5 * sc, 2.6 * sc),
        angle=math.atan2(f.e[1], f.e[0]),
    )


def _dens(c2: Piece, dens: _C2Frame, acfg: Any, scale: float) -> ShapePart:
    """The dens, a tapered capsule labelled as part of C2."""
    return ShapePart(
        "C2 dens",
        c2.label,
        "bone",
        "capsule",
        0.0,
        acfg.dens_halfwidth_mm * scale,
        p0=dens.base,
        p1=dens.p1,
        r0=dens.r_dens,
        r1=dens.r_dens * 0.85,
    )


def _atlas(c2: Piece, dens: _C2Frame, canal: float, scale: float) -> list[Part]:
    """C1 (unlabelled): anterior arch in front of the dens, lateral masses, posterior arch."""
    e_c2, n_c2u = dens.e, dens.n
    dens_mid = dens.base + 0.55 * (dens.tip - dens.base)
    ant_arch = dens_mid - (dens.r_dens + 1.6 + 3.2 * scale) * e_c2
    lm = [
        c2.upper(0.05) + 1.8 * n_c2u,
        dens.top_post + (8.0 * scale) * e_c2 + 1.8 * n_c2u,
        dens.top_post + (8.0 * scale) * e_c2 + 14.0 * n_c2u,
        c2.upper(0.05) + 14.0 * n_c2u,
    ]
    post_arch = dens.top_post + (canal * 1.45 + 4.0) * e_c2 + 0.5 * dens.dens_h * n_c2u
    return [
        ShapePart(
            "C1 anterior arch",
            0,
            "bone",
            "ellipse",
            0.0,
            11.0 * scale,
            center=ant_arch,
            radii=(3.2 * scale, 5.2 * scale),
            angle=math.atan2(n_c2u[1], n_c2u[0]) - math.pi / 2,
        ),
        ShapePart("C1 lateral mass", 0, "bone", "poly", 8.0, 24.0 * scale, vertices=lm),
        ShapePart(
            "C1 posterior arch",
            0,
            "bone",
            "ellipse",
            0.0,
            22.0 * scale,
            center=post_arch,
            radii=(6.0 * scale, 3.6 * scale),
            angle=math.atan2(e_c2[1], e_c2[0]),
        ),
    ]


def _skull_base(dens: _C2Frame, canal: float) -> list[Part]:
    """The skull base (unlabelled): the clivus above the dens tip and the occiput behind the canal."""
    e_c2, n_c2u = dens.e, dens.n
    basion = dens.tip + 4.5 * n_c2u - 1.0 * e_c2
    clivus_dir = _unit(1.9 * n_c2u - 0.9 * e_c2)
    opisthion = dens.top_post + (canal * 1.45 + 6.0) * e_c2 + (dens.dens_h + 9.0) * n_c2u
    occ_dir = _unit(0.55 * e_c2 + 0.85 * n_c2u)
    return [
        ShapePart(
            "clivus",
            0,
            "skull",
            "capsule",
            0.0,
            14.0,
            p0=basion + 4 * clivus_dir,
            p1=basion + 45 * clivus_dir,
            r0=4.5,
            r1=9.0,
        ),
        ShapePart(
            "occiput",
            0,
            "skull",
            "capsule",
            0.0,
            45.0,
            p0=opisthion,
            p1=opisthion + 55 * occ_dir,
            r0=4.0,
            r1=5.5,
        ),
    ]


def _osteophytes(pieces: list[Piece], acfg: Any, rng: np.random.Generator) -> list[Part]:
    """Anterior beaks at both endplates bordering each disc with an osteophyte length in its truth row."""
    parts: list[Part] = []
    for i, p in enumerate(pieces):
        if p.kind != "disc" or not p.row:
            continue
        L = float(p.row.get("osteophyte_mm", 0.0) or 0.0)
        if L <= 0.05:
            continue
        below, above = pieces[i - 1], pieces[i + 1]
        for vert, up in ((below, True), (above, False)):
            parts.append(_osteophyte(vert, up, L, acfg, rng))
    return parts


def _discs_and_bulges(
    pieces: list[Piece], acfg: Any, rng: np.random.Generator
) -> tuple[list[Part], list[Part]]:
    """Every disc (labelled or not) and, behind the labelled ones that bulge, the posterior bulge.

    Returns (discs, bulges); they are painted at different depths of the order.
    """
    discs: list[Part] = []
    bulges: list[Part] = []
    for p in pieces:
        if p.kind != "disc":
            continue
        r = p.row
        info = {
            "t2_signal": float(r.get("t2_signal", 1.0) if r else 0.9),
            "miyazaki": int(r.get("miyazaki_grade", 1) if r else 1),
            "nucleus_shift": float(rng.normal(0.0, 0.03)),
        }
        discs.append(PiecePart(p, "disc", 0.0, **info))
        bulge = float(r.get("bulge_mm", 0.0) or 0.0) if r else 0.0
        if bulge > 0.1:
            bulges.append(_bulge(p, bulge, info, acfg, rng))
    return discs, bulges


def _bulge(p: Piece, bulge: float, info: dict[str, Any], acfg: Any, rng: np.random.Generator) -> ShapePart:
    """Posterior bulge of disc `p`: a half-ellipse from 0.5 mm inside the posterior wall to `bulge` mm
    beyond it, off the midline by a random LR offset."""
    e_up = _unit(p.upper(1.0) - p.upper(0.0))
    c = 0.5 * (p.lower(1.0) + p.upper(1.0))
    hgt = float(np.hypot(*(p.upper(1.0) - p.lower(1.0))))
    ed = _unit(p.e + e_up)
    part = ShapePart(
        f"{p.name} bulge",
        p.label,
        "disc_bulge",
        "ellipse",
        0.0,
        acfg.bulge_halfwidth_mm,
        center=c - 0.5 * ed,
        radii=(bulge + 0.5, max(hgt * 0.5, 1.0) + 0.4 * bulge),
        angle=math.atan2(ed[1], ed[0]),
    )
    part.xc = float(rng.uniform(-acfg.bulge_side_mm, acfg.bulge_side_mm))
    part.info.update(info)
    return part


def _landmarks(by: dict[str, Piece], dens: _C2Frame, neck_depth: float) -> dict[str, Any]:
    """Points the renderers place their fields of view and soft tissues by."""

    def mid_anterior(name: str) -> float:
        return float(0.5 * (by[name].lower(0)[1] + by[name].upper(0)[1]))

    return {
        "z_top": float(dens.tip[1]),
        "dens_tip": dens.tip,
        "z_bottom_t1": float(min(by["T1"].lower(0)[1], by["T1"].lower(1)[1])),
        "z_c7": mid_anterior("C7"),
        "z_c6": mid_anterior("C6"),
        "z_c3": mid_anterior("C3"),
        "c2_ant": by[labels.VERTEBRA_NAMES[0]].lower(0.0),
        "neck_depth": neck_depth,
        "e_c2": dens.e,
    }


def _clip_band(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    *halfplanes: tuple[np.ndarray, np.ndarray, float],
) -> np.ndarray | None:
    """Clip the convex quad a-b-c-d (counter-clockwise) by half-planes ``dot(p - J, n) >= gap``."""
    poly = [a, b, c, d]
    # make counter-clockwise
    area = sum(poly[i][0] * poly[(i + 1) % 4][1] - poly[(i + 1) % 4][0] * poly[i][1] for i in range(4))
    if area < 0:
        poly = poly[::-1]
    for J, n, gap in halfplanes:
        out = []
        for i in range(len(poly)):
            p, q = poly[i], poly[(i + 1) % len(poly)]
            fp, fq = float(np.dot(p - J, n)) - gap, float(np.dot(q - J, n)) - gap
            if fp >= 0:
                out.append(p)
            if (fp >= 0) != (fq >= 0):
                out.append(p + (q - p) * (fp / (fp - fq)))
        poly = out
        if len(poly) < 3:
            return None
    return np.array(poly)


def _osteophyte(vert: Piece, superior: bool, length: float, acfg: Any, rng: np.random.Generator) -> ShapePart:
    """Anterior beak at the superior (or inferior) anterior corner of `vert`, pointing toward the disc."""
    s = 1.0 if superior else -1.0
    if superior:
        corner_v = float(np.interp(0.0, _TG, vert.s_lower) + vert.h(0.0))
    else:
        corner_v = float(np.interp(0.0, _TG, vert.s_lower))
    base = acfg.osteophyte_base_mm + 0.5 * length
    rise = acfg.osteophyte_rise * length * float(rng.uniform(0.8, 1.2))
    # (along mm, v mm) in the vertebra's frame; the beak lies anterior of t = 0 except its root
    pts_local = [
        (0.8, corner_v - s * base),
        (0.8, corner_v - s * 0.05),
        (-length, corner_v + s * rise),
        (-0.6 * length, corner_v - s * 0.4 * base),
    ]
    pts = np.array([vert.pant + a * vert.e + v * vert.n for a, v in pts_local])
    area = sum(pts[i][0] * pts[(i + 1) % 4][1] - pts[(i + 1) % 4][0] * pts[i][1] for i in range(4))
    if area < 0:
        pts = pts[::-1]
    part = ShapePart(
        f"{vert.name} osteophyte", vert.label, "osteophyte", "poly", 0.0, vert.width * 0.32, vertices=pts
    )
    return part


# --- image grids -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A sagittal pixel grid placed over the spine frame by a rotation and a translation.

    Pixel (row r, column c) lies at image-plane position u = c * col_mm (posterior), w = -r * row_mm
    (superior up); spine-frame point p maps to ``R(theta) p + shift``.
    """

    shape: tuple[int, int]
    row_mm: float
    col_mm: float
    theta: float
    shift: tuple[float, float]

    def to_pixel(self, X: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ct, st = math.cos(self.theta), math.sin(self.theta)
        u = ct * X - st * Z + self.shift[0]
        w = st * X + ct * Z + self.shift[1]
        return -w / self.row_mm, u / self.col_mm

    def window(self, bounds: tuple[float, float, float, float]) -> tuple[slice, slice] | None:
        """Row/column slices covering a spine-frame box, or None when it misses the image."""
        x0, x1, z0, z1 = bounds
        r, c = self.to_pixel(np.array([x0, x1, x0, x1]), np.array([z0, z0, z1, z1]))
        r0, r1 = max(math.floor(r.min()), 0), min(math.ceil(r.max()) + 1, self.shape[0])
        c0, c1 = max(math.floor(c.min()), 0), min(math.ceil(c.max()) + 1, self.shape[1])
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def points(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Spine-frame coordinates (X, Z) of the pixel centres in a window (2D arrays)."""
        r = np.arange(rows.start, rows.stop, dtype=float)[:, None]
        c = np.arange(cols.start, cols.stop, dtype=float)[None, :]
        u = c * self.col_mm - self.shift[0]
        w = -r * self.row_mm - self.shift[1]
        ct, st = math.cos(self.theta), math.sin(self.theta)
        return ct * u + st * w, -st * u + ct * w


def place_grid(
    spine: Spine,
    shape: tuple[int, int],
    row_mm: float,
    col_mm: float,
    theta: float,
    centre_offset: tuple[float, float],
    ap_fraction: float,
) -> Grid:
    """A grid whose centre row sits on the middle of C2..T1 and whose columns put the posterior wall at
    `ap_fraction` of the width, moved by `centre_offset` (AP, SI mm) and rotated by `theta` (rad)."""
    lm = spine.landmarks
    zc = 0.5 * (lm["z_top"] + lm["z_bottom_t1"])
    xc = float(np.interp(zc, spine.curves["zs"], spine.curves["xpw"]))
    ct, st = math.cos(theta), math.sin(theta)
    u_c, w_c = ct * xc - st * zc, st * xc + ct * zc
    u_t = ap_fraction * shape[1] * col_mm + centre_offset[0]
    w_t = -0.5 * shape[0] * row_mm + centre_offset[1]
    return Grid(shape, row_mm, col_mm, theta, (u_t - u_c, w_t - w_c))
