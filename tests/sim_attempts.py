"""Test-only helper: one physics-only scripted-expert attempt in the real LIBERO simulator.

Run it in a spawn worker (``ProcessPoolExecutor(mp_context=get_context("spawn"))``): the simulator's
EGL context stays out of the pytest process. Spawned workers import this module by name, so it stays at
the top level of ``tests/`` and imports the simulator lazily.
"""

import concurrent.futures
import multiprocessing

import numpy as np


def in_spawn_worker(fn, *args, timeout: float = 900):
    """``fn(*args)`` in a fresh ``spawn`` process (no TensorFlow, own EGL context); its return value.

    Raises:
        concurrent.futures.TimeoutError: no result within ``timeout`` seconds.
    """
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result(timeout=timeout)


def expert_attempt(suite: str, task_id: int, index: int = 0) -> dict:
    """Run the scripted expert once on ``suite`` task ``task_id`` from start state ``index`` of seed 0.

    Args:
        suite: LIBERO suite name without ``_no_noops`` (``"libero_goal"``, ``"libero_10"``).
        task_id: task index in the suite's order.
        index: start state (``vlamix.sim.record.start_seed(0, suite, task_id, index)``).

    Returns:
        dict: ``steps_planned`` (the expert's goal queue), ``first`` (primitive of the first plan:
        ``"drawer"``, ``"knob"``, ``"push"`` or ``"pick_place"``), ``held_at_start`` / ``held_at_end``
        (whether each planned goal holds, list of bool), ``last_step`` (the goal being worked on at
        the end), ``goal`` (``(predicate, object, target)`` of the first plan), ``phase`` (the
        expert's phase at the end), ``settle_shift`` (m, how far objects moved while settling),
        ``done`` (the attempt's success), ``check_success`` (the env's own verdict, bool), ``steps``
        (int, env steps taken), ``actions`` (float array ``(steps, 7)``), ``gripper`` (its last
        column: -1 open / +1 close) and ``failure`` (None or the expert's failure reason).
    """
    from vlamix.core.constants import SUITE_MAX_STEPS
    from vlamix.sim.expert import ExpertConfig, ScriptedExpert
    from vlamix.sim.libero_env import task_info
    from vlamix.sim.record import make_recording_env, run_attempt, settle, start_seed

    env = make_recording_env(task_info(suite, task_id))
    try:
        seed = start_seed(0, suite, task_id, index)
        np.random.seed(seed)
        env.reset()
        obs, shift = settle(env)
        rng = np.random.default_rng(seed)
        expert = ScriptedExpert(env, ExpertConfig().jittered(rng), rng=rng)
        first = expert.reset(obs)
        held_at_start = [expert.goal_holds(step) for step in expert.steps]
        attempt = run_attempt(env, expert, obs, SUITE_MAX_STEPS[suite])
        actions = np.stack(attempt.actions)
        return {"steps_planned": expert.steps, "first": getattr(first, "primitive", "pick_place"),
                "held_at_start": held_at_start, "held_at_end": [expert.goal_holds(step) for step in expert.steps],
                "last_step": expert.step, "phase": expert.phase, "settle_shift": shift,
                "goal": tuple(getattr(first, name, None) for name in ("predicate", "obj", "target")),
                "done": attempt.success, "check_success": bool(env.check_success()), "steps": attempt.steps,
                "actions": actions, "gripper": actions[:, 6], "failure": attempt.failure}
    finally:
        env.close()


def expert_attempts(suite: str, task_ids) -> dict:
    """``{task_id: expert_attempt(suite, task_id)}`` for several tasks in one worker."""
    return {task_id: expert_attempt(suite, task_id) for task_id in task_ids}
