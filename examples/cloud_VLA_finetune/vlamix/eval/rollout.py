"""LIBERO rollout evaluation: plan -> env workers + one batched policy -> resumable JSONL rows.

Protocol (openvla/openvla ``experiments/robot/libero/run_libero_eval.py``), per episode: re-seed,
``env.reset()``, init state ``k`` of the task for trial ``k``, ``num_steps_wait`` (10) dummy-action
steps, then up to the suite's step limit (:func:`vlamix.core.suites.suite_max_steps`) policy steps:
agent-view camera (256 px, rotated 180 degrees) -> :func:`vlamix.eval.image.preprocess_image`
-> policy -> gripper post-processing (:func:`model_to_env_action`) -> ``env.step``; success = the
environment's ``done`` flag, the episode ends at the first success. See :mod:`vlamix.eval.envs`.

Runtime (:mod:`vlamix.eval.server`): the policy lives in THIS process (the GPU's); ``workers``
spawned CPU processes step ``envs_per_worker`` LIBERO environments each and render only the agent
view. Each step the images of all running episodes go to the policy as one batch; a slot whose
episode ended takes the next planned episode. Episodes re-seed and slots follow the plan, so rows do
not depend on timing. The parent may have TensorFlow loaded; workers never import it.

Faults: a worker that dies or exceeds ``episode_timeout_s`` is replaced and its in-flight episodes
run again from their init state, up to ``max_attempts``; what still fails is a row with ``error``
set, which :func:`vlamix.eval.stats.summarize` counts in ``n_errors`` and not in the success rate.
Ctrl-C / SIGTERM stop the run; every finished row is already on disk.

Output: one JSON line per episode in ``out_jsonl`` (see :func:`evaluate` for the fields), and a side
file ``<out_jsonl stem>.meta.json`` with one record per :func:`evaluate` call. Episodes that already
have a row with the same settings (:data:`SETTING_FIELDS`, the device type and dtype included) are
not run again.

Usage::

    from vlamix.eval.rollout import evaluate, plan_episodes
    specs = plan_episodes(["libero_spatial"], tasks=2, trials_per_task=5)
    rows = evaluate("workspace/ckpt", specs, workers=2, envs_per_worker=4, device="auto",
                    out_jsonl="workspace/ckpt/eval/episodes.jsonl", videos="failures")
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vlamix.core.console import progress as progress_display
from vlamix.core.constants import NUM_STEPS_WAIT, RLDS_IMAGE_SIZE
from vlamix.eval.envs import make_libero_slot, model_to_env_action, seed_everything  # noqa: F401  (re-exported)
from vlamix.eval.image import MODEL_IMAGE_SIZE
from vlamix.eval.plan import EpisodeSpec, plan_episodes  # noqa: F401  (re-exported)
from vlamix.core.suites import suite_max_steps
from vlamix.eval.policy import VLAPolicy, dtype_name, resolve_device
from vlamix.eval.server import BatchedRollout, call_policy
from vlamix.eval.settings import RolloutConfig
from vlamix.model.settings import BUILTIN_MODELS
from vlamix.sim.libero_env import simulator_versions
from vlamix.core.io import atomic_write_json

logger = logging.getLogger(__name__)

#: Fields of every episode row, in write order (plus the EpisodeSpec's own fields first).
ROW_FIELDS = (
    "suite", "task_id", "instruction", "episode_index", "init_state_index", "episode_key", "success", "steps",
    "action_digest", "seed", "max_steps", "num_steps_wait", "policy_options", "device", "dtype", "unnorm_key", "batch_size",
    "policy_batch", "env_slots", "open_loop_steps", "policy_queries", "attempts", "error", "video", "wall_s",
    "policy_s", "sim_s", "physics_s", "render_s", "preprocess_s", "renders", "versions",
)
#: Row fields that must equal the requested settings for a stored row to be reused ("device" is
#: compared by device type: a row from cuda:0 is reused on cuda:1, not on the CPU).
SETTING_FIELDS = ("max_steps", "num_steps_wait", "seed", "policy_options", "device", "dtype", "open_loop_steps")


def _device_type(device: Any) -> Any:
    return device.split(":")[0] if isinstance(device, str) else device


def run_episode(slot: Any, policy: Any, spec: EpisodeSpec, max_steps: int) -> dict[str, Any]:
    """The batch-1 loop in one process: run one episode with ``policy`` called on one image per step.

    The reference loop, used by the benchmark as baseline; :func:`evaluate` runs the same protocol
    batched over env workers. Call only in a process that never imports TensorFlow.

    Args:
        slot: env slot, e.g. :class:`vlamix.eval.envs.LiberoSlot` (``begin(spec) -> image``,
            ``step(action) -> (image, done)``, optional ``state``: the privileged observation).
        policy: ``act(images uint8 [1, S, S, 3], [instruction], suite) -> float [1, 7]``, called through
            :func:`vlamix.eval.server.call_policy` as the batched evaluator calls it (``variants``, ``states``).
        spec: the episode. max_steps: policy steps before the episode is a failure.
    Returns:
        dict with ``success`` (bool), ``steps`` (int), ``action_digest`` (as in :func:`evaluate`),
        ``error`` (None or "Type: message"),
        ``wall_s``, ``policy_s``, ``physics_s``, ``render_s``, ``preprocess_s`` (seconds).
    """
    start = time.perf_counter()
    row: dict[str, Any] = {"key": list(spec.key), "success": False, "steps": 0, "error": None}
    digest = hashlib.sha1()
    policy_s = 0.0
    try:
        image = slot.begin(spec)
        for _ in range(max_steps):
            t0 = time.perf_counter()
            action = call_policy(policy, image[None], [spec], [getattr(slot, "state", None)])
            policy_s += time.perf_counter() - t0
            digest.update(action[0].astype(np.float32).tobytes())
            image, done = slot.step(action[0])
            row["steps"] += 1
            if done:
                row["success"] = True
                break
    except Exception as err:  # noqa: BLE001 - an error row, as evaluate() records it
        row["error"] = f"{type(err).__name__}: {err}"
    row.update(action_digest=digest.hexdigest()[:16], wall_s=time.perf_counter() - start, policy_s=policy_s,
               **{k: float(getattr(slot, k, 0.0)) for k in ("physics_s", "render_s", "preprocess_s")})
    return row


def _row_key(row: dict[str, Any]) -> tuple:
    """An episode row's identity: its ``episode_key`` (= ``EpisodeSpec.key``), else (suite, task_id, episode_index)."""
    if isinstance(row.get("episode_key"), list):
        key = row["episode_key"]
        return (str(key[0]), int(key[1]), int(key[2]), *key[3:])
    return (row["suite"], int(row["task_id"]), int(row["episode_index"]))


def _spec_key(spec: Any) -> tuple:
    key = tuple(spec.key)
    return (str(key[0]), int(key[1]), int(key[2]), *key[3:])


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
                key = _row_key(row)
            except (ValueError, KeyError, TypeError, IndexError) as err:
                logger.warning("%s:%d: skipping unreadable episode row (%s)", path, lineno, err)
                continue
            row["_key"] = key
            rows.append(row)
    return rows


def read_rows(path: str) -> list[dict[str, Any]]:
    """Episode rows of a JSONL file; for an episode stored more than once the last row wins.

    A file may hold rows of runs with different settings (``max_steps``, ``seed``, device, ...);
    :func:`evaluate` returns only the rows matching its settings. Unreadable lines (e.g. a line cut
    by a crash) are skipped with a warning. Returns [] when the file does not exist.
    """
    rows: dict[Any, dict[str, Any]] = {}
    for row in _read_all_rows(path):
        key = row.pop("_key")
        rows.pop(key, None)
        rows[key] = row
    return list(rows.values())


def all_stored(out_jsonl: str, episodes: Iterable[EpisodeSpec]) -> bool:
    """True when every episode of ``episodes`` has a readable row in ``out_jsonl`` (False if the file
    does not exist). Settings are not compared: a row with other :data:`SETTING_FIELDS` (another
    device type or dtype) is run again by :func:`evaluate`."""
    have = {row["_key"] for row in _read_all_rows(out_jsonl)}
    return all(_spec_key(s) in have for s in episodes)


def meta_path(out_jsonl: str) -> str:
    """Side file of an episodes JSONL: ``episodes.jsonl`` -> ``episodes.meta.json``."""
    return os.path.splitext(out_jsonl)[0] + ".meta.json"


def _policy_factory(policy: Any, policy_kwargs: dict[str, Any]) -> Callable[[], Any]:
    if isinstance(policy, (str, os.PathLike)):
        path = os.fspath(policy)
        if path not in BUILTIN_MODELS:
            if not os.path.isdir(path):
                raise FileNotFoundError(f"checkpoint folder not found: {path!r} (built-in models: {BUILTIN_MODELS})")
            path = os.path.abspath(path)
        return functools.partial(VLAPolicy, path, **policy_kwargs)
    if callable(policy) and (isinstance(policy, type) or not hasattr(policy, "act")):  # a class is a factory
        return policy
    raise TypeError(
        f"policy must be a checkpoint path or a zero-argument factory returning an object with act(), "
        f"got {type(policy).__name__}"
    )


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(total: int, initial: int, enabled: bool | None):
    """Episodes done / planned with successes and errors (:func:`vlamix.core.console.progress`)."""
    return progress_display(total, "rollouts", "episodes", initial=initial, enabled=enabled is not False)


def evaluate(
    policy: str | os.PathLike | Callable[[], Any],
    episodes: Iterable[EpisodeSpec],
    rollout: RolloutConfig | None = None,
    *,
    out_jsonl: str | None = None,
    seed: int = 7,
    max_steps: int | None = None,
    num_steps_wait: int = NUM_STEPS_WAIT,
    center_crop: bool | None = None,
    unnorm_key: str | None = None,
    video_dir: str | None = None,
    resolution: int = RLDS_IMAGE_SIZE,
    torch_threads: int | None = None,
    rerun_errors: bool = False,
    progress: bool | None = None,
    slot_factory: Callable[[dict[str, Any]], Any] | None = None,
    stats: dict[str, Any] | None = None,
    policy_cache: dict[Any, Any] | None = None,
    open_loop_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Roll out ``episodes``: env-worker processes, one batched policy here; one row per episode.

    Args:
        policy: checkpoint folder (or built-in model name) loaded here as
            :class:`vlamix.eval.policy.VLAPolicy` on ``eval_device`` in ``eval_dtype`` with LoRA merged, or a
            zero-argument factory returning an object with ``act`` (:class:`vlamix.eval.policy.Policy`).
        episodes: from :func:`plan_episodes`; keys (``spec.key``) must be unique.
        rollout: the runtime (:class:`vlamix.eval.settings.RolloutConfig`; default ``RolloutConfig()``):
            ``eval_workers`` env-worker processes with ``envs_per_worker`` environments each (1 or an even
            number; with one, all slots step in lock-step and the policy batch is up to ``eval_workers`` images;
            with 2 or more, a worker's slots form two equal groups that alternate (double buffering: the policy
            runs on one group's images while the workers step the other group), and the policy batch is up to
            half the slots, :func:`vlamix.eval.server.policy_batch_size`; batch 16 per call = 8 workers x 4
            envs); ``eval_device`` ("auto": CUDA when available, "cpu", "cuda", "cuda:N") and ``eval_dtype``
            ("auto": bf16 on CUDA, fp32 on the CPU; checkpoint paths only); ``eval_episode_timeout_s``
            (seconds of an episode's environment work; None: no limit) and ``eval_max_attempts`` (runs of an
            episode after worker deaths, timeouts or env errors before its row records the error);
            ``eval_videos`` ("none" | "failures" | "all": MP4s of the policy camera, at most
            ``eval_videos_per_task`` per task, in ``video_dir``, default ``<out_jsonl folder>/videos``).
        out_jsonl: rows are appended here as they finish (None: not written). Episodes that already
            have a row with the same settings (:data:`SETTING_FIELDS`) are not run again.
        seed: per-episode RNG and env seed. max_steps: policy-step limit for every suite (None: the
            suite's reference limit). num_steps_wait: dummy-action steps first (reference: 10).
        center_crop, unnorm_key: :class:`VLAPolicy` options (checkpoint paths only); ``center_crop`` None
            follows the checkpoint (:func:`vlamix.model.checkpoint.checkpoint_image_aug`: crop a checkpoint trained
            with image augmentation, e.g. official OpenVLA LIBERO folders); rows record the resolved value.
        resolution: camera side in pixels (reference: 256).
        open_loop_steps: actions of each predicted chunk executed before the next observation goes to the
            policy (:class:`vlamix.eval.server.BatchedRollout`); None: the checkpoint's whole chunk
            (:func:`vlamix.model.checkpoint.checkpoint_action_chunk`: 8 for OpenVLA-OFT, 1 for token heads), 1 for a
            policy factory. Rows record it (rows stored before it existed count as 1).
        torch_threads: torch CPU threads of the policy (default: torch's).
        rerun_errors: run again the episodes whose stored row has an ``error``.
        progress: False: no progress display; else a bar on a terminal, a line per quarter elsewhere.
        slot_factory: picklable ``settings -> env slot`` (default: the policy's ``slot_factory`` attribute if it
            has one, e.g. :class:`vlamix.eval.expert_policy.ExpertPolicy`'s slots that run the expert, else
            LIBERO's :func:`vlamix.eval.envs.make_libero_slot`; tests pass fakes).
        policy_cache: a dict the caller keeps between calls (e.g. the rounds of racing): a checkpoint
            policy loaded once with the same path and options is reused instead of being loaded
            again; it holds one policy at a time (clear it to free the model's memory).
        stats: if a dict, filled with run statistics (``policy_s``, ``env_s``, ``rounds``,
            ``restarts``, ``batch_log``, ``assign_log``, ``n_slots``, ``groups``).
    Returns:
        rows in the order of ``episodes``: the spec's fields, ``episode_key`` (list), ``success``
        (bool), ``steps`` (policy steps, the successful one included), ``action_digest`` (16 hex
        digits of the SHA-1 of the float32 model-space actions executed: equal digests = the same
        trajectory), ``seed``, ``max_steps``,
        ``num_steps_wait``, ``policy_options``, ``device`` (e.g. "cuda:0"; None for factories),
        ``dtype`` ("bf16", ...; None for factories), ``unnorm_key`` (the norm-stats key used, or
        None), ``batch_size`` (the largest policy call this episode was served in, as it ran),
        ``policy_batch`` (the most images a call can get: :func:`vlamix.eval.server.policy_batch_size`,
        all env slots in lock-step, half of them when double buffered), ``env_slots`` (``workers * envs_per_worker``),
        ``open_loop_steps``, ``policy_queries`` (policy calls that served the episode), ``attempts``, ``error`` (None or
        "Type: message"), ``video`` (path relative to the JSONL folder, or None), ``wall_s``,
        ``policy_s`` (seconds of the batched policy calls the episode was in), ``sim_s`` (=
        ``physics_s`` + ``render_s``), ``preprocess_s``, ``renders`` (camera images rendered: LIBERO slots),
        ``versions`` (simulator versions).
    Raises:
        ValueError: invalid arguments (naming them), duplicate episodes, CUDA requested but absent;
        TypeError: a bad ``policy``; FileNotFoundError: a checkpoint path that is not a folder;
        RuntimeError: the policy could not be built, or workers could not start or kept dying;
        KeyboardInterrupt: Ctrl-C or SIGTERM (finished rows are on disk). All argument errors are
        raised before any model is loaded or worker started.
    """
    rollout = RolloutConfig() if rollout is None else rollout
    rollout.check()  # ConfigError naming the eval_* field
    workers, envs_per_worker = rollout.eval_workers, rollout.envs_per_worker
    device, dtype = rollout.eval_device, rollout.eval_dtype
    videos, videos_per_task = rollout.eval_videos, rollout.eval_videos_per_task
    specs = list(episodes)
    for name, value, minimum in (("seed", seed, 0), ("num_steps_wait", num_steps_wait, 0), ("resolution", resolution, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be None or an integer >= 1, got {max_steps!r}")
    if open_loop_steps is not None and (isinstance(open_loop_steps, bool) or not isinstance(open_loop_steps, int)
                                        or open_loop_steps < 1):
        raise ValueError(f"open_loop_steps must be None or an integer >= 1, got {open_loop_steps!r}")
    if videos != "none" and video_dir is None:
        if out_jsonl is None:
            raise ValueError("videos need video_dir (or out_jsonl, whose folder gets videos/)")
        video_dir = os.path.join(os.path.dirname(os.path.abspath(out_jsonl)), "videos")
    keys = [_spec_key(s) for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("episodes: the same episode key appears more than once")
    for spec in specs:
        suite_max_steps(spec.suite)  # ValueError for an unknown suite
    is_path = isinstance(policy, (str, os.PathLike))
    if is_path:
        dev = resolve_device(device)
        dt = dtype_name(dtype, dev)
        # loads torch: `import vlamix.eval` must not (env workers import this package)
        from vlamix.model.checkpoint import checkpoint_action_chunk, checkpoint_image_aug

        if center_crop is None:
            center_crop = checkpoint_image_aug(os.fspath(policy))
        chunk = checkpoint_action_chunk(os.fspath(policy))
        if open_loop_steps is not None and open_loop_steps > chunk:
            raise ValueError(f"open_loop_steps: {open_loop_steps} > the checkpoint's action_chunk {chunk}; "
                             f"allowed: null or 1..{chunk}")
        open_loop_steps = open_loop_steps or chunk
        policy_kwargs = {"device": dev, "dtype": dt, "unnorm_key": unnorm_key, "center_crop": center_crop}
    elif center_crop or unnorm_key is not None or device != "auto" or dtype != "auto":
        raise ValueError("center_crop, unnorm_key, device and dtype apply to checkpoint paths only, not to a policy factory")
    else:
        dev = dt = None
        policy_kwargs = {}
        open_loop_steps = open_loop_steps or 1
    factory = _policy_factory(policy, policy_kwargs)
    policy_options = {"center_crop": center_crop, "unnorm_key": unnorm_key} if is_path else None

    def wanted_settings(suite: str) -> dict[str, Any]:
        return {"max_steps": max_steps or suite_max_steps(suite), "num_steps_wait": num_steps_wait, "seed": seed,
                "policy_options": policy_options, "device": _device_type(dev), "dtype": dt,
                "open_loop_steps": open_loop_steps}

    done: dict[tuple, dict[str, Any]] = {}
    if out_jsonl is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out_jsonl)), exist_ok=True)
        wanted = set(keys)
        n_other = 0
        for row in _read_all_rows(out_jsonl):
            key = row.pop("_key")
            if key not in wanted or (rerun_errors and row.get("error")):
                continue
            have = {f: (_device_type(row.get(f)) if f == "device" else row.get(f)) for f in SETTING_FIELDS}
            have["open_loop_steps"] = have["open_loop_steps"] or 1  # rows stored before the field existed
            if have == wanted_settings(key[0]):
                done[key] = row  # the last matching row wins
            else:
                n_other += 1
        if n_other:
            logger.warning("%s holds %d rows of these episodes with other settings (%s); they are not reused",
                           out_jsonl, n_other, ", ".join(SETTING_FIELDS))
    todo = [s for s, k in zip(specs, keys) if k not in done]
    if done:
        logger.info("resuming: %d of %d episodes already in %s", len(done), len(specs), out_jsonl)

    versions = simulator_versions()
    started = time.time()
    runner = None
    if todo:
        if torch_threads is not None:
            import torch  # torch: `import vlamix.eval` must not load it (env workers import this package)

            torch.set_num_threads(int(torch_threads))
        cache_key = (os.path.abspath(os.fspath(policy)), tuple(sorted(policy_kwargs.items()))) if is_path else None
        if policy_cache is not None and cache_key is not None and cache_key in policy_cache:
            pol = policy_cache[cache_key]
        else:
            try:
                pol = factory()
            except Exception as err:
                raise RuntimeError(f"could not build the rollout policy: {type(err).__name__}: {err}") from err
            if policy_cache is not None and cache_key is not None:
                policy_cache.clear()  # one loaded model at a time
                policy_cache[cache_key] = pol
        if not callable(getattr(pol, "act", None)):
            raise TypeError(f"the policy factory returned {type(pol).__name__}, which has no act() method")
        unnorm_of = getattr(pol, "unnorm_key_for", None)
        if unnorm_of is not None:
            for suite in sorted({s.suite for s in todo}):
                unnorm_of(suite)  # fail before any episode when the key is missing
        jsonl_dir = os.path.dirname(os.path.abspath(out_jsonl)) if out_jsonl else None

        def row_base(spec: Any) -> dict[str, Any]:
            return {"episode_key": list(spec.key), "seed": seed, "num_steps_wait": num_steps_wait,
                    "policy_options": policy_options, "device": getattr(pol, "device", dev) if is_path else None,
                    "dtype": dt, "unnorm_key": unnorm_of(spec.suite) if unnorm_of else None,
                    "open_loop_steps": open_loop_steps}

        fh = open(out_jsonl, "a") if out_jsonl is not None else None
        bar = _progress(len(specs), len(done), progress)
        counts = {"ok": sum(bool(r.get("success")) for r in done.values() if not r.get("error")),
                  "n": sum(1 for r in done.values() if not r.get("error")), "err": 0}

        def on_row(row: dict[str, Any]) -> None:
            if row.get("video") and jsonl_dir:
                row["video"] = os.path.relpath(row["video"], jsonl_dir)
            ordered = {k: row.get(k) for k in ROW_FIELDS}
            ordered.update((k, v) for k, v in row.items() if k not in ordered)  # extra EpisodeSpec fields
            ordered["versions"] = versions
            row = ordered
            done[_row_key(row)] = row
            if fh is not None:
                fh.write(json.dumps(row) + "\n")
                fh.flush()
            if row["error"]:
                counts["err"] += 1
                logger.error("episode %s FAILED WITH AN ERROR (not counted in the success rate): %s",
                             row["episode_key"], row["error"])
            else:
                counts["n"] += 1
                counts["ok"] += int(row["success"])
            bar.set_postfix(success=f"{counts['ok']}/{counts['n']}", errors=counts["err"], refresh=False)
            bar.update(1)
            logger.debug("episode %s: success=%s steps=%d (%.1f s)", row["episode_key"], row["success"], row["steps"],
                         row["wall_s"])

        settings = {"slot_factory": slot_factory or getattr(pol, "slot_factory", None) or make_libero_slot,
                    "resolution": resolution, "seed": seed, "num_steps_wait": num_steps_wait,
                    "image_size": MODEL_IMAGE_SIZE,
                    "render_threads": max(1, (os.cpu_count() or 1) // workers),
                    "inputs": tuple(getattr(pol, "inputs", ()))}
        runner = BatchedRollout(
            pol, workers=workers, envs_per_worker=envs_per_worker, settings=settings,
            max_steps_of=lambda suite: max_steps or suite_max_steps(suite), row_base=row_base, on_row=on_row,
            max_attempts=rollout.eval_max_attempts, episode_timeout_s=rollout.eval_episode_timeout_s, videos=videos,
            videos_per_task=videos_per_task, video_dir=video_dir, open_loop_steps=open_loop_steps,
        )
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
        try:
            runner.run(todo)
        except KeyboardInterrupt:
            logger.error("rollouts interrupted: %d of %d episodes have rows%s", len(done), len(specs),
                         f" in {out_jsonl}" if out_jsonl else "")
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
            bar.close()
            if fh is not None:
                fh.close()
    wall = time.time() - started
    if stats is not None and runner is not None:
        stats.update(policy_s=runner.policy_s, env_s=runner.env_s, rounds=runner.rounds, restarts=runner.restarts,
                     batch_log=runner.batch_log, assign_log=runner.assign_log, n_slots=runner.n_slots,
                     groups=runner.groups, wall_s=wall)
    if out_jsonl is not None:
        if runner is not None and is_path:  # what ran the episodes, for the cost columns (vlamix.pipeline.provenance)
            # torch: `import vlamix.eval` must not load it (env workers import this package)
            from vlamix.model.memory import device_label

            device_name = device_label(dev)
        else:
            device_name = None
        _append_meta(out_jsonl, {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)), "wall_s": round(wall, 3),
            "policy": os.fspath(policy) if is_path else repr(policy), "policy_kwargs": policy_kwargs,
            "workers": workers, "envs_per_worker": envs_per_worker, "seed": seed, "max_steps": max_steps,
            "num_steps_wait": num_steps_wait, "resolution": resolution, "n_episodes": len(specs),
            "n_run": len(todo), "n_resumed": len(specs) - len(todo), "versions": versions,
            "policy_s": round(runner.policy_s, 3) if runner else 0.0, "rounds": runner.rounds if runner else 0,
            "restarts": runner.restarts if runner else 0, "device": _device_type(dev), "device_name": device_name,
        })
    n_succ = sum(bool(done[k]["success"]) for k in keys)
    n_err = sum(bool(done[k].get("error")) for k in keys)
    logger.info("evaluated %d episodes (%d run now) in %.1f s: %d successes, %d errors", len(specs), len(todo), wall,
                n_succ, n_err)
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
    atomic_write_json(path, {"runs": runs}, default=str)


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
