"""Tissue and TotalSpineSeg labels of the phantom at arbitrary patient-space points.

:func:`label_points` is the whole anatomy: given LPS points it returns, per point, a tissue code
(:class:`Tissue`, what :mod:`~rsna_lumbar.synth.contrast` turns into MR signal) and the
TotalSpineSeg step-2 label of the structure there (0 where TSS has no class). Structures are
painted in order, later ones over earlier ones, in the spine frame of
:mod:`~rsna_lumbar.synth.anatomy` (``u`` lateral, ``+`` left; ``t`` cranial arc length; ``d``
posterior). Severity acts here: the dural sac narrows at a disc (spinal canal stenosis), a
lateral recess and its side of the sac shrink behind a hypertrophic facet (subarticular), and a
foramen's fat shrinks around its exiting root (foraminal).
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from rsna_lumbar.synth.anatomy import BODY_TSS, DISC_TSS, LUMBAR_DISCS, N_DISCS, Spine

CORD_TSS, CANAL_TSS = 1, 2
_WEDGE = np.array([0.04, 0.04, 0.05, 0.06, 0.08, 0.12, 0.2, 0.4], np.float32)
"""Disc wedging per disc ``j``: half-height is ``1 - _WEDGE[j] * d / ad`` times the mean."""


class Tissue(enum.IntEnum):
    """Tissue codes; nucleus pulposus of disc ``j`` is ``NUCLEUS + j``, the transition from
    its nucleus to its annulus ``NUCLEUS_EDGE + j``."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    MARROW = 3
    CORTEX = 4
    POST_BONE = 5
    ANNULUS = 6
    CSF = 7
    NERVE = 8
    LIGAMENT = 9
    VESSEL = 10
    VISCERA = 11
    FACET_FLUID = 12
    NUCLEUS = 20
    NUCLEUS_EDGE = 30


_ROOTS = np.array(  # cauda equina roots in the sac's unit disc: (u, d, radius); lie posteriorly
    [[-0.55, 0.15, 0.10], [-0.36, 0.45, 0.10], [-0.3, 0.72, 0.08], [0.3, 0.72, 0.08],
     [0.38, 0.42, 0.10], [0.56, 0.12, 0.10], [-0.32, 0.05, 0.08], [0.3, 0.08, 0.08]]
)


def _gauss(x, sigma):
    return np.exp(-0.5 * (x / sigma) ** 2)


def _power(x, posterior):
    """``|x| ** p`` with ``p = 4`` where ``posterior``, else 2.4 (sections rounder in front);
    the fractional power only where it is needed."""
    x2 = x * x
    out = x2 * x2
    front = np.nonzero(~posterior)[0]
    out[front] = x2[front] ** 1.2
    return out


def _superellipse(a, b, posterior):
    return _power(a, posterior) + _power(b, posterior)


CHUNK = 262_144


def label_points(spine: Spine, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes and TSS labels of LPS points (..., 3); both uint8 arrays of shape (...)."""
    shape = points.shape[:-1]
    flat = points.reshape(-1, 3)
    # cache-sized pieces
    parts = [_label(spine, *spine.frame_coords(flat[i : i + CHUNK])) for i in range(0, len(flat), CHUNK)]
    if len(parts) == 1:
        return parts[0][0].reshape(shape), parts[0][1].reshape(shape)
    return (np.concatenate([p[0] for p in parts]).reshape(shape),
            np.concatenate([p[1] for p in parts]).reshape(shape))


def label_plane(spine: Spine, origin: np.ndarray, step_r: np.ndarray, step_c: np.ndarray,
                shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`label_points` of the plane grid ``origin + r * step_r + c * step_c`` (LPS mm),
    shape ``(R, C)``."""
    tissue, tss = _label(spine, *spine.plane_frame_coords(origin, step_r, step_c, shape))
    return tissue.reshape(shape), tss.reshape(shape)


def _label(spine: Spine, u, t, d, dsoft) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes and TSS labels of points given by their :meth:`Spine.frame_coords` (N,)."""
    tissue = np.zeros(u.size, np.uint8)
    tss = np.zeros(u.size, np.uint8)
    s = _float32(spine)
    # -- outline, subcutaneous fat, abdominal wall, viscera -------------------------------
    us = u
    dc = s.back_depth - s.body_half_depth
    outer = (us / s.body_half_width) ** 2 + ((dsoft - dc) / s.body_half_depth) ** 2
    wall = s.body_half_width - s.fat, s.body_half_depth - s.fat
    inner = (us / wall[0]) ** 2 + ((dsoft - dc) / wall[1]) ** 2
    tissue[outer <= 1] = Tissue.FAT
    tissue[inner <= 1] = Tissue.MUSCLE
    core = (us / (wall[0] - 9)) ** 2 + ((dsoft - dc) / (wall[1] - 9)) ** 2
    tissue[core <= 1] = Tissue.VISCERA
    # Everything else happens in a box around the spine; work on that subset only.
    box = np.nonzero((core <= 1.0) & (np.abs(u) < 110) & (d > -70) & (t > s.disc_t[-1] - 140))[0]
    ub, tb, db = u[box], t[box], d[box]
    tis = tissue[box]
    _paint_soft_tissue(s, ub, tb, db, tis)
    # The bones, discs, canal and foramina lie in a narrower region (see _spine_extent).
    u_max, d_min, d_max, sacral_u, sacral_d = _spine_extent(s)
    au = np.abs(ub)
    near = (au < u_max) & (db > d_min) & (db < d_max)
    near |= (tb < s.disc_t[-1]) & (au < sacral_u) & (np.abs(db) < sacral_d)
    near = np.nonzero(near)[0]
    tis_n, lab_n = tis[near], np.zeros(near.size, np.uint8)
    _paint_spine(s, ub[near], tb[near], db[near], tis_n, lab_n)
    tis[near] = tis_n
    tissue[box] = tis
    tss[box[near]] = lab_n
    return tissue, tss


_PER_SEGMENT = ("disc_t", "disc_h", "body_h", "half_depth", "half_width", "transverse",
                "degeneration", "spinal", "foraminal", "subarticular")


def _float32(spine: Spine) -> Spine:
    """``spine`` with float32 per-segment arrays, so that painting stays in float32 (a float64
    array or NumPy scalar in an expression would promote every point array it meets)."""
    return dataclasses.replace(spine, **{k: getattr(spine, k).astype(np.float32) for k in _PER_SEGMENT})


def _spine_extent(s: Spine) -> tuple[float, ...]:
    """Bounds of everything :func:`_paint_spine` paints: ``|u| < u_max``, ``d_min < d < d_max``
    above the L5/S1 disc centre, and ``|u| < sacral_u``, ``|d| < sacral_d`` below it.

    Transverse processes and the sacral ala reach furthest laterally, the anterior disc bulge
    and the spinous process tips furthest in ``d``; the sacral body's waist term widens it
    caudally, to ``flare`` times its S1 size at the bottom of the painted box. 1 mm margins.
    """
    ad = float(s.half_depth.max())
    u_max = max(float(s.transverse.max()), 52.0, s.canal_half_width + 27.0) + 1.0
    d_max = ad + s.canal_depth + 28.0 + 0.2 * float(s.body_h.max()) + 1.0
    x = 2.0 * (s.body_t[8] - (s.disc_t[-1] - 140.0)) / 40.0
    flare = 1.0 + 0.06 * (x * x - 1.0)
    sacral_u = max(u_max, float(s.half_width[7:].max()) * flare + 1.0)
    sacral_d = max(d_max, float(s.half_depth[7:].max()) * flare + 1.0)
    return u_max, -1.06 * ad - 1.0, d_max, sacral_u, sacral_d


def _paint_soft_tissue(s: Spine, u, t, d, tis) -> None:
    ad = float(np.mean(s.half_depth[3:8]))
    aw = float(np.mean(s.half_width[3:8]))
    top, l5s1 = s.disc_t[3], s.disc_t[7]
    retro = (u / 75.0) ** 2 + ((d - 3.0) / (ad + 4.5)) ** 2 <= 1  # 1.5 mm in front of the bodies
    tis[retro] = Tissue.FAT
    # Erector spinae and multifidus behind the arches, with a fatty fascial plane between.
    back = s.back_depth - s.fat
    mid = (ad + 10 + back) / 2
    half = (back - ad - 10) / 2 + 4
    erector = (((np.abs(u) - 24) / 36.0) ** 2 + ((d - mid) / half) ** 2 <= 1) & (d > ad + 8)
    tis[erector] = Tissue.MUSCLE
    fascia = erector & (np.abs(np.abs(u) - 22 - 2.5 * np.sin(t / 11.0)) < 0.9)
    tis[fascia] = Tissue.FAT
    tis[(np.abs(u) < 1.2) & (d > ad + 30) & (d < back)] = Tissue.LIGAMENT
    # Psoas grows caudally from L1; quadratus lumborum lateral to the transverse processes.
    grow = np.clip((top + 20 - t) / (top + 20 - l5s1), 0, 1)
    rp = 4 + 18 * grow
    psoas = ((np.abs(u) - aw - 0.7 * rp) / rp) ** 2 + ((d + 0.15 * ad) / (0.9 * rp)) ** 2 <= 1
    tis[psoas & (t < top + 30)] = Tissue.MUSCLE
    ql = ((np.abs(u) - 64) / 17) ** 2 + ((d - ad - 4) / 8) ** 2 <= 1
    tis[ql & (t < top + 10) & (t > l5s1 + 25)] = Tissue.MUSCLE
    # Aorta (left) and inferior vena cava (right) in front of the bodies; iliac vessels below.
    fork = s.disc_t[6] + 5
    spread = np.clip(fork - t, 0, None) * 0.55
    aorta = ((u - 14) ** 2 + (d + ad + 11) ** 2 <= 100) & (t >= fork)
    iliac = (((np.abs(u) - 14 - spread) ** 2 + (d + ad + 12 - 0.2 * spread) ** 2) <= 49) & (t < fork)
    ivc = ((u + 19) / 11) ** 2 + ((d + ad + 9) / 8) ** 2 <= 1
    tis[aorta | iliac | (ivc & (t >= fork - 8))] = Tissue.VESSEL


def _paint_spine(s: Spine, u, t, d, tis, lab) -> None:
    bt = s.body_t
    order = np.argsort(bt)
    ad = np.interp(t, bt[order], s.half_depth[order]).astype(np.float32)
    aw = np.interp(t, bt[order], s.half_width[order]).astype(np.float32)
    # nearest disc and the body a point's band belongs to
    b = np.searchsorted(-s.disc_t.astype(np.float32), -t)  # number of discs above = body index
    lo = np.clip(b - 1, 0, N_DISCS - 1)
    hi = np.clip(b, 0, N_DISCS - 1)
    j = np.where(np.abs(t - s.disc_t[lo]) < np.abs(t - s.disc_t[hi]), lo, hi)
    dt = (t - s.disc_t[j]).astype(np.float32)
    hh = s.disc_h[j] / 2
    level = np.full(N_DISCS, -1)
    level[list(LUMBAR_DISCS)] = np.arange(5)
    lv = level[j]
    lumbar = lv >= 0
    lvi = np.where(lumbar, lv, 0)
    near = np.where(lumbar, _gauss(dt, hh + 3.0), 0.0)
    n_sp = s.spinal[lvi] * near
    left = u >= 0
    side = np.where(left, 0, 1)
    n_sa = s.subarticular[side, lvi] * near
    n_fo = s.foraminal[side, lvi] * np.where(lumbar, 1.0, 0.0)
    wc, cd = s.canal_half_width, s.canal_depth
    au = np.abs(u)
    sacral = b == 8
    ds0 = s.disc_t[-1] - s.disc_h[-1] / 2 - t  # depth below the S1 endplate
    shrink = np.clip(ds0 / 110.0, 0, 1)
    ad_s = np.where(sacral, ad * (1 - 0.45 * shrink), ad)
    vert_label = np.asarray(BODY_TSS, np.uint8)[np.clip(b, 0, 8)]
    # -- bony canal (epidural fat) and the neural arch column ---------------------------
    canal = (au < wc) & (d > ad_s) & (d < ad_s + cd)
    column = (au >= wc) & (au < wc + 13) & (d > ad_s - 2) & (d < ad_s + cd + 4)
    tis[column & (t > ds0 * 0 + s.disc_t[-1] - 120)] = Tissue.POST_BONE
    lab[column] = vert_label[column]
    tis[canal] = Tissue.FAT
    # laminae (shifted caudally; gaps between them are filled by ligamentum flavum)
    bc = bt[np.clip(b, 0, 8)]
    bh = np.where(sacral, 40.0, s.body_h[np.clip(b, 0, 8)])
    lam = (au < wc + 3) & (d >= ad_s + cd) & (d < ad_s + cd + 6) & (t > bc - 0.62 * bh) & (t < bc + 0.3 * bh)
    tis[lam] = Tissue.POST_BONE
    lab[lam] = vert_label[lam]
    # spinous process, slanting caudally as it runs back
    dl = d - (ad_s + cd)
    sp_c = bc - 0.12 * bh - 0.22 * np.clip(dl, 0, None)
    sp_len, sp_half = 28 + 0.2 * bh, 0.27 * bh
    spin = (au < 4.5) & (dl > 2) & (dl < sp_len) & (np.abs(t - sp_c) < sp_half) & ~sacral
    tis[spin] = Tissue.CORTEX  # a cortical shell around fatty marrow
    marrow = spin & (au < 3.5) & (dl < sp_len - 1.2) & (np.abs(t - sp_c) < sp_half - 1.2)
    tis[marrow] = Tissue.POST_BONE
    lab[spin] = vert_label[spin]
    reach = s.transverse[np.clip(b, 0, 8)]
    tp = (au > wc + 8) & (au < reach) & (d > ad + 3) & (d < ad + 11) & (np.abs(t - bc - 0.15 * bh) < 4.5)
    tis[tp & ~sacral] = Tissue.POST_BONE
    lab[tp & ~sacral] = vert_label[tp & ~sacral]
    # -- bodies: superellipse sections with a waist, cortex rim and endplates -----------
    waist = 1 - 0.06 * (1 - (2 * (t - bc) / np.maximum(bh, 1)) ** 2)
    post = d > 0
    rr = _superellipse(u / (aw * waist), d / (ad_s * waist), post)
    rim = _power(1 - 1.2 / ad_s, post)
    wedge = 1 - _WEDGE[j] * np.clip(d / ad, -1.2, 1.2)  # disc taller in front, L5/S1 most
    hdisc = hh * (1 + 0.12 * (1 - np.minimum(rr, 1))) * wedge
    in_body = (rr <= 1) & (np.abs(dt) > hdisc)
    in_body &= np.where(b == 0, t < s.disc_t[0] + s.disc_h[0] / 2 + s.body_h[0], True)
    ala = sacral & (ds0 < 38) & (au < 52) & (np.abs(d - 0.2 * ad) < 0.6 * ad) & (np.abs(dt) > hh)
    in_body |= ala
    tis[in_body] = Tissue.MARROW
    edge = in_body & ((rr > rim) | (np.abs(dt) < hdisc + 0.9))
    tis[edge] = Tissue.CORTEX
    fused = np.nonzero(in_body & sacral)[0]  # the sacrum's fused disc remnants
    fused = fused[np.min(np.abs(ds0[fused, None] - [27.0, 50.0, 70.0]), 1) < 1.0]
    tis[fused] = Tissue.ANNULUS
    lab[in_body] = vert_label[in_body]
    # -- discs: annulus, nucleus, degenerative posterior bulge, wedge --------------------
    deg = s.degeneration[j]
    bulge = 0.8 + 1.8 * deg + 1.3 * s.sac_half_depth * n_sp / np.maximum(near, 1e-6) * (near > 0.5)
    frac = np.clip(1 - (dt / np.maximum(hdisc, 0.1)) ** 2, 0, 1)
    ad_post = np.where(d > 0, ad + bulge * frac, ad) * 1.03
    rr_d = _superellipse(u / (aw * 1.03), d / ad_post, post)
    in_disc = (rr_d <= 1) & (np.abs(dt) <= hdisc) & ~sacral | ((rr_d <= 1) & (np.abs(dt) <= hdisc) & (j == 7))
    tis[in_disc] = Tissue.ANNULUS
    # nucleus: bright core fading into the annulus; a degenerate disc's has a dark cleft
    rn = (u / (0.62 * aw)) ** 2 + ((d - 1.5) / (0.6 * ad)) ** 2 + (dt / (0.78 * hdisc)) ** 2
    rim_n = in_disc & (rn <= 1)
    tis[rim_n] = (Tissue.NUCLEUS_EDGE + j[rim_n]).astype(np.uint8)
    nuc = rim_n & (rn <= 0.45) & ~((deg > 0.35) & (np.abs(dt) < 0.45))
    tis[nuc] = (Tissue.NUCLEUS + j[nuc]).astype(np.uint8)
    lab[in_disc] = np.asarray(DISC_TSS, np.uint8)[j[in_disc]]
    # -- facets (superior + inferior articular processes) at each disc ------------------
    fc_u = wc + 8 - 3.5 * n_sa
    fc_d = ad + cd - 2
    fr_u = 7 + 3.5 * n_sa
    facet = ((au - fc_u) / fr_u) ** 2 + ((dt - 3) / 13) ** 2 + ((d - fc_d) / 8) ** 2 <= 1
    facet &= ~sacral | (j == 7)
    tis[facet] = Tissue.POST_BONE
    lab[facet] = vert_label[facet]
    joint = facet & (np.abs((au - fc_u) * 0.7 + (d - fc_d) * 0.7) < 0.4) & (np.abs(dt - 3) < 8)
    tis[joint] = Tissue.FACET_FLUID
    # -- ligamentum flavum thickening from behind --------------------------------------
    th = (2.0 + 4.5 * n_sp + 4.0 * n_sa) * np.where(lumbar, _gauss(dt, hh + 5), 0.3)
    flav = (au < wc) & (d < ad_s + cd) & (d > ad_s + cd - th - 0.8)
    tis[flav] = Tissue.LIGAMENT
    tis[canal & (d < ad_s + 0.9)] = Tissue.LIGAMENT  # posterior longitudinal ligament
    _paint_sac(s, u, t, d, tis, lab, ad_s, n_sp, n_sa, dt, hh, lumbar, sacral, ds0)
    _paint_foramina(s, u, t, d, tis, ad, n_fo, j, lumbar)


def _paint_sac(s, u, t, d, tis, lab, ad_s, n_sp, n_sa, dt, hh, lumbar, sacral, ds0) -> None:
    rd0, ru0 = s.sac_half_depth, s.sac_half_width
    end = np.where(sacral, np.clip(1 - ds0 / 38.0, 0, 1) ** 0.5, 1.0)
    rd = rd0 * (1 - 0.92 * n_sp) * end
    ru = ru0 * (1 - 0.25 * n_sp - 0.45 * n_sa) * end
    centre = ad_s + 1.0 + rd0
    cand = np.nonzero((np.abs(u) < ru0 + 5) & (np.abs(d - centre) < rd0 + 4))[0]
    uc, dcn = u[cand], d[cand] - centre[cand]
    ruc, rdc = np.maximum(ru[cand], 0.05), np.maximum(rd[cand], 0.05)
    sac = (uc / ruc) ** 2 + (dcn / rdc) ** 2 <= 1
    # lateral recess lobes near each disc, shrinking with subarticular stenosis
    rec = lumbar[cand] & (np.abs(dt[cand]) < hh[cand] + 8)
    k = np.maximum(1 - 0.9 * n_sa[cand] / np.maximum(_gauss(dt[cand], hh[cand] + 3), 1e-3), 0.05)
    lobe_u = np.abs(uc) - (ru0 - 1.5) * (1 - 0.5 * n_sa[cand])
    lobe = rec & ((lobe_u / (3.6 * k)) ** 2 + ((dcn + 0.35 * rd0) / (2.8 * k)) ** 2 <= 1)
    root = lobe & ((lobe_u / 1.3) ** 2 + ((dcn + 0.35 * rd0) / 1.3) ** 2 <= 1)
    csf = sac | lobe
    tis[cand[csf]] = Tissue.CSF
    lab[cand[csf]] = CANAL_TSS
    un, dn = uc / ruc, dcn / rdc
    roots = np.zeros(len(cand), bool)
    for ru_j, rd_j, r_j in _ROOTS:
        roots |= (un - ru_j) ** 2 + (dn - rd_j) ** 2 <= r_j**2
    tis[cand[(sac & roots) | root]] = Tissue.NERVE
    tip = s.disc_t[3] + 4.0  # conus medullaris ends just above the L1/L2 disc
    rc = 3.8 * np.clip((t[cand] - tip) / 18.0, 0, 1) ** 0.5
    cord = sac & (uc**2 + (dcn - 0.15 * rd0) ** 2 <= rc**2)
    tis[cand[cord]] = Tissue.NERVE
    lab[cand[cord]] = CORD_TSS


def _paint_foramina(s, u, t, d, tis, ad, n_fo, j, lumbar) -> None:
    wc, cd = s.canal_half_width, s.canal_depth
    au = np.abs(u)
    cand = np.nonzero((au > wc - 1) & (au < wc + 26) & (d > ad - 3) & (d < ad + cd + 2))[0]
    jc = j[cand]
    above = np.clip(jc, 0, 8)
    tf = s.disc_t[jc] + s.disc_h[jc] / 2 + 0.22 * s.body_h[above]
    df = ad[cand] + 0.32 * cd
    n = n_fo[cand]
    rt = 8.5 * (1 - 0.5 * n) * s.body_h[above] / 26.0
    rdf = 0.27 * cd * (1 - 0.6 * n)
    tc = tf - 0.25 * n * rt
    dtl = (t[cand] - tc) / rt
    taper = 1 + 0.35 * np.clip(dtl, -1, 1)
    auc = au[cand]
    inside = (auc < wc + 14) & (dtl**2 + ((d[cand] - df) / (rdf * taper)) ** 2 <= 1) & (jc >= 2)
    tis[cand[inside]] = Tissue.FAT
    # exiting root + ganglion: from the sac edge out through the upper foramen, descending
    tr = tf + 0.3 * 8.5 - 0.3 * np.clip(auc - wc, 0, None)
    rr = 1.6 + 0.9 * _gauss(auc - wc - 7, 4)
    nerve = (auc > s.sac_half_width - 1) & ((t[cand] - tr) ** 2 + (d[cand] - df + 0.5) ** 2 <= rr**2)
    nerve &= (jc >= 2) & ((auc < wc + 14) & ~np.isin(tis[cand], [Tissue.CORTEX, Tissue.MARROW]) | (auc >= wc + 14))
    tis[cand[nerve]] = Tissue.NERVE
