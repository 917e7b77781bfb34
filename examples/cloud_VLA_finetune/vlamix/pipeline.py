"""One benchmark point end to end: data -> LoRA fine-tuning -> LIBERO rollouts -> metrics.

:class:`VLADataSelect` is what the Ianvs basemodel adapter (``testalgorithms/vla_dataselect/basemodel.py``)
and the local runner (``vlamix run``) call. It follows Ianvs's single-task-learning contract:
``train(train_data)`` -> ``save(dir)`` -> ``load(path)`` -> ``predict(test_x)``.

Usage::

    from vlamix.pipeline import VLADataSelect
    algo = VLADataSelect(mixture={"libero_spatial_no_noops": 2, "libero_object_no_noops": 1})
    algo.train()
    ckpt = algo.save("workspace/ckpt")
    algo.load(ckpt)
    result = algo.predict()   # {"summary": {"success_rate": ...}, "episodes": [...], "offline": {...}}

Nothing already computed is lost: a finished training run for the same training hyperparameters is
reused (``<runs_dir>/<train key>/``; an interrupted one resumes from its last ``step_*`` checkpoint), and rollouts already written to ``<checkpoint>/eval/episodes.jsonl``
are not run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from typing import Any, Iterator

from vlamix.config import BenchConfig

logger = logging.getLogger(__name__)

#: Fields that only change evaluation; a change in them reuses the trained checkpoint.
EVAL_FIELDS = frozenset(
    {"eval_suites", "eval_tasks", "trials_per_task", "eval_max_steps", "num_steps_wait", "eval_workers", "eval_seed", "center_crop"}
)
#: Hyperparameter keys that Ianvs or the runner may pass besides the BenchConfig fields.
RUNTIME_KEYS = frozenset({"runs_dir"})
DEFAULT_RUNS_DIR = os.path.join("workspace", "vlamix_runs")
COMPLETE_MARKER = "TRAINING_COMPLETE"


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold the file lock ``<path>.lock`` (``filelock.FileLock``; created with its parent folder),
    so that processes sharing the file system (parallel Ray trials) never write ``path`` at once."""
    from filelock import FileLock

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with FileLock(os.path.abspath(path) + ".lock"):
        yield


def train_run(cfg: BenchConfig, runs_dir: str = DEFAULT_RUNS_DIR) -> str:
    """Train (or reuse, or resume) the run of ``cfg`` at ``<runs_dir>/<train key>/``; returns its final checkpoint.

    Records missing demonstration datasets first. Runs this one depends on (the DoReMi reference of
    ``dro_reference: auto``, the proxy of ``doremi_transfer``; :mod:`vlamix.mixing.reference`) are
    trained first the same way, so each is trained once per training key. Holds a file lock on the
    run folder, so parallel trials (Ray) with the same key wait for one another.
    """
    from vlamix.mixing.reference import resolve_training_config, write_transfer_record
    from vlamix.sim.record import ensure_demo_datasets
    from vlamix.train.finetune import finetune

    run_dir = os.path.join(os.path.abspath(runs_dir), train_key(cfg))
    with exclusive(run_dir):  # parallel trials (Ray) with the same training key train it once
        marker = os.path.join(run_dir, COMPLETE_MARKER)
        if os.path.isfile(marker):
            with open(marker) as fh:
                done = os.path.join(run_dir, fh.read().strip())
            if os.path.isdir(done):
                logger.info("reusing finished training run %s (%s)", done, cfg.mixture_label())
                return done
        train_cfg, provenance = resolve_training_config(cfg, lambda dep: train_run(dep, runs_dir))
        with exclusive(os.path.join(os.path.abspath(cfg.data_dir), "recording")):
            ensure_demo_datasets(train_cfg)
        resume = latest_resumable_checkpoint(run_dir)
        logger.info("fine-tuning on mixture %s -> %s%s", train_cfg.mixture_label(), run_dir,
                    f" (resuming from {resume})" if resume else "")
        out = finetune(train_cfg, run_dir, resume_from=resume,
                       save_every=max(1, train_cfg.train_steps // 4) if train_cfg.train_steps else None)
        if cfg.strategy == "doremi_transfer":
            write_transfer_record(out, cfg, provenance)
        with open(marker, "w") as fh:
            fh.write(os.path.relpath(out, run_dir) + "\n")
        return out


def latest_resumable_checkpoint(run_dir: str) -> str | None:
    """The ``step_NNNNNN`` folder of ``run_dir`` with the highest step that holds a training state."""
    if not os.path.isdir(run_dir):
        return None
    steps = sorted(
        d for d in os.listdir(run_dir)
        if d.startswith("step_") and os.path.isfile(os.path.join(run_dir, d, "training_state.pt"))
    )
    return os.path.join(run_dir, steps[-1]) if steps else None


def train_key(cfg: BenchConfig) -> str:
    """Stable 16-hex-digit key of the training-relevant hyperparameters (data, strategy, model,
    optimisation); parameters the strategy ignores do not change it (:meth:`BenchConfig.training_signature`)."""
    values = {k: v for k, v in cfg.training_signature().items() if k not in EVAL_FIELDS}
    blob = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def mixing_result(checkpoint: str, cfg: BenchConfig) -> dict[str, Any]:
    """The checkpoint's ``mixing_summary.json`` plus its weight trajectory (``trajectory``: rows of
    ``mixing_weights.jsonl``); for checkpoints without them (trained elsewhere) only the strategy label."""
    from vlamix.mixing.trajectory import SUMMARY_FILE, TRAJECTORY_FILE, read_trajectory

    path = os.path.join(checkpoint, SUMMARY_FILE)
    if not os.path.isfile(path):
        return {"strategy_label": cfg.strategy_label()}
    with open(path, encoding="utf-8") as fh:
        out = json.load(fh)
    traj = os.path.join(checkpoint, TRAJECTORY_FILE)
    out["trajectory"] = read_trajectory(traj) if os.path.isfile(traj) else []
    return out


class VLADataSelect:
    """Fine-tune on one data mixture and evaluate by LIBERO rollouts.

    Args:
        **hyperparameters: :class:`vlamix.config.BenchConfig` fields (``mixture`` required), plus
            ``runs_dir`` (where training runs are staged, default ``workspace/vlamix_runs``).
            Keys Ianvs adds of its own are kept in ``config.extra`` and otherwise ignored.
    Raises:
        vlamix.config.ConfigError: naming the first invalid field, before any work starts.
    """

    def __init__(self, **hyperparameters: Any):
        self.runs_dir = str(hyperparameters.pop("runs_dir", DEFAULT_RUNS_DIR))
        self.config = BenchConfig.from_dict(hyperparameters, allow_extra=True)
        if self.config.extra:
            logger.info("ignoring hyperparameters that are not vlamix fields: %s", sorted(self.config.extra))
        self.checkpoint: str | None = None

    # ------------------------------------------------------------------ Ianvs contract
    def train(self, train_data: Any = None, valid_data: Any = None, **kwargs: Any) -> str:
        """Record missing demonstration datasets, then LoRA-fine-tune on the mixture.

        ``train_data`` (Ianvs's index of datasets) is not needed: the datasets and their weights come
        from the ``mixture`` hyperparameter. Returns the checkpoint folder.
        """
        self.checkpoint = train_run(self.config, self.runs_dir)
        return self.checkpoint

    def save(self, model_path: str) -> str:
        """Copy the trained checkpoint folder to ``model_path`` (a folder); returns the folder.

        Raises:
            RuntimeError: called before :meth:`train` or :meth:`load`.
        """
        if self.checkpoint is None:
            raise RuntimeError("save() called before train() or load()")
        dest = os.path.abspath(model_path)
        if os.path.splitext(dest)[1]:  # Ianvs may hand a file name; keep a folder beside it
            dest = os.path.splitext(dest)[0]
        if os.path.abspath(self.checkpoint) != dest:
            shutil.copytree(self.checkpoint, dest, dirs_exist_ok=True)
        self.checkpoint = dest
        return dest

    def load(self, model_url: str | None = None, **kwargs: Any) -> None:
        """Use the checkpoint folder ``model_url`` for :meth:`predict`.

        Raises:
            FileNotFoundError: the folder does not exist.
        """
        path = model_url or self.checkpoint
        if path is None or not os.path.isdir(path):
            raise FileNotFoundError(f"checkpoint folder not found: {path!r}")
        self.checkpoint = os.path.abspath(path)

    def predict(self, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        """Roll out the checkpoint in LIBERO and compute offline metrics on held-out episodes.

        Returns:
            {"summary": vlamix.eval.stats.summarize(episodes) (success_rate, ci_low, ci_high,
             n_episodes, per_task, worst_task_success_rate, ...),
             "episodes": list of JSONL rows, "offline": {"action_token_accuracy", "action_l1", ...},
             "mixing": :func:`mixing_result` (strategy label, weights, filter counts, trajectory),
             "config": BenchConfig.to_dict(), "checkpoint": str}
        """
        from vlamix.eval.offline import offline_metrics
        from vlamix.eval.rollout import evaluate, plan_episodes
        from vlamix.eval.stats import summarize

        if self.checkpoint is None:
            raise RuntimeError("predict() called before train() or load()")
        cfg = self.config
        specs = plan_episodes(cfg.resolved_eval_suites(), cfg.eval_tasks, cfg.trials_per_task)
        out_jsonl = os.path.join(self.checkpoint, "eval", "episodes.jsonl")
        rows = evaluate(
            self.checkpoint,
            specs,
            workers=cfg.eval_workers,
            out_jsonl=out_jsonl,
            seed=cfg.eval_seed,
            num_steps_wait=cfg.num_steps_wait,
            max_steps=cfg.eval_max_steps,
            center_crop=cfg.center_crop,
        )
        summary = summarize(rows)
        offline = offline_metrics(self.checkpoint, cfg)
        result = {
            "summary": summary,
            "episodes": rows,
            "offline": offline,
            "mixing": mixing_result(self.checkpoint, cfg),
            "config": cfg.to_dict(),
            "checkpoint": self.checkpoint,
        }
        with open(os.path.join(self.checkpoint, "eval", "result.json"), "w") as fh:
            json.dump({k: v for k, v in result.items() if k != "episodes"}, fh, indent=2, default=str)
        return result
