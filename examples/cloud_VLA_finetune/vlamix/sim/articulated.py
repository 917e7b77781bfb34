"""Scripted primitives beyond pick-and-place: opening drawers, turning knobs, pushing flat objects.

Each primitive is a list of :class:`Segment` s (grip-site waypoint, gripper orientation, gripper
command) computed once from the simulator's joint and geom poses when the episode starts; the
:class:`~vlamix.sim.expert.ScriptedExpert` drives the end effector through them with the same
proportional OSC_POSE controller as its pick-and-place phases. Geometry comes from MuJoCo only
(``model.jnt_*``, ``data.xanchor`` / ``data.xaxis``, the collision geoms' boxes), never from
hard-coded scene coordinates, so the primitives follow LIBERO's randomised placements.

- drawer (BDDL ``Open <cabinet>_<level>_region``, and ``In <obj> <cabinet>_<level>_region`` while
  that drawer is closed): the handle is the drawer body's collision geom that sticks out furthest
  along the opening direction. The gripper turns horizontal (approach axis into the drawer, fingers
  closing vertically, clear of the neighbouring drawers' handles), grasps the handle bar from the
  front, pulls it along the slide axis past LIBERO's "open" threshold, releases and backs off.
- knob (``Turnon <stove>``): the top-most collision geom of the hinge's body is grasped from above,
  then the gripper yaws about the hinge axis (the grip point follows the arc around the anchor) by
  :data:`KNOB_TURN` radians in the direction that increases the joint angle, releases and lifts.
- push (``On <flat object> <table region>`` for an object too wide to grasp and too flat to pinch,
  e.g. a plate): closed fingertips go down beside the object (opposite the goal), below its top,
  then push it along the line to the region's centre, re-aiming at every step from the object's
  current position.

Sources: LIBERO ``libero/envs/objects/articulated_objects.py`` (open / turn-on joint ranges),
``libero/envs/object_states/base_object_states.py`` (how ``Open`` / ``TurnOn`` / ``On`` are checked).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vlamix.sim.geometry import collision_corners

#: Joint angle (radians) the knob is turned by; LIBERO's flat stove is "on" from 0.5 rad (range to 2.1).
KNOB_TURN = 1.0
#: Extra pull (metres) beyond the drawer's open threshold.
DRAWER_EXTRA_PULL = 0.02
#: Height (metres) of the fingertips above the table while pushing.
PUSH_HEIGHT = 0.006


@dataclass
class Segment:
    """One waypoint of a primitive.

    name: phase name (shown as ``ScriptedExpert.phase``).
    target: grip-site position float64 [3] (metres), or a function of the step's observation giving it.
    rot: gripper orientation float64 [3, 3] (world frame; columns = gripper x, y, z axes).
    gripper: -1 open / +1 close.
    tol: the segment ends when the position error is below this (metres)...
    min_steps: ...and at least this many steps passed (gripper closing / opening).
    max_steps: the segment ends after this many steps in any case.
    stall: the segment may also end when the arm stalls (blocked by contact).
    max_action: clip of the position action norm (None: the expert's default).
    """

    name: str
    target: np.ndarray | Callable[[dict], np.ndarray]
    rot: np.ndarray
    gripper: float
    tol: float = 0.008
    min_steps: int = 0
    max_steps: int = 60
    stall: bool = True
    max_action: float | None = None

    def goal(self, obs: dict) -> np.ndarray:
        """The waypoint float64 [3] (metres) for the step with observation ``obs``."""
        return np.asarray(self.target(obs) if callable(self.target) else self.target, dtype=np.float64)


def rot_z(angle: float) -> np.ndarray:
    """Rotation matrix float64 [3, 3] of ``angle`` radians about world z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def gripper_down(yaw: float) -> np.ndarray:
    """Orientation of the gripper pointing down, rotated ``yaw`` about world z (yaw 0: LIBERO's start)."""
    return rot_z(yaw) @ np.diag([1.0, -1.0, -1.0])


def gripper_horizontal(approach: np.ndarray) -> np.ndarray:
    """Orientation of the gripper pointing along horizontal ``approach`` with the fingers closing along world z."""
    z = np.array([approach[0], approach[1], 0.0], dtype=np.float64)
    z /= np.linalg.norm(z)
    y = np.array([0.0, 0.0, 1.0])
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def body_subtree(model, root: int) -> set[int]:
    """Body ``root`` and all its descendants (MuJoCo lists children after their parent)."""
    bodies = {root}
    for body in range(root + 1, model.nbody):
        if int(model.body_parentid[body]) in bodies:
            bodies.add(body)
    return bodies


def geom_boxes(inner, bodies: set[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """World axis-aligned boxes ``(lo, hi)`` float64 [3] of the collision geoms of ``bodies``."""
    model, data = inner.sim.model._model, inner.sim.data._data
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    out = []
    for geom in range(model.ngeom):
        if int(model.geom_bodyid[geom]) not in bodies:
            continue
        if model.geom_contype[geom] == 0 and model.geom_conaffinity[geom] == 0:
            continue
        center, half = model.geom_aabb[geom, :3], model.geom_aabb[geom, 3:]
        corners = (signs * half + center) @ data.geom_xmat[geom].reshape(3, 3).T + data.geom_xpos[geom]
        out.append((corners.min(axis=0), corners.max(axis=0)))
    return out


def joint_id(inner, name: str) -> int:
    """MuJoCo id of joint ``name``. Raises KeyError: no such joint."""
    import mujoco  # only inside a running simulation: importing vlamix.sim (CLI, vlamix.eval) loads no MuJoCo

    jid = mujoco.mj_name2id(inner.sim.model._model, mujoco.mjtObj.mjOBJ_JOINT, name)
    if jid < 0:
        raise KeyError(f"no joint '{name}' in the scene")
    return int(jid)


def joint_qpos(inner, jid: int) -> float:
    """Position of a 1-dof joint (metres for slide joints, radians for hinges)."""
    model = inner.sim.model._model
    return float(inner.sim.data._data.qpos[model.jnt_qposadr[jid]])


# ---------------------------------------------------------------------------------------------- drawer
def drawer_joint(inner, region: str) -> int | None:
    """Slide joint that moves the drawer of a cabinet region site (None: the region has no joint)."""
    site = inner.object_sites_dict.get(region)
    joints = list(getattr(site, "joints", None) or [])
    if not joints:
        return None
    return joint_id(inner, joints[0])


def drawer_open_target(inner, region: str) -> float:
    """Joint position that counts as open (LIBERO's ``default_open_ranges``) with a margin, metres."""
    site = inner.object_sites_dict[region]
    parent = inner.get_object(site.parent_name)
    lo, hi = parent.object_properties["articulation"]["default_open_ranges"]
    closed = parent.object_properties["articulation"]["default_close_ranges"]
    # the open range lies on one side of the closed range: go past its far end
    if max(lo, hi) <= min(closed):
        return min(lo, hi) + 0.005
    return max(lo, hi) - 0.005


def drawer_is_open(inner, region: str) -> bool:
    """LIBERO's ``Open`` rule for a region's drawer; True for a region without a drawer joint."""
    jid = drawer_joint(inner, region)
    if jid is None:
        return True
    site = inner.object_sites_dict[region]
    return bool(inner.get_object(site.parent_name).is_open(joint_qpos(inner, jid)))


def drawer_segments(inner, region: str, eef: np.ndarray) -> list[Segment]:
    """Segments that open the drawer of ``region`` (see the module docstring).

    Raises:
        KeyError: the region has no drawer joint.
    """
    model, data = inner.sim.model._model, inner.sim.data._data
    jid = drawer_joint(inner, region)
    if jid is None:
        raise KeyError(f"region '{region}' has no drawer joint")
    axis = np.array(data.xaxis[jid], dtype=np.float64)
    q_now, q_goal = joint_qpos(inner, jid), drawer_open_target(inner, region)
    # the drawer body moves by axis * dq: pull direction and distance
    pull = axis * math.copysign(1.0, q_goal - q_now)
    pull[2] = 0.0
    pull /= np.linalg.norm(pull)
    distance = abs(q_goal - q_now) + DRAWER_EXTRA_PULL
    boxes = geom_boxes(inner, {int(model.jnt_bodyid[jid])})
    lo, hi = max(boxes, key=lambda b: float(((b[0] + b[1]) / 2.0) @ pull))  # handle: furthest out
    handle = (lo + hi) / 2.0
    front = float(max(lo @ pull, hi @ pull)) - float(handle @ pull)  # handle's half depth along the pull
    rot = gripper_horizontal(-pull)
    grasp = handle + pull * (front - 0.012)  # fingers around the bar, pads 1.2 cm in from its front face
    pre = grasp + pull * 0.09
    stage = pre + pull * 0.04 + np.array([0.0, 0.0, 0.03])
    out = grasp + pull * distance
    return [
        Segment("drawer_stage", stage, rot, -1.0, tol=0.02, max_steps=80, stall=False),
        Segment("drawer_align", pre, rot, -1.0, tol=0.006, max_steps=50),
        Segment("drawer_reach", grasp, rot, -1.0, tol=0.004, max_steps=40),
        Segment("drawer_grasp", grasp, rot, 1.0, tol=1.0, min_steps=10, max_steps=10, stall=False),
        Segment("drawer_pull", out, rot, 1.0, tol=0.01, max_steps=90, max_action=0.6),
        Segment("drawer_release", out, rot, -1.0, tol=1.0, min_steps=8, max_steps=8, stall=False),
        Segment("drawer_back", out + pull * 0.08 + np.array([0.0, 0.0, 0.05]), rot, -1.0, tol=0.02, max_steps=40),
    ]


# ---------------------------------------------------------------------------------------------- knob
def knob_joint(inner, fixture: str) -> int:
    """Hinge joint of a fixture with a ``turn_on`` rule (e.g. the flat stove's knob)."""
    obj = inner.get_object(fixture)
    for name in getattr(obj, "joints", []) or []:
        jid = joint_id(inner, name)
        if int(inner.sim.model._model.jnt_type[jid]) == 3:  # mjJNT_HINGE
            return jid
    raise KeyError(f"fixture '{fixture}' has no hinge joint")


def knob_segments(inner, fixture: str, eef: np.ndarray) -> list[Segment]:
    """Segments that turn the knob of ``fixture`` on (see the module docstring)."""
    model, data = inner.sim.model._model, inner.sim.data._data
    jid = knob_joint(inner, fixture)
    anchor = np.array(data.xanchor[jid], dtype=np.float64)
    axis = np.array(data.xaxis[jid], dtype=np.float64)
    boxes = geom_boxes(inner, body_subtree(model, int(model.jnt_bodyid[jid])))
    lo, hi = max(boxes, key=lambda b: float(b[1][2]))  # the grip: top-most geom
    center = (lo + hi) / 2.0
    size = hi - lo
    # fingers close across the narrower horizontal side (yaw 0: fingers close along world y)
    yaw = 0.0 if size[1] <= size[0] else math.pi / 2.0
    grasp = np.array([center[0], center[1], hi[2] - min(0.018, 0.5 * size[2])])
    sign = math.copysign(1.0, axis[2])  # gripper yaw +d about world z turns the joint by +d * axis_z
    turn = KNOB_TURN * sign

    def on_arc(fraction: float) -> np.ndarray:
        r = rot_z(turn * fraction)
        p = anchor + r @ (grasp - anchor)
        return np.array([p[0], p[1], grasp[2]])

    segments = [
        Segment("knob_approach", grasp + np.array([0.0, 0.0, 0.08]), gripper_down(yaw), -1.0, tol=0.012, max_steps=80),
        Segment("knob_descend", grasp, gripper_down(yaw), -1.0, tol=0.005, max_steps=40),
        Segment("knob_grasp", grasp, gripper_down(yaw), 1.0, tol=1.0, min_steps=10, max_steps=10, stall=False),
    ]
    n = 4
    for k in range(1, n + 1):
        segments.append(Segment(f"knob_turn{k}", on_arc(k / n), gripper_down(yaw + turn * k / n), 1.0, tol=0.004,
                                min_steps=4, max_steps=25, stall=False))
    end = on_arc(1.0)
    segments += [
        Segment("knob_release", end, gripper_down(yaw + turn), -1.0, tol=1.0, min_steps=8, max_steps=8, stall=False),
        Segment("knob_lift", end + np.array([0.0, 0.0, 0.08]), gripper_down(yaw + turn), -1.0, tol=0.01, max_steps=40),
    ]
    return segments


# ---------------------------------------------------------------------------------------------- push
def push_segments(inner, obj: str, target_xy: np.ndarray, eef: np.ndarray, body_pos: Callable[[], np.ndarray]) -> list[Segment]:
    """Segments that push ``obj`` (flat) until its body is over ``target_xy`` (see the module docstring).

    body_pos: returns the object's current body position float64 [3] (re-read at every step).
    """
    corners = collision_corners(inner, obj)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    start = body_pos()
    radius = 0.5 * float(max(hi[0] - lo[0], hi[1] - lo[1]))
    direction = np.asarray(target_xy, dtype=np.float64) - start[:2]
    direction /= np.linalg.norm(direction)
    # MuJoCo collides meshes by their convex hull: a plate is a solid disc, so it is pushed at its
    # side. Closed fingertips go down just beyond the side opposite the goal, below the object's
    # top, with the hand's long side across the table's x axis (narrow along y, clear of fixtures
    # beside the object), and push it along the line to the region's centre.
    z = float(lo[2]) + PUSH_HEIGHT + 0.015  # grip site sits 1.5 cm above the fingertips
    behind = start[:2] - direction * (radius + 0.015)
    rot = gripper_down(math.pi / 2.0)

    def pushing(obs: dict) -> np.ndarray:
        now = body_pos()[:2]
        to_goal = np.asarray(target_xy) - now
        dist = float(np.linalg.norm(to_goal))
        d = to_goal / dist if dist > 1e-6 else direction
        # the contact point behind the object, led 4 cm ahead (the controller's lag does the rest)
        p = now - d * (radius + 0.005) + d * min(0.04, dist + 0.01)
        return np.array([p[0], p[1], z])

    return [
        Segment("push_approach", np.array([behind[0], behind[1], z + 0.08]), rot, 1.0, tol=0.012, max_steps=80),
        Segment("push_descend", np.array([behind[0], behind[1], z]), rot, 1.0, tol=0.006, max_steps=40),
        Segment("push", pushing, rot, 1.0, tol=0.0, max_steps=200, stall=False, max_action=0.5),
    ]
