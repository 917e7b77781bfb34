"""The scripted expert as a reference row of the leaderboard: rolled out on the planned episodes.

The same :class:`vlamix.eval.plan.EpisodeSpec` list as a VLA point (same suites, tasks, init states,
seed, wait steps and step limit), but the actions come from :class:`vlamix.sim.expert.ScriptedExpert`,
which reads object poses from the simulator (no camera is rendered, the instruction is not read, so
every instruction variant gives the same outcome). It shows what the evaluator reports for a
competent policy next to the tiny models.

Per episode, in a ``spawn`` worker (no TensorFlow): ``env.seed(seed)``, ``env.reset()``,
``env.set_init_state(init state k)``, ``num_steps_wait`` dummy steps, then up to ``max_steps``
expert actions; success = the environment's ``done``. A task the expert does not support
(:class:`vlamix.sim.expert.UnsupportedTaskError`, e.g. non pick-and-place goals) or a simulator
crash gives a row with ``error`` (left out of the success rate, never counted as a failure).

Usage::

    from vlamix.eval.expert_eval import ExpertReference
    ref = ExpertReference(eval_suites=["libero_spatial", "libero_object"], eval_tasks=2)
    prediction = ref.predict()          # {"episodes", "summary", "offline", "mixing", "config", "reference": True}
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import time
import traceback
from dataclasses import asdict
from typing import Any, Mapping, Sequence

from vlamix.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["EXPERT_LABEL", "ExpertReference", "check_hyperparameters", "run_expert_episodes"]

#: Leaderboard label of the reference row.
EXPERT_LABEL = "scripted expert (reference)"
#: Hyperparameters of the reference (the evaluation fields of :class:`vlamix.config.BenchConfig`).
DEFAULTS: dict[str, Any] = {
    "eval_suites": ("libero_spatial", "libero_object"),
    "eval_tasks": 2,
    "trials_per_task": 1,
    "eval_max_steps": None,
    "num_steps_wait": 10,
    "eval_workers": 1,
    "eval_seed": 7,
    "eval_instruction": ("original",),
    "eval_instruction_suites": None,
}


def check_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the reference's hyperparameters (names and values as in :class:`vlamix.config.BenchConfig`).

    Returns:
        the full settings (defaults filled in; lists as tuples).
    Raises:
        ConfigError: an unknown name or an invalid value (names the field), before any work.
    """
    from vlamix.eval.plan import plan_episodes

    unknown = sorted(set(values) - set(DEFAULTS))
    if unknown:
        raise ConfigError(unknown[0], f"not a scripted-expert hyperparameter; allowed: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **values}
    for name in ("eval_suites", "eval_instruction", "eval_instruction_suites"):
        value = out[name]
        if value is not None:
            out[name] = (value,) if isinstance(value, str) else tuple(value)
    for name, minimum in (("trials_per_task", 1), ("num_steps_wait", 0), ("eval_workers", 1), ("eval_seed", 0)):
        if isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < minimum:
            raise ConfigError(name, f"must be an integer >= {minimum}, got {out[name]!r}")
    for name in ("eval_tasks", "eval_max_steps"):
        if out[name] is not None and (isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] < 1):
            raise ConfigError(name, f"must be null or an integer >= 1, got {out[name]!r}")
    try:
        plan_episodes(out["eval_suites"], out["eval_tasks"], out["trials_per_task"], out["eval_instruction"],
                      out["eval_instruction_suites"])
    except ValueError as err:
        field = ("eval_instruction_suites" if "variant_suites" in str(err)
                 else "eval_instruction" if "instruction" in str(err) else "eval_suites")
        raise ConfigError(field, str(err)) from err
    return out


def _expert_chunk(specs: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """(spawn worker) Roll the expert out on episodes of one task; one row per spec."""
    import numpy as np

    from vlamix.eval.plan import EpisodeSpec, suite_max_steps
    from vlamix.sim.expert import ScriptedExpert
    from vlamix.sim.libero_env import dummy_action, init_states, simulator_versions, task_info
    from vlamix.sim.record import make_recording_env

    rows, env = [], None
    try:
        for raw in specs:
            spec = EpisodeSpec(**raw)
            max_steps = settings["max_steps"] or suite_max_steps(spec.suite)
            row = {**asdict(spec), "success": False, "steps": 0, "seed": settings["seed"], "max_steps": max_steps,
                   "num_steps_wait": settings["num_steps_wait"], "policy_options": {"policy": "scripted_expert"},
                   "error": None, "versions": simulator_versions()}
            start = time.perf_counter()
            try:
                if env is None:
                    env = make_recording_env(task_info(spec.suite, spec.task_id))
                state = init_states(spec.suite, spec.task_id)[spec.init_state_index]
                np.random.seed(settings["seed"])
                env.seed(settings["seed"])
                env.reset()
                obs = env.set_init_state(state)
                for _ in range(settings["num_steps_wait"]):
                    obs, _, _, _ = env.step(dummy_action())
                expert = ScriptedExpert(env, rng=np.random.default_rng(settings["seed"]))
                expert.reset(obs)
                for _ in range(max_steps):
                    obs, _, done, _ = env.step(np.asarray(expert.act(obs), dtype=np.float32).tolist())
                    row["steps"] += 1
                    if done:
                        row["success"] = True
                        break
                    if expert.failure:
                        break
            except Exception as err:  # unsupported task or simulator crash: not a policy outcome
                row["error"] = f"{type(err).__name__}: {err}"
                logger.error("expert episode %s: %s", spec.key, traceback.format_exc())
            row["wall_s"] = round(time.perf_counter() - start, 3)
            rows.append(row)
    finally:
        if env is not None:
            env.close()
    return rows


def run_expert_episodes(specs: Sequence[Any], *, seed: int = 7, num_steps_wait: int = 10,
                        max_steps: int | None = None, workers: int = 1) -> list[dict[str, Any]]:
    """Expert rows for ``specs`` (in their order), one spawn worker per task chunk, at most ``workers`` at once.

    Returns:
        rows with the spec's fields, ``success`` (bool), ``steps``, ``seed``, ``max_steps``,
        ``num_steps_wait``, ``error`` (None or "Type: message"), ``versions``, ``wall_s``.
    """
    chunks: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for spec in specs:
        chunks.setdefault((spec.suite, spec.task_id), []).append(asdict(spec))
    settings = {"seed": int(seed), "num_steps_wait": int(num_steps_wait), "max_steps": max_steps}
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max(1, min(workers, len(chunks))), mp_context=ctx) as pool:
        futures = [pool.submit(_expert_chunk, chunk, settings) for chunk in chunks.values()]
        done = {}
        for future in futures:
            for row in future.result():
                done[(row["suite"], row["task_id"], row["episode_index"], row["instruction_variant"])] = row
    return [done[(s.suite, s.task_id, s.episode_index, s.instruction_variant)] for s in specs]


class ExpertReference:
    """Single-task-learning basemodel of the reference row: ``train``/``save``/``load`` do nothing
    useful (there is nothing to learn); ``predict`` rolls the expert out on the planned episodes.

    Args:
        **hyperparameters: see :data:`DEFAULTS` (validated by :func:`check_hyperparameters`).
    Raises:
        ConfigError: an invalid hyperparameter.
    """

    def __init__(self, **hyperparameters: Any):
        self.settings = check_hyperparameters(hyperparameters)
        self.model_dir: str | None = None

    def preprocess(self, **kwargs: Any) -> None:
        """Nothing to prepare; Ianvs's single-task paradigm calls it before :meth:`train` (returns None)."""
        return None

    def train(self, train_data: Any = None, valid_data: Any = None, **kwargs: Any) -> None:
        return None

    def save(self, model_path: str) -> str:
        """Write ``expert.json`` (the settings) into the folder ``model_path``; returns the folder."""
        folder = os.path.splitext(os.path.abspath(model_path))[0]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "expert.json"), "w", encoding="utf-8") as fh:
            json.dump({"policy": "scripted_expert", **self.settings}, fh, indent=1, default=list)
        self.model_dir = folder
        return folder

    def load(self, model_url: str | None = None, **kwargs: Any) -> None:
        self.model_dir = model_url or self.model_dir

    def predict(self, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Roll the expert out; returns a prediction dict like :meth:`vlamix.pipeline.VLADataSelect.predict`
        (``offline`` empty: no model) with ``reference: True`` (left out of the paired comparisons)."""
        from vlamix.eval.plan import plan_episodes
        from vlamix.eval.stats import summarize

        s = self.settings
        specs = plan_episodes(s["eval_suites"], s["eval_tasks"], s["trials_per_task"], s["eval_instruction"],
                              s["eval_instruction_suites"])
        rows = run_expert_episodes(specs, seed=s["eval_seed"], num_steps_wait=s["num_steps_wait"],
                                   max_steps=s["eval_max_steps"], workers=s["eval_workers"])
        for row in rows:
            row["split"] = "reference"
        result = {"summary": summarize(rows), "episodes": rows, "offline": {},
                  "mixing": {"strategy_label": EXPERT_LABEL},
                  "config": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}, "reference": True}
        saved = os.environ.get("RESULT_SAVED_URL")
        if saved:
            from vlamix.bench.metrics import PEER_EPISODES_FILE

            os.makedirs(saved, exist_ok=True)
            result["result_saved_url"] = saved
            with open(os.path.join(saved, PEER_EPISODES_FILE), "w", encoding="utf-8") as fh:
                json.dump(result, fh, default=str)
        return result
