"""Geometry of LIBERO scene objects read from MuJoCo (collision-geom boxes), shared by the scripted expert
(:mod:`vlamix.sim.expert`) and its articulated-object skills (:mod:`vlamix.sim.articulated`)."""

from __future__ import annotations

import numpy as np

#: Signs of the 8 corners of a box around its centre.
_BOX_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)


def collision_corners(env, name: str) -> np.ndarray:
    """World corners of the bounding boxes of an object's (or fixture's) collision geoms.

    Args:
        env: LIBERO ``ControlEnv`` (``OffScreenRenderEnv``) or its inner BDDL domain env.
        name: object or fixture name of the BDDL file (e.g. ``"plate_1"``).
    Returns:
        float64 [8 * n_geoms, 3], metres.
    Raises:
        KeyError: unknown name, or an object without collision geoms.
    """
    inner = getattr(env, "env", env)
    model = inner.sim.model._model
    data = inner.sim.data._data
    root = inner.obj_body_id[name]
    bodies = {root}
    for body in range(root + 1, model.nbody):  # children follow their parent in MuJoCo's body order
        if int(model.body_parentid[body]) in bodies:
            bodies.add(body)
    corners = []
    for geom in range(model.ngeom):
        if int(model.geom_bodyid[geom]) not in bodies:
            continue
        if model.geom_contype[geom] == 0 and model.geom_conaffinity[geom] == 0:
            continue  # visual-only geom
        center, half = model.geom_aabb[geom, :3], model.geom_aabb[geom, 3:]
        corners.append((_BOX_SIGNS * half + center) @ data.geom_xmat[geom].reshape(3, 3).T + data.geom_xpos[geom])
    if not corners:
        raise KeyError(f"object '{name}' has no collision geoms")
    return np.concatenate(corners, axis=0)
