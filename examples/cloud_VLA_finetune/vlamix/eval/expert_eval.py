"""The scripted expert rolled out on planned episodes (the reference row of :mod:`vlamix.pipeline.expert`).

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

    from vlamix.eval.expert_eval import run_expert_episodes
    rows = run_expert_episodes(plan_episodes("libero_spatial", 2, 1), seed=7, workers=2)
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import time
import traceback
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from vlamix.core.suites import suite_max_steps
from vlamix.eval.plan import EpisodeSpec
from vlamix.sim.expert import ScriptedExpert
from vlamix.sim.libero_env import dummy_action, init_states, simulator_versions, task_info
from vlamix.sim.record import make_recording_env

logger = logging.getLogger(__name__)

__all__ = ["run_expert_episodes"]

def _expert_chunk(specs: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """(spawn worker) Roll the expert out on episodes of one task; one row per spec."""
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
