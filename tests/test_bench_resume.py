"""Resume under Ianvs: rollout episodes are kept by what determines them (train key + eval key)
under ``runs_dir``, not in the point folder that Ianvs makes anew (``<uuid>``) on every run.

The training run is a prepared finished run (``TRAINING_COMPLETE``), so ``train()`` takes its real
reuse path; the rollout and offline-metric functions are replaced by recorders (no LIBERO here).
"""

import json
import os

import pytest

from vlamix.pipeline.config import eval_key, train_key
from vlamix.pipeline.point import COMPLETE_MARKER, VLADataSelect, episodes_path

HPS = {"mixture": {"libero_spatial_no_noops": 1}, "eval_tasks": 1, "trials_per_task": 1, "eval_max_steps": 3}


@pytest.fixture
def recorder(monkeypatch):
    calls = []

    def fake_evaluate(policy, episodes, rollout=None, out_jsonl=None, **kwargs):
        calls.append(out_jsonl)
        specs = list(episodes)
        os.makedirs(os.path.dirname(out_jsonl), exist_ok=True)
        with open(out_jsonl, "a") as fh:
            for s in specs:
                fh.write(json.dumps({"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index}) + "\n")
        return [{"suite": s.suite, "task_id": s.task_id, "episode_index": s.episode_index, "success": False} for s in specs]

    import vlamix.pipeline.point

    monkeypatch.setattr(vlamix.pipeline.point, "evaluate", fake_evaluate)
    monkeypatch.setattr(vlamix.pipeline.point, "offline_metrics", lambda ckpt, **kw: {"action_l1": 0.5})
    monkeypatch.setattr(vlamix.pipeline.point, "ensure_demo_datasets", lambda data: None)  # the held-out set's datasets
    return calls


def finished_run(runs_dir, hps):
    algo = VLADataSelect(**hps, runs_dir=str(runs_dir))
    run_dir = runs_dir / train_key(algo.config)
    (run_dir / "step_000002").mkdir(parents=True)
    (run_dir / "step_000002" / "weights.txt").write_text("trained")
    (run_dir / "step_000002" / "training_state.pt").write_bytes(b"")  # what marks a finished checkpoint
    (run_dir / COMPLETE_MARKER).write_text("step_000002\n")
    return run_dir


def ianvs_point(runs_dir, point_dir, hps=HPS):
    """What Ianvs does for one point, in a fresh point folder: construct, train, save, load, predict."""
    algo = VLADataSelect(**hps, runs_dir=str(runs_dir))
    algo.train(None)
    path = algo.save(os.path.join(point_dir, "output/train/"))
    algo.load(path)
    return algo, algo.predict(None)


def test_rollouts_are_kept_under_the_run_and_reused_by_a_new_point_folder(tmp_path, recorder):
    run_dir = finished_run(tmp_path / "runs", HPS)
    first, _ = ianvs_point(tmp_path / "runs", str(tmp_path / "uuid-1"))
    second, _ = ianvs_point(tmp_path / "runs", str(tmp_path / "uuid-2"))
    expected = str(run_dir / f"eval_{eval_key(first.config)}" / "episodes.jsonl")
    assert recorder == [expected, expected]  # the restarted point asked for the same file
    assert episodes_path(str(run_dir), first.config) == expected
    # the point folder keeps a copy for the user
    assert os.path.isfile(tmp_path / "uuid-2" / "output" / "train" / "eval" / "episodes.jsonl")


def test_eval_key_follows_the_settings_that_determine_episodes(tmp_path):
    base = VLADataSelect(**HPS, runs_dir=str(tmp_path)).config
    assert eval_key(base) == eval_key(base.replace(eval_workers=4))  # scheduling only
    assert eval_key(base) != eval_key(base.replace(trials_per_task=2))
    assert eval_key(base) != eval_key(base.replace(eval_seed=8))
    assert eval_key(base) != eval_key(base.replace(center_crop=True))
    assert train_key(base) == train_key(base.replace(trials_per_task=2))


def test_a_checkpoint_loaded_from_elsewhere_keeps_its_rollouts_beside_it(tmp_path, recorder):
    finished_run(tmp_path / "runs", HPS)
    other = tmp_path / "someone_elses_checkpoint"
    other.mkdir()
    algo = VLADataSelect(**HPS, runs_dir=str(tmp_path / "runs"))
    algo.train(None)
    algo.load(str(other))
    algo.predict(None)
    assert recorder == [str(other / "eval" / "episodes.jsonl")]
