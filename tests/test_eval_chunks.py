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
    assert lengths == [2, 5, 3]
    # the 3-step episodes get action 0 of a new chunk at step 2; the 2-step one is asked to render step 2
    assert [r["success"] for r in rows] == [False, False, False]
    assert [(r["steps"], r["policy_queries"]) for r in rows] == [(8, 4)] * 3  # the step limit, 2 actions a query


def test_open_loop_steps_beyond_the_chunk_or_not_positive_is_refused():
    with pytest.raises(ValueError, match=f"open_loop_steps {CHUNK + 1} > the policy's action_chunk {CHUNK}"):
        BatchedRollout(ChunkPolicy(), workers=1, envs_per_worker=1, settings={}, max_steps_of=lambda s: 8,
                       row_base=lambda s: {}, on_row=lambda r: None, open_loop_steps=CHUNK + 1)
    with pytest.raises(ValueError, match="open_loop_steps must be None or an integer >= 1, got 0"):
        evaluate(ChunkPolicy, _specs(), RolloutConfig(eval_workers=1), open_loop_steps=0, progress=False)


@pytest.mark.libero
def test_libero_open_loop_steps_render_nothing_and_leave_the_episode_unchanged():
    """An env stepped with observe=False on the open-loop steps of 4-action chunks reaches the same states (images,
    wrist images, proprio, done flags) as one rendered every step, and renders only the observations read."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np

    from eval_fakes import chunked_libero_run

    spec = EpisodeSpec("libero_spatial", 0, 0, 0, "pick up the black bowl")
    actions = np.random.default_rng(0).uniform(-0.5, 0.5, (12, 7))
    # in a spawned process: this one may have TensorFlow loaded (MuJoCo's EGL rendering would crash)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        (eager, eager_renders), (lazy, lazy_renders) = [pool.submit(chunked_libero_run, spec, actions, 4, lazy).result()
                                                          for lazy in (False, True)]
    assert (eager_renders, lazy_renders) == (2 * 12, 2 * 3)  # two cameras; 3 of the 12 observations are read
    assert len(eager) == len(lazy) == 4  # the first observation, then one per chunk
    for (image_a, extras_a), (image_b, extras_b) in zip(eager, lazy):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(extras_a["wrist_image"], extras_b["wrist_image"])
        np.testing.assert_array_equal(extras_a["proprio"], extras_b["proprio"])
    assert not np.array_equal(eager[0][1]["proprio"], eager[-1][1]["proprio"])  # the arm moved
