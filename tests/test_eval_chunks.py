"""Chunked rollouts (OpenVLA-OFT, issue 29): the server executes exactly ``open_loop_steps`` actions of each
predicted chunk per policy query, and the env workers hand the policy the inputs it declares (wrist image, proprio).

The fake env (``eval_fakes.ChunkSlot``) succeeds only if action ``t`` is action ``t % k`` of the chunk computed from
the observation at step ``t - t % k`` (its image, wrist image and proprio); a server that queried every step, ran
the whole chunk, or passed another episode's inputs would fail it.
"""

import functools
import math

import pytest

from eval_fakes import CHUNK, ChunkPolicy, episode_length, make_chunk_slot
from vlamix.eval.rollout import EpisodeSpec, evaluate
from vlamix.eval.server import BatchedRollout
from vlamix.eval.settings import RolloutConfig


def _specs(tasks=2, trials=3):
    return [EpisodeSpec("libero_spatial", t, k, k, f"task {t}") for t in range(tasks) for k in range(trials)]


@pytest.mark.parametrize("k,envs", [(3, 2), (CHUNK, 1), (1, 2)])
def test_exactly_open_loop_steps_actions_run_per_policy_query(k, envs):
    specs = _specs()
    policy = ChunkPolicy()
    stats = {}
    rows = evaluate(lambda: policy, specs, RolloutConfig(eval_workers=2, envs_per_worker=envs), max_steps=8,
                    slot_factory=functools.partial(make_chunk_slot, k=k), open_loop_steps=k, stats=stats,
                    progress=False)
    lengths = [episode_length(s.task_id, s.episode_index) for s in specs]
    assert [(r["success"], r["steps"], r["error"]) for r in rows] == [(True, n, None) for n in lengths]
    assert [r["policy_queries"] for r in rows] == [math.ceil(n / k) for n in lengths]
    assert {r["open_loop_steps"] for r in rows} == {k}
    assert sum(size for size, _, _ in stats["batch_log"]) == sum(math.ceil(n / k) for n in lengths)


def test_a_wrong_execution_count_fails_the_fake_episodes():
    # the server running 2 actions per query where the env expects 3: the check of the fake must catch it
    specs = _specs(tasks=1, trials=3)
    rows = evaluate(ChunkPolicy, specs, RolloutConfig(eval_workers=1), max_steps=8,
                    slot_factory=functools.partial(make_chunk_slot, k=3), open_loop_steps=2, progress=False)
    lengths = [episode_length(s.task_id, s.episode_index) for s in specs]
    assert lengths == [2, 5, 3]  # only the 2-step episode ends before the mismatch at step 2
    assert [r["success"] for r in rows] == [True, False, False]


def test_open_loop_steps_beyond_the_chunk_or_not_positive_is_refused():
    with pytest.raises(ValueError, match=f"open_loop_steps {CHUNK + 1} > the policy's action_chunk {CHUNK}"):
        BatchedRollout(ChunkPolicy(), workers=1, envs_per_worker=1, settings={}, max_steps_of=lambda s: 8,
                       row_base=lambda s: {}, on_row=lambda r: None, open_loop_steps=CHUNK + 1)
    with pytest.raises(ValueError, match="open_loop_steps must be None or an integer >= 1, got 0"):
        evaluate(ChunkPolicy, _specs(), RolloutConfig(eval_workers=1), open_loop_steps=0, progress=False)
