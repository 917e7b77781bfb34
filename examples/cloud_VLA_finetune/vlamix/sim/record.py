"""Record scripted-expert demonstrations in LIBERO and write them as RLDS datasets.

Usage::

    vlamix record-demos --suites libero_spatial libero_object --tasks 2 --episodes 4 \\
        --data-dir workspace/data/libero_rlds
    python -m vlamix.sim.record --suites libero_spatial --tasks 1 --episodes 2 --data-dir workspace/data/libero_rlds

    from vlamix.sim.record import ensure_demo_datasets
    paths = ensure_demo_datasets(cfg.data)   # {"libero_spatial_no_noops": ".../libero_spatial_no_noops/1.0.0", ...}

Recipe of one demonstration (per task, one environment reused for all its episodes):

1. start state: ``np.random.seed(start_seed)`` then ``env.reset()``, which samples the object
   placements from the BDDL file's regions (varied placements; the suite's fixed evaluation init
   states are *not* used). ``NUM_STEPS_WAIT`` dummy steps let objects settle, as in evaluation. A
   start where an object slid more than :data:`MAX_SETTLE_SHIFT` while settling (LIBERO's sampler
   can place objects overlapping) is rejected and not counted as an attempt.
2. attempt: the :class:`~vlamix.sim.expert.ScriptedExpert` acts with camera rendering switched
   off (physics only, ~50 steps/s); the MuJoCo state before each action is kept. No-op actions
   (:func:`is_noop`) are neither executed nor kept, exactly as OpenVLA's
   ``experiments/robot/libero/regenerate_libero_dataset.py`` builds the ``*_no_noops`` data. The
   attempt ends at the environment's ``done`` flag (success), an expert failure, or the suite's
   step limit (:data:`vlamix.core.constants.SUITE_MAX_STEPS`).
3. only successful attempts are rendered: each kept state is restored with LIBERO's
   ``env.regenerate_obs_from_state`` and both cameras are rendered at 256 px (~0.1-0.25 s per
   camera on CPU). The observation stored with an action is the one the action was taken in.
   (Restoring states instead of replaying actions keeps the stored trajectory exactly the
   successful one; the only difference to a live observation is that MuJoCo's positions are
   recomputed for the restored state instead of lagging one 2 ms physics sub-step.)
4. the episode is saved as a compressed ``.npz`` in a staging folder.

Processes: recording runs in ``multiprocessing`` ``spawn`` workers (one per suite, at most
``workers``) that never import TensorFlow (TensorFlow + MuJoCo EGL rendering segfaults). The
parent reads the staged episodes and calls :func:`vlamix.data.rlds_writer.write_rlds`, which does
import TensorFlow. ``spawn`` re-imports the parent's ``__main__`` module in each worker, so a main
script must not import TensorFlow at module level.

Size: one file because the recording workers, their staging files and the RLDS hand-over share one resumable
protocol (what is recorded, what is missing, what a rerun keeps).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from vlamix.core.console import progress, quiet_worker, say
from vlamix.core.constants import DATASET_TO_SUITE, NUM_STEPS_WAIT, RLDS_VERSION, SUITE_MAX_STEPS
from vlamix.core.errors import ConfigError
from vlamix.core.io import atomic_path
from vlamix.data.rlds_writer import write_rlds
from vlamix.data.settings import DataConfig
from vlamix.sim import libero_env
from vlamix.sim.expert import ExpertConfig, ScriptedExpert, parse_goals, scripted_task_ids
from vlamix.sim.libero_env import (
    AGENTVIEW,
    WRIST,
    camera_image,
    dummy_action,
    joint_state,
    robot_state,
    simulator_versions,
)

logger = logging.getLogger(__name__)

#: Threshold of OpenVLA's no-op rule on the norm of the first 6 action dims.
NOOP_THRESHOLD = 1e-4
#: A start state is rejected when an object moves more than this (metres, horizontally) while settling.
MAX_SETTLE_SHIFT = 0.025
#: Seed of the start states and of the expert's jitter used by :func:`ensure_demo_datasets`.
DEMO_SEED = 0
#: File name of the recording record written beside (inside the version folder of) each dataset.
RECORDING_JSON = "recording.json"
#: Arrays of a staged episode file (the episode format of :mod:`vlamix.data.rlds_writer`).
EPISODE_ARRAY_KEYS = ("image", "wrist_image", "state", "joint_state", "action")


def is_noop(action: np.ndarray, prev_action: np.ndarray | None, threshold: float = NOOP_THRESHOLD) -> bool:
    """OpenVLA's no-op rule (``regenerate_libero_dataset.py``).

    A step is a no-op when the norm of the first 6 action dims (EEF delta xyz + delta rotation) is
    below ``threshold`` and the gripper action equals the previous kept action's gripper (for the
    first step, only the first criterion applies).

    Args:
        action: float [7] env action. prev_action: the previous *kept* action float [7], or None.
    """
    action = np.asarray(action)
    if np.linalg.norm(action[:-1]) >= threshold:
        return False
    return prev_action is None or float(action[-1]) == float(np.asarray(prev_action)[-1])


@dataclass
class RecordStats:
    """What one :func:`record_demos` call did.

    attempts: expert attempts from accepted start states; successes: attempts the environment
    marked done (all of them are kept); rejected_starts: start states discarded because objects
    slid while settling; per_task: task id -> {"instruction", "attempts", "successes",
    "rejected_starts", "episode_steps" (kept steps per saved episode)}; steps_kept / steps_dropped_noop:
    steps of the saved episodes and no-op steps skipped in them; seconds: wall time (sim_seconds
    in physics-only attempts, render_seconds rendering the saved episodes); files: staged episodes.
    """

    suite: str
    seed: int
    attempts: int = 0
    successes: int = 0
    rejected_starts: int = 0
    per_task: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps_kept: int = 0
    steps_dropped_noop: int = 0
    seconds: float = 0.0
    sim_seconds: float = 0.0
    render_seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Expert success rate: successes / attempts (0.0 when nothing was attempted)."""
        return self.successes / self.attempts if self.attempts else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["success_rate"] = self.success_rate
        out["per_task"] = {str(k): v for k, v in self.per_task.items()}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RecordStats":
        values = {k: v for k, v in values.items() if k != "success_rate"}
        values["per_task"] = {int(k): v for k, v in values.get("per_task", {}).items()}
        return cls(**values)

    def summary(self) -> str:
        """One human line: success rate, episodes, steps, no-ops, time."""
        episodes = sum(t["successes"] for t in self.per_task.values())
        mean_len = self.steps_kept / episodes if episodes else 0.0
        return (
            f"{self.suite}: expert success rate {self.successes}/{self.attempts} = {100 * self.success_rate:.1f}% "
            f"({self.rejected_starts} start states rejected), {episodes} episodes kept, "
            f"{mean_len:.0f} steps/episode, {self.steps_dropped_noop} no-op steps dropped, {self.seconds:.0f} s "
            f"({self.sim_seconds:.0f} s physics, {self.render_seconds:.0f} s rendering)"
        )


def start_seed(seed: int, suite: str, task_id: int, index: int) -> int:
    """Seed of start state ``index`` of a task: a 31-bit hash of (seed, suite, task id, index)."""
    return int(np.random.SeedSequence([seed, zlib.crc32(suite.encode()), task_id, index]).generate_state(1)[0] >> 1)


# ---------------------------------------------------------------------------------------------- env
def make_recording_env(info, resolution: int = 256):
    """LIBERO ``OffScreenRenderEnv`` for recording: both cameras at ``resolution`` px, rendering off.

    ``env.reset()`` re-samples the object placements. When no placement depends on another object's
    or fixture's site, resets are soft (``hard_reset=False``: ~0.05 s instead of rebuilding the
    MuJoCo model in ~7 s); otherwise they stay hard, because LIBERO's site-conditioned sampler reads
    stale site positions after a soft reset (objects "on the stove" land off the table).
    """
    # LIBERO loads robosuite and MuJoCo: only once a task is used (the CLI imports this module for every command)
    from libero.libero.envs import OffScreenRenderEnv

    env = OffScreenRenderEnv(
        bddl_file_name=info.bddl_file,
        camera_heights=resolution,
        camera_widths=resolution,
        camera_names=[AGENTVIEW, WRIST],
    )
    inner = env.env
    conditioned = getattr(inner, "conditional_placement_initializer", None)
    inner.hard_reset = bool(conditioned is not None and conditioned.samplers)
    set_camera_rendering(env, False)
    return env


def set_camera_rendering(env, enabled: bool) -> None:
    """Switch the rendering of every camera observation (``*_image``) of a LIBERO env on or off."""
    inner = env.env
    for name in list(inner._observables):
        if name.endswith("_image"):
            inner.modify_observable(observable_name=name, attribute="enabled", modifier=enabled)


def _object_xy(env) -> dict[str, np.ndarray]:
    inner = env.env
    return {n: np.array(inner.sim.data.body_xpos[inner.obj_body_id[n]][:2]) for n in inner.objects_dict}


def settle(env) -> tuple[dict, float]:
    """After ``env.reset()``: run the ``NUM_STEPS_WAIT`` dummy steps of the evaluation protocol.

    Returns:
        the last observation, and the largest horizontal distance (metres) an object moved meanwhile.
    """
    before = _object_xy(env)
    obs = None
    for _ in range(NUM_STEPS_WAIT):
        obs, _, _, _ = env.step(dummy_action())
    after = _object_xy(env)
    shift = max((float(np.linalg.norm(after[n] - before[n])) for n in before), default=0.0)
    return obs, shift


@dataclass
class Attempt:
    """One physics-only expert attempt (see :func:`run_attempt`)."""

    success: bool
    states: list[np.ndarray]
    actions: list[np.ndarray]
    noops: int
    failure: str | None
    steps: int


def run_attempt(env, expert, obs: dict, max_steps: int) -> Attempt:
    """Roll the expert out (no rendering) from the current state; keep states and non-no-op actions.

    Args:
        env: recording env after reset and settling. expert: a reset ``ScriptedExpert``.
        obs: observation of the current state. max_steps: cap on executed steps.
    Returns:
        success flag (env's ``done``), MuJoCo states float64 [S] before each kept action, the kept
        actions float32 [7], number of skipped no-ops, expert failure reason, executed steps.
    """
    states: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    noops = 0
    done = False
    proposals = 0
    while len(actions) < max_steps and proposals < 2 * max_steps:
        proposals += 1
        action = np.asarray(expert.act(obs), dtype=np.float32)
        if is_noop(action, actions[-1] if actions else None):
            noops += 1  # as the reference: neither executed nor kept
            continue
        states.append(env.env.sim.get_state().flatten().copy())
        actions.append(action)
        obs, _, done, _ = env.step(action.tolist())
        if done or expert.failure:
            break
    return Attempt(bool(done), states, actions, noops, expert.failure, len(actions))


def render_episode(env, states: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Observations of a list of MuJoCo states, in the RLDS episode format (arrays only).

    Returns:
        image / wrist_image uint8 [T, 256, 256, 3] (rotated 180 degrees), state float32 [T, 8],
        joint_state float32 [T, 7].
    """
    set_camera_rendering(env, True)
    try:
        images, wrists, robot, joints = [], [], [], []
        for state in states:
            obs = env.regenerate_obs_from_state(state)
            images.append(camera_image(obs, AGENTVIEW))
            wrists.append(camera_image(obs, WRIST))
            robot.append(robot_state(obs))
            joints.append(joint_state(obs))
    finally:
        set_camera_rendering(env, False)
    return {
        "image": np.stack(images).astype(np.uint8),
        "wrist_image": np.stack(wrists).astype(np.uint8),
        "state": np.stack(robot).astype(np.float32),
        "joint_state": np.stack(joints).astype(np.float32),
    }


def save_episode(path: str, episode: dict[str, Any]) -> None:
    """Write one episode (arrays + ``language_instruction`` / ``file_path`` str) as compressed .npz, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            **{k: episode[k] for k in EPISODE_ARRAY_KEYS},
            language_instruction=np.array(episode["language_instruction"]),
            file_path=np.array(episode["file_path"]),
        )


def load_episode(path: str) -> dict[str, Any]:
    """Read an episode written by :func:`save_episode` (the episode format of ``write_rlds``)."""
    with np.load(path, allow_pickle=False) as data:
        episode = {k: data[k] for k in EPISODE_ARRAY_KEYS}
        episode["language_instruction"] = str(data["language_instruction"][()])
        episode["file_path"] = str(data["file_path"][()])
    return episode


# ---------------------------------------------------------------------------------------------- recording
def record_demos(
    suite: str,
    task_ids: Sequence[int],
    episodes_per_task: int,
    staging_dir: str,
    seed: int = 0,
    max_attempts_factor: int = 3,
    render: bool = True,
) -> RecordStats:
    """Record successful scripted-expert episodes of some tasks of a suite into ``staging_dir``.

    Runs in the current process, which must not have TensorFlow imported (use :func:`record_suites`
    for spawn workers). Files: ``<staging_dir>/<suite>_task<TT>_ep<EEE>.npz`` (:func:`load_episode`).

    Args:
        suite: LIBERO task suite, e.g. "libero_spatial".
        task_ids: task indices of the suite.
        episodes_per_task: successful episodes to keep per task (>= 1).
        staging_dir: output folder (created).
        seed: seed of the start states and of the expert's jitter (:func:`start_seed`).
        max_attempts_factor: at most ``episodes_per_task * max_attempts_factor`` expert attempts per
            task; a task that yields fewer episodes is logged as a warning.
        render: False only measures the expert (physics only, nothing rendered or written); with
            ``max_attempts_factor=1`` every task gets exactly ``episodes_per_task`` attempts.
    Returns:
        :class:`RecordStats`.
    Raises:
        ValueError: unknown suite / task id, bad counts.
        vlamix.sim.expert.UnsupportedTaskError: a task's goal has no scripted primitive (see ``parse_goals``).
        RuntimeError: TensorFlow is imported in this process.
    """
    if "tensorflow" in sys.modules:
        raise RuntimeError("record_demos renders MuJoCo and must run in a process without TensorFlow (see record_suites)")
    if suite not in SUITE_MAX_STEPS:
        raise ValueError(f"unknown LIBERO task suite '{suite}'; allowed: {', '.join(SUITE_MAX_STEPS)}")
    if isinstance(episodes_per_task, bool) or not isinstance(episodes_per_task, int) or episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be an integer >= 1, got {episodes_per_task!r}")
    if isinstance(max_attempts_factor, bool) or not isinstance(max_attempts_factor, int) or max_attempts_factor < 1:
        raise ValueError(f"max_attempts_factor must be an integer >= 1, got {max_attempts_factor!r}")
    infos = [libero_env.task_info(suite, int(t)) for t in task_ids]  # raises on bad task ids
    os.makedirs(staging_dir, exist_ok=True)
    stats = RecordStats(suite=suite, seed=seed)
    start = time.perf_counter()
    max_steps = SUITE_MAX_STEPS[suite]
    for info in infos:
        task = {"instruction": info.instruction, "attempts": 0, "successes": 0, "rejected_starts": 0, "episode_steps": []}
        stats.per_task[info.task_id] = task
        env = make_recording_env(info)
        try:
            parse_goals(env)  # fail before any attempt on a task the expert cannot do
            max_attempts = episodes_per_task * max_attempts_factor
            index = 0
            while task["successes"] < episodes_per_task and task["attempts"] < max_attempts and index < 4 * max_attempts:
                s = start_seed(seed, suite, info.task_id, index)
                index += 1
                np.random.seed(s)  # LIBERO's placement samplers draw from NumPy's global generator
                t0 = time.perf_counter()
                env.reset()
                obs, shift = settle(env)
                if shift > MAX_SETTLE_SHIFT:
                    task["rejected_starts"] += 1
                    logger.debug("%s task %d: start %d rejected (object slid %.3f m)", suite, info.task_id, s, shift)
                    continue
                task["attempts"] += 1
                rng = np.random.default_rng(s)
                expert = ScriptedExpert(env, ExpertConfig().jittered(rng), rng=rng)
                expert.reset(obs)
                attempt = run_attempt(env, expert, obs, max_steps)
                stats.sim_seconds += time.perf_counter() - t0
                logger.info(
                    "%s task %d attempt %d: %s after %d steps%s", suite, info.task_id, task["attempts"],
                    "success" if attempt.success else "failure", attempt.steps,
                    f" ({attempt.failure})" if attempt.failure else "",
                )
                if not attempt.success:
                    continue
                if render:
                    t1 = time.perf_counter()
                    k = task["successes"]
                    episode = render_episode(env, attempt.states)
                    episode["action"] = np.stack(attempt.actions).astype(np.float32)
                    episode["language_instruction"] = info.instruction
                    episode["file_path"] = f"vlamix_scripted_expert/{suite}/task{info.task_id:02d}/episode{k:03d}_seed{s}"
                    path = os.path.join(staging_dir, f"{suite}_task{info.task_id:02d}_ep{k:03d}.npz")
                    save_episode(path, episode)
                    stats.render_seconds += time.perf_counter() - t1
                    stats.files.append(path)
                task["successes"] += 1
                task["episode_steps"].append(attempt.steps)
                stats.steps_kept += attempt.steps
                stats.steps_dropped_noop += attempt.noops
        finally:
            try:
                env.close()
            except Exception as err:  # noqa: BLE001 - closing an EGL context can fail harmlessly at exit
                logger.debug("closing the LIBERO env failed: %s", err)
        stats.attempts += task["attempts"]
        stats.successes += task["successes"]
        stats.rejected_starts += task["rejected_starts"]
        if task["successes"] < episodes_per_task:
            logger.warning(
                "%s task %d: only %d of %d episodes after %d attempts", suite, info.task_id,
                task["successes"], episodes_per_task, task["attempts"],
            )
    stats.seconds = time.perf_counter() - start
    return stats


def _record_worker(kwargs: dict[str, Any], log_level: int) -> dict[str, Any]:
    """Body of a spawn recording worker: :func:`record_demos` -> ``RecordStats.to_dict()``."""
    quiet_worker()  # robosuite / LIBERO / EGL output to the job's log file, not the console
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    if "tensorflow" in sys.modules:
        raise RuntimeError(
            "TensorFlow is imported in a recording worker (MuJoCo EGL rendering would segfault). spawn workers "
            "re-import the parent's __main__ module: move TensorFlow imports of "
            f"{getattr(sys.modules.get('__mp_main__'), '__file__', 'the main script')} into functions"
        )
    return record_demos(**kwargs).to_dict()


def record_suites(
    suites: Sequence[str],
    task_ids: Sequence[int],
    episodes_per_task: int,
    staging_dir: str,
    seed: int = 0,
    workers: int = 2,
    max_attempts_factor: int = 3,
    render: bool = True,
) -> dict[str, RecordStats]:
    """:func:`record_demos` for several suites, one ``spawn`` worker process per suite.

    Files go to ``<staging_dir>/<suite>/``. Returns suite -> :class:`RecordStats`.

    Raises:
        whatever a worker raised (re-raised here); ``BrokenProcessPool`` when a worker died.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    out: dict[str, RecordStats] = {}
    bar = progress(len(suites), "recording demonstrations", "suite")
    with bar, concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(suites)), mp_context=ctx) as pool:
        futures = {
            pool.submit(
                _record_worker,
                dict(suite=suite, task_ids=list(task_ids), episodes_per_task=episodes_per_task,
                     staging_dir=os.path.join(staging_dir, suite), seed=seed, max_attempts_factor=max_attempts_factor,
                     render=render),
                level,
            ): suite
            for suite in suites
        }
        for future in concurrent.futures.as_completed(futures):
            out[futures[future]] = RecordStats.from_dict(future.result())
            bar.set_postfix(last=futures[future])
            bar.update(1)
    return {suite: out[suite] for suite in suites}


def iter_staged_episodes(files: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Load staged episodes one at a time (for ``write_rlds``, which streams them)."""
    for path in files:
        yield load_episode(path)


# ---------------------------------------------------------------------------------------------- datasets
def _dataset_ready(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_info.json"))


def record_datasets(
    suites: Sequence[str],
    task_ids: Sequence[int],
    episodes_per_task: int,
    data_dir: str,
    seed: int = DEMO_SEED,
    workers: int = 2,
    max_attempts_factor: int = 3,
    overwrite: bool = False,
) -> dict[str, str]:
    """Record the ``<suite>_no_noops`` RLDS datasets of ``suites`` under ``data_dir``; return name -> path.

    Datasets that exist (``<data_dir>/<name>/1.0.0/dataset_info.json``) are kept unless
    ``overwrite``. Each written dataset gets a ``recording.json`` in its version folder (settings,
    :class:`RecordStats`, simulator versions). Says each suite's expert success rate on the console (:func:`vlamix.core.console.say`).

    Raises:
        ValueError: unknown suite; RuntimeError: a suite yielded no successful episode.
    """
    for suite in suites:
        if suite not in SUITE_MAX_STEPS:
            raise ValueError(f"unknown LIBERO task suite '{suite}'; allowed: {', '.join(SUITE_MAX_STEPS)}")
    data_dir = os.path.abspath(data_dir)
    names = {suite: f"{suite}_no_noops" for suite in suites}
    paths = {names[s]: os.path.join(data_dir, names[s], RLDS_VERSION) for s in suites}
    todo = [s for s in suites if overwrite or not _dataset_ready(paths[names[s]])]
    replace = {s: overwrite or os.path.exists(paths[names[s]]) for s in todo}
    for s in suites:
        if s not in todo:
            logger.info("reusing RLDS dataset %s", paths[names[s]])
        elif replace[s] and not overwrite:
            logger.warning("%s has no dataset_info.json (interrupted write?); recording it again", paths[names[s]])
    if not todo:
        return paths
    os.makedirs(data_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".vlamix-demos-staging-", dir=data_dir)
    try:
        all_stats = record_suites(todo, task_ids, episodes_per_task, staging, seed=seed, workers=workers,
                                  max_attempts_factor=max_attempts_factor)
        for stats in all_stats.values():
            say("%s", stats.summary())
        if len(all_stats) > 1:
            attempts = sum(st.attempts for st in all_stats.values())
            successes = sum(st.successes for st in all_stats.values())
            say("all suites: expert success rate %d/%d = %.1f%%", successes, attempts, 100 * successes / max(attempts, 1))
        for suite, stats in all_stats.items():
            if not stats.files:
                raise RuntimeError(f"{suite}: the scripted expert recorded no successful episode ({stats.summary()})")
        versions = simulator_versions()
        for suite, stats in all_stats.items():
            name = names[suite]
            record = {
                "dataset": name,
                "suite": suite,
                "task_ids": list(map(int, task_ids)),
                "episodes_per_task": episodes_per_task,
                "seed": seed,
                "max_attempts_factor": max_attempts_factor,
                "noop_threshold": NOOP_THRESHOLD,
                "num_steps_wait": NUM_STEPS_WAIT,
                "max_steps": SUITE_MAX_STEPS[suite],
                "simulator_versions": versions,
                "stats": {k: v for k, v in stats.to_dict().items() if k != "files"},
            }
            # recording.json goes in before the dataset is renamed into place: a kill never leaves one without it
            path = write_rlds(iter_staged_episodes(stats.files), data_dir, name, overwrite=replace[suite],
                              description=f"{name}: scripted-expert LIBERO demonstrations (vlamix.sim.record)",
                              extra_json={RECORDING_JSON: record})
            paths[name] = path
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def ensure_demo_datasets(data: DataConfig) -> dict[str, str]:
    """Make sure every dataset with non-zero mixture weight exists; record the missing ones.

    With ``data.demos == "scripted"``, a missing ``<data.data_dir>/<name>/1.0.0`` (no
    ``dataset_info.json``) is recorded with the
    scripted expert: the first ``data.demo_tasks`` supported tasks of the dataset's suite
    (:func:`vlamix.sim.expert.scripted_task_ids`; tasks ``0 .. demo_tasks - 1`` for spatial / object),
    ``data.demo_episodes_per_task`` successful episodes each, seed :data:`DEMO_SEED`, one spawn
    worker per suite (at most 2). Existing datasets are reused as they are; if one carries a
    ``recording.json`` with other task / episode counts, that is an error (delete it to re-record).

    Args:
        data: the point's :class:`vlamix.data.settings.DataConfig`.
    Returns:
        dataset name -> absolute path of its version folder, in mixture order.
    Raises:
        vlamix.core.errors.ConfigError: a dataset is missing and ``data.demos == "none"``, or an existing
            scripted dataset was recorded with other ``demo_tasks`` / ``demo_episodes_per_task``.
    """
    names = data.selected_datasets()
    missing = []
    for name in names:
        path = data.dataset_path(name)
        if not _dataset_ready(path):
            if data.demos != "scripted":
                raise data.missing_dataset_error(name)
            missing.append(name)
            continue
        recording = os.path.join(path, RECORDING_JSON)
        if data.demos == "scripted" and os.path.isfile(recording):
            with open(recording) as f:
                rec = json.load(f)
            if len(rec.get("task_ids", [])) != data.demo_tasks:
                raise ConfigError("demo_tasks", f"dataset {path} was recorded with {len(rec['task_ids'])} tasks, "
                                  f"not {data.demo_tasks}; delete it to record it again")
            if rec.get("episodes_per_task") != data.demo_episodes_per_task:
                raise ConfigError("demo_episodes_per_task", f"dataset {path} was recorded with "
                                  f"{rec.get('episodes_per_task')} episodes per task, not {data.demo_episodes_per_task}; "
                                  "delete it to record it again")
    if missing:
        logger.info("recording scripted-expert demonstrations for %s", ", ".join(missing))
        # suites with the same supported task ids share one call (one spawn worker per suite)
        groups: dict[tuple[int, ...], list[str]] = {}
        for name in missing:
            suite = DATASET_TO_SUITE[name]
            try:
                ids = tuple(scripted_task_ids(suite, data.demo_tasks))
            except ValueError as err:
                raise ConfigError("demo_tasks", str(err)) from err
            groups.setdefault(ids, []).append(suite)
        for ids, suites in groups.items():
            record_datasets(suites, list(ids), data.demo_episodes_per_task, data.data_dir, seed=DEMO_SEED, workers=2)
    return {name: data.dataset_path(name) for name in names}


# ---------------------------------------------------------------------------------------------- CLI
def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from err
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``vlamix record-demos``."""
    parser.add_argument("--suites", nargs="+", default=["libero_spatial", "libero_object"],
                        choices=list(SUITE_MAX_STEPS), help="LIBERO task suites (one dataset <suite>_no_noops each)")
    parser.add_argument("--tasks", type=_int_at_least(1), default=2, help="record tasks 0..N-1 of each suite")
    parser.add_argument("--task-ids", type=_int_at_least(0), nargs="+", default=None,
                        help="explicit task ids (overrides --tasks)")
    parser.add_argument("--episodes", type=_int_at_least(1), default=4, help="successful episodes per task")
    parser.add_argument("--data-dir", default="workspace/data/libero_rlds", help="folder of the RLDS datasets")
    parser.add_argument("--seed", type=_int_at_least(0), default=DEMO_SEED, help="seed of start states and expert jitter")
    parser.add_argument("--workers", type=_int_at_least(1), default=2, help="recording processes (one suite each)")
    parser.add_argument("--max-attempts-factor", type=_int_at_least(1), default=3,
                        help="at most episodes x this expert attempts per task")
    parser.add_argument("--overwrite", action="store_true", help="record again even if a dataset exists")
    parser.add_argument("--check-only", action="store_true",
                        help="only measure the expert: exactly --episodes attempts per task, physics only, nothing written")


def run(args: argparse.Namespace) -> int:
    """Run ``vlamix record-demos`` with parsed ``args``; print the datasets' paths. Returns 0."""
    task_ids = args.task_ids if args.task_ids is not None else list(range(args.tasks))
    if args.check_only:
        with tempfile.TemporaryDirectory() as staging:
            stats = record_suites(args.suites, task_ids, args.episodes, staging, seed=args.seed, workers=args.workers,
                                  max_attempts_factor=1, render=False)
        for st in stats.values():
            for task_id, task in st.per_task.items():
                print(f"{st.suite} task {task_id}: {task['successes']}/{task['attempts']} | {task['instruction']}")
            print(f"{st.suite}: expert success rate {st.successes}/{st.attempts} = {100 * st.success_rate:.1f}% "
                  f"({st.rejected_starts} start states rejected), {st.sim_seconds:.0f} s physics, nothing recorded")
        total = sum(st.successes for st in stats.values()), sum(st.attempts for st in stats.values())
        print(f"all suites: expert success rate {total[0]}/{total[1]}")
        return 0
    paths = record_datasets(args.suites, task_ids, args.episodes, args.data_dir, seed=args.seed, workers=args.workers,
                            max_attempts_factor=args.max_attempts_factor, overwrite=args.overwrite)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vlamix.sim.record`` / ``vlamix record-demos``."""
    parser = argparse.ArgumentParser(prog="vlamix record-demos", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
