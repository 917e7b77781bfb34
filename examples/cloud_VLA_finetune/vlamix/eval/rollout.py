"""LIBERO rollout evaluation in parallel ``spawn`` worker processes, streamed to JSONL.

Protocol (openvla/openvla ``experiments/robot/libero/run_libero_eval.py``), per episode:

1. ``env.reset()``, then ``env.set_init_state(init_states[k])``: episode ``k`` of a task starts
   from the suite's fixed init state ``k``;
2. ``num_steps_wait`` (10) steps of the dummy action (no motion, gripper open) so objects settle;
   a success during these steps is not counted;
3. up to ``max_steps`` policy steps (the suite's limit, :data:`vlamix.constants.SUITE_MAX_STEPS`):
   agent-view camera (256 px, rotated 180 degrees) -> :func:`vlamix.eval.image.preprocess_image`
   -> ``policy.act`` -> gripper post-processing (:func:`model_to_env_action`) -> ``env.step``;
4. success = the environment's ``done`` flag; the episode ends at the first success.

An exception inside an episode ends it as a failure (as the reference does) and is recorded in the
row's ``error`` field and logged loudly.

Processes: every worker is started with ``multiprocessing.get_context("spawn")``, imports no
TensorFlow (a MuJoCo EGL context in a process that has TensorFlow loaded segfaults), builds its
own policy from the picklable factory (or checkpoint path), reuses one environment per task and
renders only the agent-view camera. The parent process only plans, schedules and writes rows, so
it may have TensorFlow loaded. Beware: ``spawn`` re-imports the parent's ``__main__`` module in
each worker; a script that imports TensorFlow at module level makes every worker fail with a
clear error (import it inside a function instead).

Output: one JSON line per episode in ``out_jsonl`` with ``suite, task_id, instruction,
episode_index, init_state_index, success, steps, seed, max_steps, num_steps_wait, error, wall_s,
policy_s, sim_s, versions`` (see :func:`run_episode`), and a side file ``<out_jsonl stem>.meta.json``
with one record per :func:`evaluate` call (settings, wall seconds, simulator versions). Episodes
whose (suite, task_id, episode_index) already have a row are not run again.

Usage::

    from vlamix.eval.rollout import evaluate, plan_episodes
    specs = plan_episodes(["libero_spatial"], tasks=2, trials_per_task=5)
    rows = evaluate("workspace/ckpt", specs, workers=2, out_jsonl="workspace/ckpt/eval/episodes.jsonl")
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import queue
import random
import sys
import time
import traceback
from collections import deque
from dataclasses import asdict
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlamix.constants import ACTION_DIM, LIBERO_SUITES, NUM_STEPS_WAIT, RLDS_IMAGE_SIZE, SUITE_MAX_STEPS
from vlamix.eval.image import MODEL_IMAGE_SIZE, preprocess_image
from vlamix.eval.plan import EpisodeSpec, plan_episodes  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

#: Fields of every episode row, in write order.
ROW_FIELDS = (
    "suite", "task_id", "instruction", "episode_index", "init_state_index", "success", "steps", "seed",
    "max_steps", "num_steps_wait", "policy_options", "error", "wall_s", "policy_s", "sim_s", "versions",
)
#: Row fields that must equal the requested settings for a stored row to be reused.
SETTING_FIELDS = ("max_steps", "num_steps_wait", "seed", "policy_options")
#: Seconds between liveness checks of the worker processes.
_POLL_S = 2.0


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


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's RNGs (LIBERO's ``env.seed`` is ``np.random.seed``)."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def run_episode(
    env: Any,
    policy: Any,
    spec: EpisodeSpec,
    init_state: np.ndarray,
    max_steps: int,
    num_steps_wait: int = NUM_STEPS_WAIT,
    seed: int = 7,
    image_size: int = MODEL_IMAGE_SIZE,
    policy_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one episode of the reference protocol in an existing environment.

    Call only in a process that never imports TensorFlow.

    Args:
        env: LIBERO ``OffScreenRenderEnv`` of the spec's task rendering the agent view.
        policy: object with ``act(images uint8 [1, S, S, 3], [instruction], suite) -> float [1, 7]``.
        spec: the episode.
        init_state: float64 [state_dim] MuJoCo state (the suite's init state ``spec.init_state_index``).
        max_steps: policy steps before the episode is a failure.
        num_steps_wait: dummy-action steps first.
        seed: RNGs are re-seeded with it before ``env.reset()``, so an episode does not depend on
            which worker runs it or what ran before.
        image_size: model input side (224).
        policy_options: recorded in the row (the policy settings that change results).
    Returns:
        row dict: the spec's fields, ``success`` (bool), ``steps`` (policy steps executed, the
        successful one included), ``seed``, ``max_steps``, ``num_steps_wait``, ``error`` (None or
        "ExceptionType: message"), ``wall_s`` (episode wall seconds), ``policy_s`` (seconds in
        ``policy.act``), ``sim_s`` (seconds in ``env.step`` incl. rendering, wait steps included).
    """
    from vlamix.sim.libero_env import AGENTVIEW, camera_image, dummy_action

    start = time.perf_counter()
    row: dict[str, Any] = {**asdict(spec), "success": False, "steps": 0, "seed": int(seed),
                           "max_steps": int(max_steps), "num_steps_wait": int(num_steps_wait),
                           "policy_options": policy_options, "error": None}
    policy_s = sim_s = 0.0
    try:
        seed_everything(seed)
        env.seed(seed)
        env.reset()
        obs = env.set_init_state(init_state)
        for _ in range(num_steps_wait):
            t0 = time.perf_counter()
            obs, _, _, _ = env.step(dummy_action())
            sim_s += time.perf_counter() - t0
        for _ in range(max_steps):
            image = preprocess_image(camera_image(obs, AGENTVIEW), size=image_size)
            t0 = time.perf_counter()
            action = np.asarray(policy.act(image[None], [spec.instruction], spec.suite))
            policy_s += time.perf_counter() - t0
            if action.shape != (1, ACTION_DIM) or not np.all(np.isfinite(action)):
                raise ValueError(f"policy returned {action.dtype} {list(action.shape)} (finite: "
                                 f"{bool(np.all(np.isfinite(action)))}), expected finite float [1, {ACTION_DIM}]")
            t0 = time.perf_counter()
            obs, _, done, _ = env.step(model_to_env_action(action[0]).tolist())
            sim_s += time.perf_counter() - t0
            row["steps"] += 1
            if done:
                row["success"] = True
                break
    except Exception as err:  # recorded as a failed episode, as the reference eval does
        row["error"] = f"{type(err).__name__}: {err}"
        row["success"] = False
        logger.error("episode %s failed with an error (counted as a failure):\n%s", spec.key, traceback.format_exc())
    row["wall_s"] = round(time.perf_counter() - start, 4)
    row["policy_s"] = round(policy_s, 4)
    row["sim_s"] = round(sim_s, 4)
    return row


# ---------------------------------------------------------------------------------------------- workers
def _worker_main(wid: int, policy_factory: Callable[[], Any], inbox, outbox, settings: dict[str, Any]) -> None:
    """Body of a rollout worker process (started with ``spawn``)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        if "tensorflow" in sys.modules:
            raise RuntimeError(
                "TensorFlow is imported in a rollout worker before any rendering (MuJoCo EGL rendering would "
                "segfault). spawn workers re-import the parent's __main__ module: move TensorFlow imports of "
                f"{getattr(sys.modules.get('__mp_main__'), '__file__', 'the main script')} into functions"
            )
        import torch

        torch.set_num_threads(settings["torch_threads"])
        seed_everything(settings["seed"])  # same weights in every worker if the factory draws random numbers
        policy = policy_factory()
        if not callable(getattr(policy, "act", None)):
            raise TypeError(f"the policy factory returned {type(policy).__name__}, which has no act() method")
        if "tensorflow" in sys.modules:
            raise RuntimeError("building the policy imported TensorFlow; rollout workers must not import it")
        if hasattr(policy, "unnorm_key_for"):
            for suite in settings["suites"]:
                policy.unnorm_key_for(suite)  # fail before any episode when the key is missing
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        outbox.put(("fatal", wid, traceback.format_exc()))
        return
    outbox.put(("ready", wid, None))

    from vlamix.sim import libero_env

    env, env_task, states = None, None, None
    try:
        while True:
            chunk = inbox.get()
            if chunk is None:
                break
            for spec in chunk:
                task = (spec.suite, spec.task_id)
                try:
                    if env_task != task:
                        _close_env(env)
                        env, env_task = None, None
                        info = libero_env.task_info(spec.suite, spec.task_id)
                        states = libero_env.init_states(spec.suite, spec.task_id)
                        env = libero_env.make_env(info, resolution=settings["resolution"],
                                                  cameras=(libero_env.AGENTVIEW,), seed=settings["seed"])
                        env_task = task
                    max_steps = settings["max_steps"] or SUITE_MAX_STEPS[spec.suite]
                    row = run_episode(env, policy, spec, states[spec.init_state_index], max_steps,
                                      settings["num_steps_wait"], settings["seed"],
                                      policy_options=settings["policy_options"])
                except Exception as err:  # env construction failed: a failed episode, as in the reference
                    row = _error_row(spec, settings, f"{type(err).__name__}: {err}")
                    logger.error("episode %s: environment failed:\n%s", spec.key, traceback.format_exc())
                if row["error"] is not None and env is not None:
                    _close_env(env)  # rebuild the env after an error; its state is unknown
                    env, env_task = None, None
                outbox.put(("row", wid, row))
            outbox.put(("idle", wid, None))
    finally:
        _close_env(env)


def _close_env(env: Any) -> None:
    if env is None:
        return
    try:
        env.close()
    except Exception:  # noqa: BLE001 - a failing close must not kill the worker
        logger.warning("closing a LIBERO environment failed:\n%s", traceback.format_exc())


def _make_chunks(specs: Sequence[EpisodeSpec], workers: int) -> list[list[EpisodeSpec]]:
    """Split episodes into per-task chunks of at most ceil(n / (4 workers)) episodes (env reuse vs balance)."""
    size = max(1, math.ceil(len(specs) / (4 * workers)))
    by_task: dict[tuple[str, int], list[EpisodeSpec]] = {}
    for spec in specs:
        by_task.setdefault((spec.suite, spec.task_id), []).append(spec)
    return [eps[i:i + size] for eps in by_task.values() for i in range(0, len(eps), size)]


def _read_all_rows(path: str) -> list[dict[str, Any]]:
    """Every readable row of a JSONL file in file order (unreadable lines skipped with a warning)."""
    rows: list[dict[str, Any]] = []
    if not os.path.isfile(path):
        return rows
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (row["suite"], int(row["task_id"]), int(row["episode_index"]))
            except (ValueError, KeyError, TypeError) as err:
                logger.warning("%s:%d: skipping unreadable episode row (%s)", path, lineno, err)
                continue
            row["_key"] = key
            rows.append(row)
    return rows


def read_rows(path: str) -> list[dict[str, Any]]:
    """Episode rows of a JSONL file; for an episode stored more than once the last row wins.

    A file may hold rows of runs with different settings (``max_steps``, ``seed``, ...);
    :func:`evaluate` returns only the rows matching its settings. Unreadable lines (e.g. a line cut
    by a crash) are skipped with a warning. Returns [] when the file does not exist.
    """
    rows: dict[Any, dict[str, Any]] = {}
    for row in _read_all_rows(path):
        key = row.pop("_key")
        rows.pop(key, None)
        rows[key] = row
    return list(rows.values())


def meta_path(out_jsonl: str) -> str:
    """Side file of an episodes JSONL: ``episodes.jsonl`` -> ``episodes.meta.json``."""
    return os.path.splitext(out_jsonl)[0] + ".meta.json"


def _policy_factory(policy: Any, policy_kwargs: dict[str, Any]) -> Callable[[], Any]:
    if isinstance(policy, (str, os.PathLike)):
        from vlamix.eval.policy import VLAPolicy

        from vlamix.config import BUILTIN_MODELS

        path = os.fspath(policy)
        if path not in BUILTIN_MODELS:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"checkpoint folder not found: {path!r} (built-in models: {BUILTIN_MODELS})")
            path = os.path.abspath(path)
        return functools.partial(VLAPolicy, path, **policy_kwargs)
    if callable(policy) and (isinstance(policy, type) or not hasattr(policy, "act")):  # a class is a factory
        return policy
    raise TypeError(
        f"policy must be a checkpoint path or a picklable zero-argument factory returning an object with act(), "
        f"got {type(policy).__name__}"
    )


def evaluate(
    policy: str | os.PathLike | Callable[[], Any],
    episodes: Iterable[EpisodeSpec],
    workers: int = 1,
    out_jsonl: str | None = None,
    seed: int = 7,
    max_steps: int | None = None,
    num_steps_wait: int = NUM_STEPS_WAIT,
    center_crop: bool = False,
    unnorm_key: str | None = None,
    device: str = "cpu",
    resolution: int = RLDS_IMAGE_SIZE,
    torch_threads: int | None = None,
    rerun_errors: bool = False,
) -> list[dict[str, Any]]:
    """Roll out ``episodes`` in ``workers`` spawn processes and return one row per episode.

    Args:
        policy: checkpoint folder (each worker builds :class:`vlamix.eval.policy.VLAPolicy` from it)
            or a picklable zero-argument factory (module-level function/class or
            ``functools.partial``) returning an object with ``act`` (:class:`vlamix.eval.policy.Policy`).
        episodes: from :func:`plan_episodes`; keys (suite, task_id, episode_index) must be unique.
        workers: processes (>= 1); fewer are started when there are fewer chunks of work.
        out_jsonl: rows are appended here as they finish (None: not written). Episodes that already
            have a row in it with the same settings (:data:`SETTING_FIELDS`: max_steps,
            num_steps_wait, seed, policy options) are not run again; their stored row is returned.
            Rows of other settings stay in the file but are not reused.
        seed: per-episode RNG seed (see :func:`run_episode`) and env seed.
        max_steps: policy-step limit for every suite (None: :data:`SUITE_MAX_STEPS` of each suite).
        num_steps_wait: dummy-action steps before the policy acts (reference: 10).
        center_crop, unnorm_key, device: :class:`VLAPolicy` options (checkpoint paths only).
        resolution: camera resolution in pixels (reference: 256).
        torch_threads: torch threads per worker (default: CPU count // workers, at least 1).
        rerun_errors: run again the episodes whose stored row has an ``error``.
    Returns:
        rows (dicts, see :func:`run_episode`, plus ``versions``) in the order of ``episodes``.
    Raises:
        ValueError: invalid arguments or duplicate episodes; TypeError: a bad ``policy``;
        FileNotFoundError: a checkpoint path that is not a folder (checked before any worker starts);
        RuntimeError: a worker could not build its policy (the worker's traceback is included) or
        workers kept dying at start-up.
    """
    from vlamix.sim.libero_env import simulator_versions

    specs = list(episodes)
    for name, value, minimum in (("workers", workers, 1), ("seed", seed, 0), ("num_steps_wait", num_steps_wait, 0),
                                 ("resolution", resolution, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an integer >= 1, got {max_steps!r}")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("episodes: the same (suite, task_id, episode_index) appears more than once")
    for spec in specs:
        if spec.suite not in SUITE_MAX_STEPS:
            raise ValueError(f"episodes: unknown LIBERO task suite {spec.suite!r}; allowed: {', '.join(LIBERO_SUITES)}")
    policy_kwargs = {}
    if isinstance(policy, (str, os.PathLike)):
        policy_kwargs = {"device": device, "unnorm_key": unnorm_key, "center_crop": center_crop}
    elif center_crop or unnorm_key is not None or device != "cpu":
        raise ValueError("center_crop, unnorm_key and device apply to checkpoint paths only, not to a policy factory")
    factory = _policy_factory(policy, policy_kwargs)

    policy_options = ({"center_crop": center_crop, "unnorm_key": unnorm_key}
                      if isinstance(policy, (str, os.PathLike)) else None)

    def wanted_settings(suite: str) -> dict[str, Any]:
        return {"max_steps": max_steps or SUITE_MAX_STEPS[suite], "num_steps_wait": num_steps_wait, "seed": seed,
                "policy_options": policy_options}

    done: dict[tuple[str, int, int], dict[str, Any]] = {}
    if out_jsonl is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out_jsonl)), exist_ok=True)
        wanted = set(keys)
        n_other = 0
        for row in _read_all_rows(out_jsonl):
            key = row.pop("_key")
            if key not in wanted or (rerun_errors and row.get("error")):
                continue
            expected = wanted_settings(key[0])
            if all(row.get(f) == v for f, v in expected.items()):
                done[key] = row  # the last matching row wins
            else:
                n_other += 1
        if n_other:
            logger.warning("%s holds %d rows of these episodes with other settings (%s); they are not reused",
                           out_jsonl, n_other, ", ".join(SETTING_FIELDS))
    todo = [s for s in specs if s.key not in done]
    if done:
        logger.info("resuming: %d of %d episodes already in %s", len(done), len(specs), out_jsonl)

    versions = simulator_versions()
    started = time.time()
    if todo:
        threads = torch_threads or max(1, (os.cpu_count() or 1) // workers)
        settings = {"seed": seed, "max_steps": max_steps, "num_steps_wait": num_steps_wait, "resolution": resolution,
                    "torch_threads": int(threads), "suites": sorted({s.suite for s in todo}),
                    "policy_options": policy_options}
        new_rows = _run_workers(factory, todo, workers, settings, out_jsonl, versions)
        done.update(new_rows)
    wall = time.time() - started
    if out_jsonl is not None:
        _append_meta(out_jsonl, {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), "wall_s": round(wall, 3),
            "policy": os.fspath(policy) if isinstance(policy, (str, os.PathLike)) else repr(policy),
            "policy_kwargs": policy_kwargs, "workers": workers, "seed": seed, "max_steps": max_steps,
            "num_steps_wait": num_steps_wait, "resolution": resolution, "n_episodes": len(specs),
            "n_run": len(todo), "n_resumed": len(specs) - len(todo), "versions": versions,
        })
    n_succ = sum(bool(done[k]["success"]) for k in keys)
    logger.info("evaluated %d episodes (%d run now) in %.1f s: %d successes", len(specs), len(todo), wall, n_succ)
    return [done[k] for k in keys]


def _append_meta(out_jsonl: str, record: dict[str, Any]) -> None:
    path = meta_path(out_jsonl)
    runs: list[Any] = []
    if os.path.isfile(path):
        try:
            with open(path) as fh:
                runs = json.load(fh).get("runs", [])
        except (ValueError, AttributeError) as err:
            logger.warning("could not read %s (%s); starting a new run list", path, err)
    runs.append(record)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"runs": runs}, fh, indent=2, default=str)
    os.replace(tmp, path)


def _error_row(spec: EpisodeSpec, settings: dict[str, Any], error: str) -> dict[str, Any]:
    return {**asdict(spec), "success": False, "steps": 0, "seed": settings["seed"],
            "max_steps": settings["max_steps"] or SUITE_MAX_STEPS[spec.suite],
            "num_steps_wait": settings["num_steps_wait"], "policy_options": settings["policy_options"],
            "error": error, "wall_s": 0.0, "policy_s": 0.0, "sim_s": 0.0}


def _run_workers(
    factory: Callable[[], Any],
    todo: list[EpisodeSpec],
    workers: int,
    settings: dict[str, Any],
    out_jsonl: str | None,
    versions: dict[str, str],
) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Schedule chunks on spawn workers, write rows as they arrive, replace workers that die."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    pending = deque(_make_chunks(todo, workers))
    n_workers = min(workers, len(pending))
    outbox = ctx.Queue()
    procs: dict[int, Any] = {}
    inboxes: dict[int, Any] = {}
    assigned: dict[int, list[EpisodeSpec]] = {}
    ready: set[int] = set()
    finished: set[int] = set()
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    next_wid = 0
    restarts_left = len(todo)

    def start_worker() -> None:
        nonlocal next_wid
        wid, next_wid = next_wid, next_wid + 1
        inboxes[wid] = ctx.Queue()
        proc = ctx.Process(target=_worker_main, args=(wid, factory, inboxes[wid], outbox, settings),
                           name=f"vlamix-rollout-{wid}", daemon=True)
        proc.start()
        procs[wid] = proc
        logger.info("started rollout worker %d (pid %d)", wid, proc.pid)

    def give_work(wid: int) -> None:
        if pending:
            assigned[wid] = list(pending.popleft())
            inboxes[wid].put(assigned[wid])
        else:
            assigned.pop(wid, None)
            inboxes[wid].put(None)
            finished.add(wid)

    def handle(msg: tuple) -> None:
        kind, wid, payload = msg
        if kind == "fatal":
            raise RuntimeError(f"rollout worker {wid} could not start its policy:\n{payload}")
        if kind in ("ready", "idle"):
            ready.add(wid)
            give_work(wid)
        elif kind == "row":
            row = {k: payload.get(k) for k in ROW_FIELDS}
            row["versions"] = versions
            key = (row["suite"], row["task_id"], row["episode_index"])
            results[key] = row
            remaining = assigned.get(wid, [])
            assigned[wid] = [s for s in remaining if s.key != key]
            if out_jsonl is not None:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            if row["error"]:
                logger.error("episode %s/%d #%d FAILED WITH ERROR (counted as a failure): %s",
                             row["suite"], row["task_id"], row["episode_index"], row["error"])
            logger.info("[%d/%d] %s task %d episode %d: success=%s steps=%d (%.1f s)", len(results), len(todo),
                        row["suite"], row["task_id"], row["episode_index"], row["success"], row["steps"], row["wall_s"])

    def drain() -> None:
        while True:
            try:
                handle(outbox.get(timeout=0.2))
            except queue.Empty:
                return

    fh = open(out_jsonl, "a") if out_jsonl is not None else None
    completed = False
    try:
        for _ in range(n_workers):
            start_worker()
        last_check = time.monotonic()
        while len(results) < len(todo):
            try:
                handle(outbox.get(timeout=_POLL_S))
            except queue.Empty:
                pass
            if time.monotonic() - last_check < _POLL_S:
                continue
            last_check = time.monotonic()
            for wid, proc in list(procs.items()):
                if proc.is_alive() or wid in finished:
                    continue
                drain()  # rows it sent before dying
                if wid in finished:
                    continue
                lost = assigned.pop(wid, [])
                del procs[wid]
                if wid not in ready:
                    raise RuntimeError(f"rollout worker {wid} died during start-up (exit code {proc.exitcode}); its "
                                       "traceback, if any, is on stderr (is the policy factory importable by name?)")
                if lost:
                    logger.error("rollout worker %d died (exit code %s) during episode %s; recording it as a failure",
                                 wid, proc.exitcode, lost[0].key)
                    handle(("row", wid, _error_row(lost[0], settings, f"WorkerDied: exit code {proc.exitcode}")))
                    if lost[1:]:
                        pending.appendleft(lost[1:])
                if pending and restarts_left > 0:
                    restarts_left -= 1
                    start_worker()
            if len(results) < len(todo) and all(wid in finished for wid in procs):
                missing = [s.key for s in todo if s.key not in results]
                raise RuntimeError(f"rollout workers exited with {len(missing)} episodes left, e.g. {missing[:3]}")
        completed = True
    finally:
        for wid, proc in procs.items():
            if not completed and proc.is_alive():
                proc.terminate()  # an error or interrupt: do not wait for running episodes
            elif proc.is_alive() and wid not in finished:
                inboxes[wid].put(None)
        for proc in procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                logger.warning("terminating rollout worker pid %d", proc.pid)
                proc.terminate()
                proc.join(timeout=10)
        if fh is not None:
            fh.close()
    return results


def evaluate_checkpoint(
    checkpoint: str,
    suites: str | Sequence[str],
    tasks: int | Sequence[int] | None = None,
    trials_per_task: int = 1,
    out_jsonl: str | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """:func:`plan_episodes` then :func:`evaluate` of a checkpoint folder; ``kwargs`` go to :func:`evaluate`."""
    return evaluate(checkpoint, plan_episodes(suites, tasks, trials_per_task), out_jsonl=out_jsonl, **kwargs)
