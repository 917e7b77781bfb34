"""Environment side of rollouts: LIBERO env slots and the spawned CPU worker processes that step them.

An *env slot* holds one LIBERO environment and runs the reference protocol of one episode at a time
(openvla/openvla ``experiments/robot/libero/run_libero_eval.py``):

1. ``begin(spec)``: re-seed the RNGs, build (or reuse) the task's ``OffScreenRenderEnv`` rendering
   only the agent-view camera (the one the policy sees), ``env.reset()``, ``env.set_init_state``
   (init state ``spec.init_state_index`` of the suite), ``num_steps_wait`` dummy-action steps so
   objects settle (a success during them does not count); returns the first policy image;
2. ``step(action)``: model-space action -> environment action (:func:`model_to_env_action`) ->
   ``env.step``; returns the next policy image and the environment's ``done`` (success) flag.
   ``step(action, observe=False)`` (open-loop steps of an action chunk, whose observation nobody reads):
   the cameras are not rendered (the simulator's ``render`` returns black frames for that step, so
   robosuite's observation sampling runs as usual; physics and the success check do not read images) and
   the image is None.

Policy images are the agent view rotated 180 degrees, then :func:`vlamix.eval.image.preprocess_image`
(JPEG round trip + Lanczos resize to 224 px): uint8 [224, 224, 3]. A policy that reads more (``inputs`` of
the run's settings, :data:`vlamix.eval.policy.POLICY_INPUTS`; OpenVLA-OFT's LIBERO recipe) also gets
``wrist_image`` (the wrist camera, rotated and preprocessed the same way: moojink/openvla-oft
``experiments/robot/libero/run_libero_eval.py`` ``prepare_observation``) and ``proprio`` (the raw 8-D state
of :func:`vlamix.sim.libero_env.robot_state`) in every begin/step result.

A *worker* (:func:`worker_main`, started with ``multiprocessing`` ``spawn``) owns ``envs_per_worker``
slots and answers one message per round from the parent: a list of commands (``begin``, ``step``,
``end``) for its slots, executed in order, answered with one result per command. Workers import
neither torch nor TensorFlow (a MuJoCo EGL context in a process with TensorFlow segfaults), ignore
SIGINT (the parent stops them), set ``LP_NUM_THREADS`` (Mesa llvmpipe's rasterizer threads) to their
share of the CPUs unless it is set, and exit when the parent dies (``PR_SET_PDEATHSIG`` on Linux, a
watchdog thread elsewhere, and end-of-file on their pipe).
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable

import numpy as np

from vlamix.core.console import quiet_worker
from vlamix.core.constants import ACTION_DIM, NUM_STEPS_WAIT, RLDS_IMAGE_SIZE
from vlamix.eval.image import preprocess_image
from vlamix.eval.video import EpisodeVideo
from vlamix.sim import libero_env
from vlamix.sim.libero_env import AGENTVIEW, WRIST, camera_image, dummy_action, robot_state

logger = logging.getLogger(__name__)

def model_to_env_action(action: np.ndarray) -> np.ndarray:
    """Model-space action -> LIBERO environment action (a new array; the input is not changed).

    The gripper (last dim) goes from [0, 1] (1 = open) to [-1, 1], is binarised with ``sign``, and
    is inverted to the environment's convention (-1 = open, +1 = close); the other 6 dims pass
    through. Reference: openvla/openvla ``experiments/robot/robot_utils.py``
    (``normalize_gripper_action(binarize=True)`` then ``invert_gripper_action``).

    Args:
        action: float [..., 7] = delta xyz (3) + delta rpy (3) + gripper (1).
    Returns:
        float64 [..., 7]; the gripper is exactly -1.0, 1.0, or 0.0 when the model outputs 0.5.
    Raises:
        ValueError: last dimension is not 7.
    """
    out = np.array(action, dtype=np.float64, copy=True)
    if out.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f"action must have {ACTION_DIM} values in its last dimension, got shape {list(out.shape)}")
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def env_to_model_action(action: np.ndarray) -> np.ndarray:
    """LIBERO environment action -> model-space action: the inverse of :func:`model_to_env_action` for a
    binary gripper (a new array).

    The gripper goes from the environment's -1 (open) / +1 (close) to the model's 1.0 (open) / 0.0
    (close), so that ``model_to_env_action(env_to_model_action(a))`` is ``a`` exactly; the other 6
    dims pass through. Used by policies that compute environment actions themselves (the scripted
    expert, :mod:`vlamix.eval.expert_policy`) so that their actions take the VLA's post-processing path.

    Args:
        action: float [..., 7] with the gripper exactly -1.0 or 1.0.
    Returns:
        float64 [..., 7]; the gripper is 1.0 or 0.0.
    Raises:
        ValueError: last dimension is not 7, or a gripper value other than -1 / +1 (naming it).
    """
    out = np.array(action, dtype=np.float64, copy=True)
    if out.shape[-1:] != (ACTION_DIM,):
        raise ValueError(f"action must have {ACTION_DIM} values in its last dimension, got shape {list(out.shape)}")
    bad = out[..., -1][np.abs(out[..., -1]) != 1.0]
    if bad.size:
        raise ValueError(f"environment gripper must be -1 (open) or +1 (close), got {bad.tolist()[:3]}")
    out[..., -1] = (1.0 - out[..., -1]) / 2.0
    return out


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and (when imported) torch's RNGs (LIBERO's ``env.seed`` is ``np.random.seed``)."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


class LiberoSlot:
    """One LIBERO environment running one episode at a time (the product env of rollouts).

    Args:
        resolution: camera side in pixels (reference: 256).
        seed: RNG seed set before every ``env.reset()``, so an episode does not depend on which
            slot or worker runs it or what ran before.
        num_steps_wait: dummy-action steps after the init state (reference: 10).
        image_size: policy image side (224).

    Attributes (seconds, reset by :meth:`begin`): ``physics_s`` (``env.step`` minus rendering),
    ``render_s`` (MuJoCo offscreen rendering of the camera), ``preprocess_s`` (JPEG + resize); ``renders``: camera
    images rendered (one per camera per observed step, wait steps included).
    ``frame`` is the last camera frame (uint8 [resolution, resolution, 3], rotated 180 degrees).
    ``state`` is the privileged observation of the last ``begin`` / ``step`` that the worker sends
    with the image (plain numbers, picklable): None here, where the policy sees images only; a subclass
    sets it in :meth:`_observe` (:class:`vlamix.eval.expert_policy.ExpertSlot`).
    """

    def __init__(self, resolution: int = RLDS_IMAGE_SIZE, seed: int = 7, num_steps_wait: int = NUM_STEPS_WAIT,
                 image_size: int = 224, inputs: tuple[str, ...] = ()):
        self.resolution, self.seed, self.num_steps_wait, self.image_size = resolution, seed, num_steps_wait, image_size
        unknown = [name for name in inputs if name not in ("wrist_image", "proprio")]
        if unknown:
            raise ValueError(f"inputs: unknown {unknown}; allowed: wrist_image, proprio")
        self.inputs = tuple(inputs)
        #: the observation inputs of the last image besides it (names of ``inputs``)
        self.extras: dict[str, np.ndarray] = {}
        self.env = None
        self.task: tuple[str, int] | None = None
        self.states = None
        self.frame: np.ndarray | None = None
        self.state: Any = None
        self.physics_s = self.render_s = self.preprocess_s = 0.0
        self.renders = 0
        self._blind = False

    def _timed_render(self, render: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if self._blind:  # an observation nobody reads: a black frame of the requested size, not rendered
                width = kwargs.get("width", args[0] if args else None)
                height = kwargs.get("height", args[1] if len(args) > 1 else None)
                rgb = np.zeros((height, width, 3), dtype=np.uint8)
                return (rgb, np.zeros((height, width), dtype=np.float32)) if kwargs.get("depth") else rgb
            self.renders += 1
            t0 = time.perf_counter()
            try:
                return render(*args, **kwargs)
            finally:
                self.render_s += time.perf_counter() - t0
        return wrapper

    def _env_step(self, action) -> tuple[Any, bool]:
        render_before = self.render_s
        t0 = time.perf_counter()
        obs, _, done, _ = self.env.step(action)
        self.physics_s += time.perf_counter() - t0 - (self.render_s - render_before)
        return obs, bool(done)

    def _observe(self, obs: dict) -> np.ndarray:
        """The policy's observation of ``obs`` (after the wait steps, and after each policy step): the
        policy image uint8 [S, S, 3]; a subclass may also set :attr:`state`."""
        t0 = time.perf_counter()
        self.frame = camera_image(obs, AGENTVIEW)
        image = preprocess_image(self.frame, size=self.image_size)
        if "wrist_image" in self.inputs:
            self.extras["wrist_image"] = preprocess_image(camera_image(obs, WRIST), size=self.image_size)
        if "proprio" in self.inputs:
            self.extras["proprio"] = robot_state(obs)
        self.preprocess_s += time.perf_counter() - t0
        return image

    def begin(self, spec: Any) -> np.ndarray:
        """Start episode ``spec`` (reset, init state, wait steps). Returns the first policy image uint8 [S, S, 3]."""
        self.physics_s = self.render_s = self.preprocess_s = 0.0
        self.state = None
        self.renders = 0
        task = (spec.suite, spec.task_id)
        if self.task != task:
            self.close()
            info = libero_env.task_info(spec.suite, spec.task_id)
            self.states = libero_env.init_states(spec.suite, spec.task_id)
            cameras = (AGENTVIEW, WRIST) if "wrist_image" in self.inputs else (AGENTVIEW,)
            self.env = libero_env.make_env(info, resolution=self.resolution, cameras=cameras, seed=self.seed)
            self.task = task
        seed_everything(self.seed)
        self.env.seed(self.seed)
        t0 = time.perf_counter()
        self.env.reset()  # hard reset: robosuite builds a new MjSim, so wrap its render afterwards
        sim = self.env.env.sim
        sim.render = self._timed_render(type(sim).render.__get__(sim))
        obs = self.env.set_init_state(self.states[spec.init_state_index])
        self.physics_s += time.perf_counter() - t0
        for _ in range(self.num_steps_wait):
            obs, _ = self._env_step(dummy_action())
        return self._observe(obs)

    def step(self, action: np.ndarray, observe: bool = True) -> tuple[np.ndarray | None, bool]:
        """Apply a model-space action float [7]; returns (next policy image uint8 [S, S, 3], done). With
        ``observe=False`` nothing is rendered and the image is None (``frame`` and ``extras`` keep the last ones)."""
        env_action = model_to_env_action(action).tolist()
        if observe:
            obs, done = self._env_step(env_action)
            return self._observe(obs), done
        self._blind = True
        try:
            _, done = self._env_step(env_action)
        finally:
            self._blind = False
        return None, done

    def close(self) -> None:
        """Close the environment (a failing close is logged, never raised)."""
        env, self.env, self.task = self.env, None, None
        if env is None:
            return
        try:
            env.close()
        except Exception:  # noqa: BLE001 - a failing close must not kill the worker
            logger.warning("closing a LIBERO environment failed:\n%s", traceback.format_exc())


def make_libero_slot(settings: dict[str, Any]) -> LiberoSlot:
    """The default slot factory: a :class:`LiberoSlot` with the run's settings."""
    return LiberoSlot(settings["resolution"], settings["seed"], settings["num_steps_wait"], settings["image_size"],
                      tuple(settings.get("inputs", ())))


# ---------------------------------------------------------------------------------------------- worker
def _die_with_parent(parent_pid: int) -> None:
    """Exit when the parent process dies: PR_SET_PDEATHSIG on Linux, else a polling watchdog thread."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="vlamix-parent-watchdog", daemon=True).start()


def worker_main(wid: int, conn: Any, n_slots: int, settings: dict[str, Any], parent_pid: int, busy: Any = None) -> None:
    """Body of an env worker process (``spawn``). Serves rounds of commands on ``conn`` until ``None`` or EOF.

    A round is ``[(slot, op, arg), ...]`` with ``op`` one of
    ``"begin"`` (arg = ``(spec, video_tmp_path | None)``), ``"step"`` (arg = model-space action
    float64 [7], or ``(action, observe)``: ``observe`` False = an open-loop step whose observation is not read,
    rendered only for a video) and ``"end"`` (arg = final video path or None: keep the episode video there, or
    delete it). ``busy`` (shared doubles) holds ``[slot, monotonic start]`` of the command running
    now and ``[-1, 0]`` between commands, so the parent can time out a hung one. The answer is ``[result, ...]`` in command order; a result is a dict with ``slot``,
    ``op``, and for begin/step ``image`` (uint8 [S, S, 3] or None on error), ``state`` (the slot's
    privileged observation, ``slot.state``: None for image-only slots or on error), ``done`` (bool),
    ``error`` (None or "Type: message" with the traceback logged), ``physics_s``, ``render_s``,
    ``preprocess_s`` (seconds of the episode so far), and one entry per name in ``settings["inputs"]``
    (the slot's ``extras``). An exception in a slot is reported in its
    result and the slot's env is closed (rebuilt on the next begin).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    quiet_worker()  # robosuite / LIBERO / EGL output to the job's log file, not the console
    _die_with_parent(parent_pid)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    # Mesa's software rasterizer (llvmpipe, the CPU EGL path) starts one thread per CPU in every
    # process; with several workers that oversubscribes the CPUs. Its share of them, unless set.
    os.environ.setdefault("LP_NUM_THREADS", str(int(settings.get("render_threads", 1))))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s env-worker {wid} %(levelname)s %(name)s: %(message)s")
    if "tensorflow" in sys.modules:
        conn.send(("fatal", "TensorFlow is imported in a rollout worker before any rendering (MuJoCo EGL rendering "
                   "would segfault). spawn workers re-import the parent's __main__ module: move TensorFlow imports of "
                   f"{getattr(sys.modules.get('__mp_main__'), '__file__', 'the main script')} into functions"))
        return
    factory = settings["slot_factory"]
    slots: list[Any] = [None] * n_slots
    videos: list[Any] = [None] * n_slots
    try:
        while True:
            try:
                cmds = conn.recv()
            except (EOFError, OSError):
                break
            if cmds is None:
                break
            results = []
            for slot, op, arg in cmds:
                t0 = time.monotonic()
                if busy is not None:
                    busy[1], busy[0] = t0, float(slot)
                out = _run_command(slots, videos, factory, settings, slot, op, arg)
                if busy is not None:
                    busy[0] = -1.0
                out["cmd_s"] = time.monotonic() - t0
                results.append(out)
            conn.send(("ok", results))
    finally:
        for video in videos:
            if video is not None:
                try:
                    video.finish(None)
                except Exception:  # noqa: BLE001
                    pass
        for env in slots:
            if env is not None:
                env.close()


def _run_command(slots, videos, factory, settings, slot: int, op: str, arg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"slot": slot, "op": op, "image": None, "state": None, "done": False, "error": None}
    try:
        if op == "end":
            if videos[slot] is not None:
                video, videos[slot] = videos[slot], None
                out["frames"] = video.frames
                video.finish(arg)
            return out
        if slots[slot] is None:
            slots[slot] = factory(settings)
        env = slots[slot]
        if op == "begin":
            spec, video_path = arg
            if videos[slot] is not None:  # an unfinished episode's video
                videos[slot].finish(None)
                videos[slot] = None
            out["image"] = env.begin(spec)
            if video_path is not None:
                videos[slot] = EpisodeVideo(video_path)
        elif op == "step":
            action, observe = arg if isinstance(arg, tuple) else (arg, True)
            action = np.asarray(action, dtype=np.float64)
            if observe or videos[slot] is not None:
                out["image"], out["done"] = env.step(action)
            else:
                out["image"], out["done"] = env.step(action, observe=False)
                return _with_timings(out, env)
        else:
            raise ValueError(f"unknown env-worker command {op!r}")
        out["state"] = getattr(env, "state", None)
        for name in settings.get("inputs", ()):
            out[name] = env.extras[name]
        if videos[slot] is not None:
            videos[slot].add(getattr(env, "frame", None))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which retries or records an error
        out["image"] = out["state"] = None
        out["error"] = f"{type(err).__name__}: {err}"
        logger.error("env slot %d, %s failed:\n%s", slot, op, traceback.format_exc())
        if slots[slot] is not None:
            slots[slot].close()
            slots[slot] = None
    return _with_timings(out, slots[slot])


def _with_timings(out: dict[str, Any], env: Any) -> dict[str, Any]:
    for name in ("physics_s", "render_s", "preprocess_s"):
        out[name] = float(getattr(env, name, 0.0)) if env is not None else 0.0
    out["renders"] = int(getattr(env, "renders", 0)) if env is not None else 0
    return out
