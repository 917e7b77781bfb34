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


def expert_rollouts(specs, seed: int = 7, num_steps_wait: int = 10, max_steps: int = 300) -> list:
    """The scripted expert's own rollout loop (the reference row's loop before it ran through the evaluator).

    The oracle of the expert policy (``vlamix.eval.expert_policy``): per episode ``np.random.seed(seed)``,
    ``env.seed(seed)``, ``env.reset()``, the spec's init state, ``num_steps_wait`` dummy steps, then
    ``ScriptedExpert(env, rng=np.random.default_rng(seed))`` acts until the env's ``done``, the expert's
    failure flag, or ``max_steps``. No camera is rendered.

    Returns:
        one dict per spec: ``success`` (bool), ``steps`` (int), ``failure`` (None or the expert's reason),
        ``actions`` (float32 [steps, 7]: the actions executed, in model space: gripper -1 / +1 -> 1.0 / 0.0).
    """
    from vlamix.sim.expert import ScriptedExpert
    from vlamix.sim.libero_env import dummy_action, init_states, task_info
    from vlamix.sim.record import make_recording_env

    out = []
    for spec in specs:
        env = make_recording_env(task_info(spec.suite, spec.task_id))
        try:
            np.random.seed(seed)
            env.seed(seed)
            env.reset()
            obs = env.set_init_state(init_states(spec.suite, spec.task_id)[spec.init_state_index])
            for _ in range(num_steps_wait):
                obs, _, _, _ = env.step(dummy_action())
            expert = ScriptedExpert(env, rng=np.random.default_rng(seed))
            expert.reset(obs)
            row = {"success": False, "steps": 0, "failure": None}
            actions = []
            for _ in range(max_steps):
                action = np.asarray(expert.act(obs), dtype=np.float32)
                model = action.copy()
                model[6] = (1.0 - action[6]) / 2.0
                actions.append(model)
                obs, _, done, _ = env.step(action.tolist())
                row["steps"] += 1
                if done:
                    row["success"] = True
                    break
                if expert.failure:
                    row["failure"] = expert.failure
                    break
            row["actions"] = np.array(actions, dtype=np.float32).reshape(-1, 7)
            out.append(row)
        finally:
            env.close()
    return out
