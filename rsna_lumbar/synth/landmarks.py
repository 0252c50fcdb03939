"""Where each label point is: world positions of the annotated structures, and their
projection to ``(instance_number, x, y)`` on a series, as ``train_label_coordinates.csv`` has.

Points per competition level (LPS mm, from the same formulas the phantom paints with):

* ``disc_centre``: centre of the disc; ``disc_posterior``: its posterior edge at mid-line;
* ``canal``: centre of the dural sac behind the disc (Spinal Canal Stenosis, on Sagittal T2);
* ``left_foramen`` / ``right_foramen``: centre of the foraminal fat around the exiting root
  (Neural Foraminal Narrowing, on Sagittal T1);
* ``left_recess`` / ``right_recess``: the lateral recess of the sac at the disc (Subarticular
  Stenosis, on Axial T2).
"""

from __future__ import annotations

import numpy as np

from rsna_lumbar.geometry.affine import plane_normal, world_to_voxel
from rsna_lumbar.synth.anatomy import LUMBAR_DISCS, Spine
from rsna_lumbar.synth.series import Stack

STRUCTURES = ("disc_centre", "disc_posterior", "canal", "left_foramen", "right_foramen",
              "left_recess", "right_recess")


def level_points(spine: Spine, level: int) -> dict[str, np.ndarray]:
    """World points (3,) of the structures of competition level ``level`` (0 = L1/L2)."""
    j = LUMBAR_DISCS[level]
    t = float(spine.disc_t[j])
    ad = float(np.interp(t, spine.body_t[::-1], spine.half_depth[::-1]))
    rd0, ru0 = spine.sac_half_depth, spine.sac_half_width
    sac_d = ad + 1.0 + rd0
    tf = t + spine.disc_h[j] / 2 + 0.22 * spine.body_h[j]
    n_fo = spine.foraminal[:, level]
    tf_c = tf - 0.25 * n_fo * 8.5 * (1 - 0.5 * n_fo) * spine.body_h[j] / 26.0
    df = ad + 0.32 * spine.canal_depth
    uf = spine.canal_half_width + 6.0
    n_sa = spine.subarticular[:, level]
    ur = (ru0 - 1.5) * (1 - 0.5 * n_sa)
    dr = sac_d - 0.35 * rd0
    return {
        "disc_centre": spine.to_world(0.0, t, 0.0),
        "disc_posterior": spine.to_world(0.0, t, ad * 1.03),
        "canal": spine.to_world(0.0, t, sac_d),
        "left_foramen": spine.to_world(uf, tf_c[0], df),
        "right_foramen": spine.to_world(-uf, tf_c[1], df),
        "left_recess": spine.to_world(ur[0], t, dr),
        "right_recess": spine.to_world(-ur[1], t, dr),
    }


def project(stacks: list[Stack], point: np.ndarray):
    """Nearest slice to ``point`` over ``stacks`` whose image contains its projection.

    Returns ``(stack_index, slice_index, instance_number, x, y, distance_mm)`` or None; ``x`` is
    the column, ``y`` the row (pixel centres at integers).
    """
    best = None
    for s, st in enumerate(stacks):
        normal = plane_normal(st.orientation)
        dist = (point - st.positions) @ normal
        for k in np.argsort(np.abs(dist)):
            x, y, _ = world_to_voxel(st.affine(int(k)), point)
            if -0.5 <= x <= st.cols - 0.5 and -0.5 <= y <= st.rows - 0.5:
                if best is None or abs(dist[k]) < abs(best[5]):
                    best = (s, int(k), int(st.instances[k]), float(x), float(y), float(dist[k]))
                break
    return best
