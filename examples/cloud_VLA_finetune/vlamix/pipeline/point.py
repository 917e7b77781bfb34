"""One benchmark point end to end: data -> LoRA fine-tuning -> LIBERO rollouts -> metrics.

:class:`VLADataSelect` is what the Ianvs basemodel adapter (``testalgorithms/vla_dataselect/basemodel.py``)
and the local runner (``vlamix run``) call. It follows Ianvs's single-task-learning contract:
``train(train_data)`` -> ``save(dir)`` -> ``load(path)`` -> ``predict(test_x)``.

Usage::

    from vlamix.pipeline.point import VLADataSelect
    algo = VLADataSelect(mixture={"libero_spatial_no_noops": 2, "libero_object_no_noops": 1})
    algo.train()
    ckpt = algo.save("workspace/ckpt")
    algo.load(ckpt)
    result = algo.predict()   # {"summary": {"success_rate": ...}, "episodes": [...], "offline": {...}}

Nothing already computed is lost: a finished training run for the same training hyperparameters is
reused (``<runs_dir>/<train key>/``; an interrupted one resumes from its last ``step_*`` checkpoint), and rollouts already written to
``<runs_dir>/<train key>/eval_<eval key>/episodes.jsonl`` (:func:`episodes_path`) are not run again. Both
places are keyed by what determines their content, not by the caller's output folder, so a
restarted ``ianvs -f`` (new uuid point folders every run) reuses them too.

With ``racing: true`` the rollouts run in rounds and stop early once the point is significantly worse than a
finished point of the job (paired sequential test, :mod:`vlamix.pipeline.racing`); the racing fields are in neither key, so the rows a raced point
wrote are reused by any later evaluation of the same checkpoint and plan.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any, Iterable, Iterator

from filelock import FileLock

from vlamix.core.constants import DATASET_TO_SUITE
from vlamix.core.io import atomic_write_json, atomic_write_text, find_train_log
from vlamix.core.index import index_names
from vlamix.core.suites import base_suite
from vlamix.eval.breakdown import tag_rows
from vlamix.eval.offline import offline_metrics
from vlamix.eval.plan import plan_episodes
from vlamix.eval.rollout import all_stored, evaluate
from vlamix.eval.stats import summarize
from vlamix.mixing.trajectory import SUMMARY_FILE, TRAJECTORY_FILE, read_trajectory
from vlamix.pipeline import ledger as job_ledger
from vlamix.pipeline.arms import arm_key
from vlamix.pipeline.checks import check_environment
from vlamix.pipeline.config import BenchConfig, eval_key, train_key
from vlamix.pipeline.provenance import cost_record, data_fingerprint
from vlamix.pipeline.racing import finished_competitors, plan_key, race_point
from vlamix.pipeline.reference import resolve_training_config, write_transfer_record
from vlamix.sim.record import ensure_demo_datasets
from vlamix.train.finetune import finetune

logger = logging.getLogger(__name__)

#: Hyperparameter keys that Ianvs or the runner may pass besides the BenchConfig fields.
RUNTIME_KEYS = frozenset({"runs_dir"})
DEFAULT_RUNS_DIR = os.path.join("workspace", "vlamix_runs")
COMPLETE_MARKER = "TRAINING_COMPLETE"


@contextlib.contextmanager
def exclusive(path: str) -> Iterator[None]:
    """Hold the file lock ``<path>.lock`` (``filelock.FileLock``; created with its parent folder),
    so that processes sharing the file system (parallel Ray trials) never write ``path`` at once."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with FileLock(os.path.abspath(path) + ".lock"):
        yield


def train_run(cfg: BenchConfig, runs_dir: str = DEFAULT_RUNS_DIR) -> str:
    """Train (or reuse, or resume) the run of ``cfg`` at ``<runs_dir>/<train key>/``; returns its final checkpoint.

    Records missing demonstration datasets first. Runs this one depends on (the DoReMi reference of
    ``dro_reference: auto``, the proxy of ``doremi_transfer``; :mod:`vlamix.pipeline.reference`) are
    trained first the same way, so each is trained once per training key. Holds a file lock on the
    run folder, so parallel trials (Ray) with the same key wait for one another.
    """
    run_dir = os.path.join(os.path.abspath(runs_dir), train_key(cfg))
    with exclusive(run_dir):  # parallel trials (Ray) with the same training key train it once
        marker = os.path.join(run_dir, COMPLETE_MARKER)
        done = finished_checkpoint(run_dir)
        if done is not None:
            logger.info("reusing finished training run %s (%s)", done, cfg.mixture_label())
            return done
        train_cfg, provenance = resolve_training_config(cfg, lambda dep: train_run(dep, runs_dir))
        with exclusive(os.path.join(os.path.abspath(cfg.data.data_dir), "recording")):
            ensure_demo_datasets(train_cfg.data)
        resume = latest_resumable_checkpoint(run_dir)
        logger.info("fine-tuning on mixture %s -> %s%s", train_cfg.mixture_label(), run_dir,
                    f" (resuming from {resume})" if resume else "")
        out = finetune(train_cfg, run_dir, resume_from=resume,
                       save_every=max(1, train_cfg.train.train_steps // 4) if train_cfg.train.train_steps else None)
        if cfg.mixing.strategy == "doremi_transfer":
            write_transfer_record(out, cfg, provenance)
        atomic_write_text(marker, os.path.relpath(out, run_dir) + "\n")
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


def finished_checkpoint(run_dir: str) -> str | None:
    """The checkpoint that ``run_dir``'s :data:`COMPLETE_MARKER` names, or None when the run is not
    finished: no marker, an empty or unreadable one, or one naming anything but a ``step_*``
    checkpoint folder with a training state (the marker is written atomically after the checkpoint)."""
    try:
        with open(os.path.join(run_dir, COMPLETE_MARKER), encoding="utf-8") as fh:
            name = fh.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    done = os.path.join(run_dir, name)
    if not name.startswith("step_") or os.sep in name or not os.path.isfile(os.path.join(done, "training_state.pt")):
        logger.warning("ignoring %s in %s: it names %r, not a finished checkpoint", COMPLETE_MARKER, run_dir, name)
        return None
    return done


def episodes_path(run_dir: str, cfg: BenchConfig) -> str:
    """Rollout results of the checkpoint trained in ``run_dir`` under ``cfg``'s evaluation settings:
    ``<run_dir>/eval_<eval key>/episodes.jsonl`` (the train key and eval key determine every episode)."""
    return os.path.join(run_dir, f"eval_{eval_key(cfg)}", "episodes.jsonl")


def mixing_result(checkpoint: str, cfg: BenchConfig) -> dict[str, Any]:
    """The checkpoint's ``mixing_summary.json`` plus its weight trajectory (``trajectory``: rows of
    ``mixing_weights.jsonl``); for checkpoints without them (trained elsewhere) only the strategy label."""
    path = os.path.join(checkpoint, SUMMARY_FILE)
    if not os.path.isfile(path):
        return {"strategy_label": cfg.strategy_label()}
    with open(path, encoding="utf-8") as fh:
        out = json.load(fh)
    traj = os.path.join(checkpoint, TRAJECTORY_FILE)
    out["trajectory"] = read_trajectory(traj) if os.path.isfile(traj) else []
    return out


def fixed_heldout_datasets(cfg: BenchConfig, train_index: Iterable[str] | None = None) -> list[str]:
    """Datasets of the fixed held-out set: those of ``train_index`` (the job's train index; None = every known
    LIBERO dataset) whose task suite is the base suite of one of ``cfg``'s evaluation suites; with ``demos: none``
    only those on disk under ``data_dir`` (real data is not recorded). The result depends on the job (index,
    evaluation suites, data), not on the point's mixture.

    Raises:
        ValueError: no dataset qualifies.
    """
    suites = {base_suite(s) for s in cfg.resolved_eval_suites()}
    names = [n for n in (train_index if train_index is not None else DATASET_TO_SUITE) if DATASET_TO_SUITE.get(n) in suites]
    if cfg.data.demos == "none":
        names = [n for n in names if os.path.isdir(cfg.data.dataset_path(n))]
    if not names:
        raise ValueError(f"no dataset of the train index {list(train_index or DATASET_TO_SUITE)} for the evaluation suites {sorted(suites)}")
    return list(dict.fromkeys(names))


def fixed_heldout_config(cfg: BenchConfig, train_index: Iterable[str] | None = None) -> BenchConfig:
    """``cfg`` with the mixture replaced by the fixed held-out datasets (:func:`fixed_heldout_datasets`), weight 1
    each, static strategy, no dataset white/blacklist: its held-out loader yields the same frames for every point
    of the job."""
    names = fixed_heldout_datasets(cfg, train_index)
    return cfg.replace(mixture={n: 1 for n in names}, strategy="static", mixing_level=None, curriculum=None,
                       dataset_whitelist=None, dataset_blacklist=None, balance_by_size=False)


def flag_errors(summary: dict[str, Any], max_error_fraction: float) -> dict[str, Any]:
    """Add ``error_fraction`` (error episodes / all episodes) and ``too_many_errors`` (it exceeds
    ``max_error_fraction``) to a :func:`vlamix.eval.stats.summarize` result; log a warning when flagged."""
    total = summary["n_episodes"] + summary["n_errors"]
    summary["error_fraction"] = summary["n_errors"] / total if total else 0.0
    summary["too_many_errors"] = summary["error_fraction"] > max_error_fraction
    if summary["too_many_errors"]:
        logger.warning("%d of %d rollout episodes ended with an error (%.0f%% > eval_max_error_fraction %.0f%%): "
                       "this point's success rate rests on fewer episodes", summary["n_errors"], total,
                       100 * summary["error_fraction"], 100 * max_error_fraction)
    return summary


class VLADataSelect:
    """Fine-tune on one data mixture and evaluate by LIBERO rollouts.

    Args:
        **hyperparameters: :class:`vlamix.pipeline.config.BenchConfig` fields by YAML name (``mixture`` required),
            plus ``runs_dir`` (where training runs and their rollouts are kept, default ``workspace/vlamix_runs``).
            Ianvs passes exactly the YAML keys, so any other name is a typo and is rejected.
    Raises:
        vlamix.core.errors.ConfigError: naming the first invalid or unknown field, or what this machine lacks to
            run the point (:func:`vlamix.pipeline.checks.check_environment`), before any work starts.
    """

    def __init__(self, **hyperparameters: Any):
        self.runs_dir = str(hyperparameters.pop("runs_dir", DEFAULT_RUNS_DIR))
        self.config = check_environment(BenchConfig.from_dict(hyperparameters))
        self.checkpoint: str | None = None
        # the training run behind self.checkpoint (None: a checkpoint loaded from elsewhere), and the
        # folders holding a copy of it (save()); rollouts of those are kept under the run
        self.run_dir: str | None = None
        self._run_copies: set[str] = set()
        #: evaluation kit: dataset names of the job's train index (set by :meth:`train`), which
        #: choose the fixed held-out set of the offline metrics (None = every LIBERO dataset).
        self.train_index: list[str] | None = None
        #: evaluation kit: the run's train_log.jsonl (set by :meth:`train`), for the report's loss curves.
        self.train_log: str | None = None

    # ------------------------------------------------------------------ Ianvs contract
    def train(self, train_data: Any = None, valid_data: Any = None, **kwargs: Any) -> str:
        """Record missing demonstration datasets, then LoRA-fine-tune on the mixture.

        ``train_data`` (Ianvs's index of datasets) is not needed: the datasets and their weights come
        from the ``mixture`` hyperparameter. Returns the checkpoint folder.
        """
        if train_data is not None:
            self.train_index = index_names(train_data)
        out = train_run(self.config, self.runs_dir)
        self._set_trained(out, os.path.join(os.path.abspath(self.runs_dir), train_key(self.config)))
        return out

    def _set_trained(self, checkpoint: str, run_dir: str) -> None:
        self.checkpoint, self.run_dir = checkpoint, run_dir
        self.train_log = find_train_log(checkpoint)
        self._run_copies = {os.path.abspath(checkpoint)}

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
        if self.run_dir is not None and os.path.abspath(self.checkpoint) in self._run_copies:
            self._run_copies.add(dest)
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
        if self.checkpoint not in self._run_copies:  # not ours: its rollouts stay beside it
            self.run_dir = None

    def _race(self, specs: list[Any], run: Any, out_jsonl: str, own_train_key: str | None,
              ledger: str | None) -> tuple[list, list, dict]:
        """:func:`vlamix.pipeline.racing.race_point` of the plan: competitors are the finished points of
        the job's ledger on the same episode plan; rows already in ``out_jsonl`` are free. Returns ``(rows, specs, record)``."""
        cfg = self.config
        if not ledger:
            logger.warning("racing: no job ledger given (predict(ledger=...)), so no finished point to race "
                           "against: the whole plan runs")
        plan = plan_key(cfg.to_dict())
        rows, evaluated, record = race_point(
            specs, run, round_trials=cfg.racing.racing_round_trials, alpha=cfg.racing.racing_alpha,
            competitors=lambda: finished_competitors(ledger, plan, exclude_train_key=own_train_key),
            stored=lambda rest: all_stored(out_jsonl, rest),
        )
        return rows, evaluated, record

    def predict(self, data: Any = None, *, ledger: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Roll out the checkpoint in LIBERO and compute offline metrics on held-out episodes.

        ``ledger``: the job ledger folder (:mod:`vlamix.pipeline.ledger`): racing reads the finished points there,
        and the finished prediction is recorded there (for the ``tied_with_best`` metric of later points and the
        report). ``vlamix run`` passes its job's; under Ianvs the basemodel adapter derives it from ``RESULT_SAVED_URL``.

        Episodes are kept in :func:`episodes_path` of the training run when the checkpoint is this
        object's trained one (or a :meth:`save` copy of it), else in ``<checkpoint>/eval/episodes.jsonl``;
        finished episodes there are not run again. ``<checkpoint>/eval/`` gets a copy and ``result.json``.

        Returns:
            {"summary": vlamix.eval.stats.summarize(episodes) (success_rate, ci_low, ci_high,
             n_episodes, per_task, worst_task_success_rate, ...),
             "episodes": list of JSONL rows, "offline": {"action_token_accuracy", "action_l1", ...},
             "mixing": :func:`mixing_result` (strategy label, weights, filter counts, trajectory),
             "config": BenchConfig.to_dict(), "checkpoint": str, "train_log": str | None,
             "train_key": str | None (None for a checkpoint loaded from elsewhere), "plan_key": str,
             "arm_key": str (:func:`vlamix.pipeline.arms.arm_key`: the point without its training seed),
             "cost": :func:`vlamix.pipeline.provenance.cost_record` (training and rollout wall time, episodes per hour,
             devices), "data_fingerprint": :func:`vlamix.pipeline.provenance.data_fingerprint`,
             "racing": the :func:`vlamix.pipeline.racing.race_point` record, only with ``racing: true``}

        With ``racing: true`` the plan runs in rounds of ``racing_round_trials`` trials per task and
        stops after a round in which the paired sequential test finds the point significantly worse than a
        finished point on the episodes both ran (one-sided, ``racing_alpha`` split over the finished points;
        :meth:`_race`); ``episodes`` and ``summary`` then cover the rounds that ran.
        Raises:
            RuntimeError: every episode ended with an error (the point is recorded as failed, not as 0%).
        """
        if self.checkpoint is None:
            raise RuntimeError("predict() called before train() or load()")
        cfg = self.config
        ev = cfg.eval
        specs = plan_episodes(cfg.resolved_eval_suites(), ev.eval_tasks, ev.trials_per_task, ev.eval_instruction,
                              ev.eval_instruction_suites)
        point_jsonl = os.path.join(self.checkpoint, "eval", "episodes.jsonl")
        out_jsonl = episodes_path(self.run_dir, cfg) if self.run_dir is not None else point_jsonl
        logger.info("rolling out %d episode(s) of %s (finished ones in %s are reused)", len(specs), cfg.mixture_label(), out_jsonl)

        policy_cache: dict[Any, Any] = {}  # racing: the rounds share one loaded policy

        def run(part: list[Any]) -> list[dict[str, Any]]:
            return evaluate(
                self.checkpoint,
                part,
                cfg.rollout,
                out_jsonl=out_jsonl,
                seed=ev.eval_seed,
                num_steps_wait=ev.num_steps_wait,
                max_steps=ev.eval_max_steps,
                # null: the checkpoint this point trained follows image_aug; one loaded from elsewhere follows its record
                center_crop=cfg.resolved_center_crop() if self.run_dir is not None or ev.center_crop is not None else None,
                policy_cache=policy_cache,
                open_loop_steps=cfg.resolved_open_loop_steps() if self.run_dir is not None else ev.open_loop_steps,
            )

        own_train_key = train_key(cfg) if self.run_dir is not None else None
        racing = None
        if cfg.racing.racing:  # rounds of episodes, stopped against the job's finished points (vlamix.pipeline.racing)
            rows, specs, racing = self._race(specs, run, out_jsonl, own_train_key, ledger)
        else:
            rows = run(specs)
        policy_cache.clear()  # free the policy's memory before the offline metrics load the checkpoint
        os.makedirs(os.path.dirname(point_jsonl), exist_ok=True)
        if out_jsonl != point_jsonl and os.path.isfile(out_jsonl):
            shutil.copyfile(out_jsonl, point_jsonl)
        errored = [r for r in rows if r.get("error")]
        if rows and len(errored) == len(rows):  # an infrastructure failure, not a policy failure: score nothing
            raise RuntimeError(
                f"all {len(rows)} rollout episodes failed with an error (e.g. {errored[0]['error']!r}); no success rate is "
                f"recorded for {self.checkpoint}. Fix the cause, then run again (evaluate(..., rerun_errors=True) or delete {out_jsonl})"
            )
        tag_rows(rows, specs, cfg.data)  # evaluation kit: instruction variant and seen/unseen split per episode
        summary = summarize(rows)
        flag_errors(summary, cfg.rollout.eval_max_error_fraction)
        held = fixed_heldout_config(cfg, self.train_index)  # the same held-out frames for every point
        ensure_demo_datasets(held.data)
        offline = offline_metrics(self.checkpoint, precision=cfg.resolved_precision(), data=held.data, mixing=held.mixing,
                                  batch_size=cfg.train.batch_size, max_frames=ev.offline_max_frames)
        result = {
            "summary": summary,
            "episodes": rows,
            "offline": offline,
            "mixing": mixing_result(self.checkpoint, cfg),
            "config": cfg.to_dict(),
            "checkpoint": self.checkpoint,
            "train_log": self.train_log,
            "train_key": own_train_key,  # racing: a point never races against a run of the same model
            "plan_key": plan_key(cfg.to_dict()),
            "arm_key": arm_key(cfg),  # the point without its training seed (vlamix.pipeline.arms)
            "cost": cost_record(self.train_log, self.checkpoint, cfg.train.train_steps, out_jsonl),
            "data_fingerprint": data_fingerprint(cfg.data),
        }
        if racing is not None:
            result["racing"] = racing
        atomic_write_json(os.path.join(self.checkpoint, "eval", "result.json"), {k: v for k, v in result.items() if k != "episodes"}, default=str)
        if ledger:  # the channel through which later points (racing, tied_with_best) and the report see this one
            result["ledger"] = ledger
            result["ledger_entry"] = job_ledger.entry_path(ledger, result)
            job_ledger.record(ledger, result)
        return result
