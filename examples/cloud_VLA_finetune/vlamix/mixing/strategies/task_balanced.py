"""``task_balanced``: equal weight per task (or skill): ``p(g) = 1 / G`` ("proportional sampling by task type")."""

from __future__ import annotations

from vlamix.mixing.strategies.registry import STRATEGIES
from vlamix.mixing.strategies.base import Strategy
from vlamix.mixing.weights import baseline_group_weights, group_frames


@STRATEGIES.register("task_balanced")
class TaskBalanced(Strategy):
    """Uniform over the groups of the mixing level (tasks by default)."""

    name = "task_balanced"
    params = ("mixing_level", "skill_map")
    default_level = "task"
    uses_mixture_weights = False

    @classmethod
    def describe(cls, mixing, data, by):
        return f"task_balanced by {mixing.resolved_level()}"

    @classmethod
    def initial_weights(cls, mixing, data, sources):
        return baseline_group_weights("task_balanced", group_frames(sources))
