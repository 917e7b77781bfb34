"""The scripted expert as a rollout policy: the reference row runs through the batched evaluator.

:class:`ExpertPolicy` sits behind the VLA's interface (``act(images, instructions, suite, ...) ->
float64 [B, 7]`` model-space actions), so :func:`vlamix.eval.rollout.evaluate` rolls the expert out
with the same plan, env workers, server rounds (:class:`vlamix.eval.server.BatchedRollout`), success
detection, step accounting and rows as every VLA point, and the batch-1 loop
(:func:`vlamix.eval.rollout.run_episode`) runs it the same way.

Where the expert runs (design decision). :class:`vlamix.sim.expert.ScriptedExpert` needs privileged
simulator state, not images, and the simulator lives in the env worker. Two ways were weighed:

(a) the worker sends a compact snapshot of the state and the server keeps one expert state machine
    per slot. Not taken: the expert reads much more than a few numbers per step. When each goal step
    starts it measures the world boxes of every collision geom of every object and fixture (grasp
    choice, obstacles, swept-path clearance), site frames and sizes (regions, drawers), joint axes and
    positions (drawers, knobs), and it decides which goal steps are already achieved by LIBERO's own
    predicate code (``_eval_predicate``: object-state classes reading MuJoCo contacts). A snapshot
    would either re-implement LIBERO's predicates outside the simulator (so the expert might behave
    differently) or be the whole MuJoCo state plus a second copy of every task's simulator in the
    policy process, where TensorFlow may be loaded and where the design keeps MuJoCo out (see
    :mod:`vlamix.sim.libero_env`).
(b) taken: the expert runs in the worker on the slot's own simulator (:class:`ExpertSlot`). After
    ``begin`` and after each ``step``, the slot computes the expert's next action from the new
    observation and sends it with the image as the slot's privileged observation
    (:attr:`vlamix.eval.envs.LiberoSlot.state` = ``{"expert_action": float [7]}``). The server hands
    these states to the policy (``uses_state = True``: :func:`vlamix.eval.server.call_policy`), and
    :class:`ExpertPolicy` returns the model-space action. The round protocol does not change: no
    extra round trip, and the server's plan, rounds, success detection, step limit, action digests,
    fault handling and rows are the ones every VLA point goes through.

Action convention: the expert computes LIBERO environment actions (OSC_POSE deltas, gripper -1 open /
+1 close). :class:`ExpertPolicy` turns them into model space (:func:`vlamix.eval.envs.env_to_model_action`:
gripper 1.0 open / 0.0 close) and the slot's ``step`` applies the VLA's post-processing
(:func:`vlamix.eval.envs.model_to_env_action`) before ``env.step``. That round trip is exact (the
expert's gripper is always -1 or +1, the motion passes through), so the environment executes the
expert's own action, and ``action_digest`` hashes the model-space actions as for a VLA.

Against the expert's previous own loop (the test oracle ``tests/sim_attempts.py::expert_rollout``):
same seeding, init state and wait steps, then the expert is built on the settled state with
``np.random.default_rng(seed)``. One protocol difference: the own loop ended an episode when the
expert flagged a failure (``ScriptedExpert.failure``: object not lifted, no success after the
release); here, as for every policy, an episode ends at success or at the step limit (after a failure
flag the expert holds still or goes on with its phases). Episodes the expert wins are therefore the same
(success, step, actions up to float noise); a flagged failure may run longer and, rarely, still succeed.
The two loops' environments are built differently (the own loop's for recording: both cameras, rendering
off, soft resets; the slot's renders the agent view), so the physics may differ in the last bits: on
LIBERO-Object task 0 (init state 0, seed 7) an action first differed at step 57, by 3e-14 (measured
2026-12-07); LIBERO-Spatial and LIBERO-Goal task 0 gave bit-identical actions up to their successes.

An exception of the expert (e.g. :class:`vlamix.sim.expert.UnsupportedTaskError` for a goal without a
scripted primitive) is an exception of the policy: the slot sends it instead of an action
(``{"expert_error": "Type: message"}``), :meth:`ExpertPolicy.act` raises it, and the server records an
error row at once, as for a VLA policy that raises (not a failure, as the own loop recorded it; not
retried: the expert is deterministic). An error in a proposal that is never asked for (after the
success or the last step) changes nothing. The expert's seconds are spent in the worker: they count in
the episode's ``wall_s``, not in ``policy_s`` (the server side only converts the action) nor in ``sim_s``.
The instruction is not read, so every instruction variant gives the same outcome.

Usage::

    from vlamix.eval.expert_policy import ExpertPolicy
    from vlamix.eval.rollout import evaluate, plan_episodes
    rows = evaluate(ExpertPolicy, plan_episodes("libero_object", [0], 1), max_steps=280)
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Sequence

import numpy as np

from vlamix.core.constants import ACTION_DIM
from vlamix.eval.envs import LiberoSlot, env_to_model_action
from vlamix.sim.expert import ScriptedExpert

__all__ = ["EXPERT_ACTION", "EXPERT_ERROR", "ExpertPolicy", "ExpertSlot", "make_expert_slot"]

logger = logging.getLogger(__name__)

#: Key of the expert's next environment action (float [7]) in an :class:`ExpertSlot`'s ``state``.
EXPERT_ACTION = "expert_action"
#: Key of the expert's exception ("Type: message") in the ``state``, instead of an action.
EXPERT_ERROR = "expert_error"


class ExpertSlot(LiberoSlot):
    """A :class:`vlamix.eval.envs.LiberoSlot` that runs the scripted expert on its own simulator.

    ``begin`` and ``step`` are the LIBERO slot's (same seeding, init state, wait steps, camera image,
    ``model_to_env_action`` before ``env.step``); after the wait steps a fresh
    :class:`vlamix.sim.expert.ScriptedExpert` (``rng = np.random.default_rng(seed)``) plans the episode,
    and after every observation :attr:`state` = ``{"expert_action": [7 floats]}``: the expert's next
    environment action (gripper -1 / +1), or ``{"expert_error": "Type: message"}`` when the expert raised
    (e.g. :class:`vlamix.sim.expert.UnsupportedTaskError`; traceback logged). Runs in env workers: no
    torch, no TensorFlow.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.expert: ScriptedExpert | None = None

    def begin(self, spec: Any) -> np.ndarray:
        self.expert = None
        return super().begin(spec)

    def _observe(self, obs: dict) -> np.ndarray:
        image = super()._observe(obs)
        try:
            if self.expert is None:  # the first observation of the episode: plan from the settled state
                self.expert = ScriptedExpert(self.env, rng=np.random.default_rng(self.seed))
                self.expert.reset(obs)
            action = np.asarray(self.expert.act(obs), dtype=np.float32)
            self.state = {EXPERT_ACTION: action.tolist()}
        except Exception as err:  # noqa: BLE001 - the policy's exception: ExpertPolicy.act raises it
            logger.error("scripted expert failed:\n%s", traceback.format_exc())
            self.state = {EXPERT_ERROR: f"{type(err).__name__}: {err}"}
        return image


def make_expert_slot(settings: dict[str, Any]) -> ExpertSlot:
    """Slot factory of :class:`ExpertPolicy` (picklable; the settings of :func:`vlamix.eval.envs.make_libero_slot`)."""
    return ExpertSlot(settings["resolution"], settings["seed"], settings["num_steps_wait"], settings["image_size"])


class ExpertPolicy:
    """The scripted expert behind the rollout policy interface (see the module docstring for the design).

    ``act`` returns, for each row, the action the row's :class:`ExpertSlot` computed from its simulator,
    in model space. ``slot_factory`` tells :func:`vlamix.eval.rollout.evaluate` which env slots serve it.
    """

    #: :func:`vlamix.eval.server.call_policy` passes the slots' ``state`` s.
    uses_state = True
    #: The env slots this policy needs (used by ``evaluate`` when no ``slot_factory`` is given).
    slot_factory = staticmethod(make_expert_slot)

    def act(self, images: np.ndarray, instructions: Sequence[str], suite: str | Sequence[str], *,
            states: Sequence[Any], variants: Sequence[str] | None = None) -> np.ndarray:
        """Model-space actions float64 [B, 7] (gripper 1.0 open / 0.0 close) from the slots' states.

        Args:
            images: uint8 [B, S, S, 3] (not read). instructions, suite, variants: not read.
            states: B slot states, each ``{"expert_action": float [7]}`` (environment convention).
        Raises:
            RuntimeError: the expert raised in its slot (``"scripted expert: Type: message"``).
            ValueError: a state without an expert action (the slots do not run the expert: use
                :func:`make_expert_slot`), a count other than B, or an action that is not 7 values
                with a -1 / +1 gripper.
        """
        if len(states) != len(images):
            raise ValueError(f"states: got {len(states)} for {len(images)} images")
        out = np.empty((len(states), ACTION_DIM), dtype=np.float64)
        for i, state in enumerate(states):
            if isinstance(state, dict) and EXPERT_ERROR in state:
                raise RuntimeError(f"scripted expert: {state[EXPERT_ERROR]}")
            if not isinstance(state, dict) or EXPERT_ACTION not in state:
                raise ValueError(f"states[{i}] has no '{EXPERT_ACTION}': the scripted expert needs env slots that "
                                 "run it (slot_factory=vlamix.eval.expert_policy.make_expert_slot)")
            out[i] = env_to_model_action(np.asarray(state[EXPERT_ACTION], dtype=np.float64))
        return out
