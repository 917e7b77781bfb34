"""Racing for the evaluation budget: stop evaluating a point once it is significantly worse than a finished point.

``vlamix run``, ``ianvs -f`` and the Ray backend evaluate a point with the hyperparameter ``racing: true``
(:class:`vlamix.pipeline.config.RacingConfig`: ``racing``, ``racing_round_trials``, ``racing_alpha``) in
rounds. Points are evaluated one after another (or in parallel trials), so a point races against the
*finished* points of the same job evaluated on the same episode plan (:func:`finished_competitors`,
:func:`plan_key`): those in the job ledger (:mod:`vlamix.pipeline.ledger`) at its first look that has
one (under Ray: whatever trials have finished by then). Round r runs trials ``r * k .. (r + 1) * k - 1``
of every planned task (``k`` = ``racing_round_trials``, :func:`plan_rounds`), so a stopped point is
balanced over tasks, and its episodes are a prefix of the full plan in the same rollout file: the eval
key does not depend on racing, and a later evaluation without racing reuses them and runs only the rest.

The decision (:func:`race_point`): the point and each finished competitor ran the same episodes (same
init states and seeds, the same episode keys), so their outcomes on an episode form a matched pair.
After every round but the last, each competitor's paired sequential test
(:class:`vlamix.eval.sequential.VersusFinished`: exact error spending, Lan & DeMets 1983 with
``alpha * t^0.5``, on the McNemar sign walk of the discordant pairs, computed by the recursion of
Armitage, McPherson & Rowe 1969) is fed the pairs of the episodes both ran; the point stops when one of
them finds it significantly worse. Each of the ``m`` comparisons is one-sided at ``racing_alpha / m``
(Bonferroni over the competitors, fixed at the first look), and the spending makes every level hold over
all looks, so a point that is as good as the best finished point is stopped with probability at most
``racing_alpha`` (default 0.05). No "best" competitor is selected by its observed rate: every
competitor is compared, so that selection cannot inflate the error. ``benchmarks/bench_racing.py``
measures the false-stop rate and the episodes saved by simulation, against the earlier Wilson-overlap
rule and STEP (Snyder et al., RSS 2025).

Usage (inside :meth:`vlamix.pipeline.point.VLADataSelect.predict`)::

    rows, evaluated, record = race_point(specs, lambda part: evaluate(ckpt, part, out_jsonl=path), round_trials=10,
                                         competitors=lambda: finished_competitors(url, key), alpha=0.05)
    record["episodes_saved"], record["stopped_at_round"], record["stopped_by"]
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from vlamix.core.labels import point_label
from vlamix.core.settings import settings_of, yaml_name
from vlamix.eval.paired import outcomes as episode_outcomes
from vlamix.eval.sequential import DEFAULT_RHO, VersusFinished
from vlamix.pipeline.config import EPISODE_FIELDS, RacingConfig
from vlamix.pipeline.ledger import entries as ledger_entries

logger = logging.getLogger(__name__)

#: Fields of racing (:class:`vlamix.pipeline.config.RacingConfig`, runtime role): in neither the train key nor
#: the eval key, nor :func:`plan_key`.
RACING_FIELDS = tuple(yaml_name(f) for f in settings_of(RacingConfig))

#: The decision rule's name and sources, as written into ``prediction["racing"]`` and the report.
METHOD = (f"paired sequential McNemar test, exact error spending alpha * t^{DEFAULT_RHO:g} after every episode, "
          "one-sided, Bonferroni over the finished points")
SOURCES = ("Lan & DeMets, Biometrika 70 (1983); Kim & DeMets, Biometrika 74 (1987); "
           "Armitage, McPherson & Rowe, JRSS A 132 (1969); McNemar, Psychometrika 12 (1947)")


def plan_key(config: Mapping[str, Any]) -> str:
    """12 hex digits identifying a point's episode plan, from its :meth:`BenchConfig.to_dict` (the
    ``config`` of a prediction): the eval-key fields (:data:`vlamix.pipeline.config.EPISODE_FIELDS`: suites,
    tasks, trials per task, step limit, wait steps, seed, centre crop, actions per observation) plus
    ``eval_instruction`` and ``eval_instruction_suites``. Racing fields (:data:`RACING_FIELDS`), workers and the
    rollout runtime are not in it. Two points with equal keys run the same episodes (same init states and seeds).

    Raises:
        KeyError: ``config`` lacks one of those fields.
    """
    values = {k: config[k] for k in EPISODE_FIELDS if k != "open_loop_steps"}
    # actions per observation, resolved (null = the whole chunk); left out at 1, as before the field existed
    steps = config.get("open_loop_steps") or config.get("action_chunk", 1)
    if steps != 1:
        values["open_loop_steps"] = steps
    values["eval_suites"] = list(values["eval_suites"])
    if values["center_crop"] is None:  # null follows the checkpoint this config trains: image_aug
        values["center_crop"] = bool(config.get("image_aug", False))
    values["eval_instruction"] = list(config.get("eval_instruction") or ["original"])
    only = config.get("eval_instruction_suites")
    values["eval_instruction_suites"] = None if only is None else list(only)
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plan_rounds(specs: Sequence[Any], round_trials: int) -> list[list[Any]]:
    """Split an episode plan into rounds: round r (0-based) holds the specs with
    ``r * round_trials <= episode_index < (r + 1) * round_trials``, in plan order.

    Args:
        specs: :class:`vlamix.eval.plan.EpisodeSpec` list (``episode_index`` = trial index of its task).
        round_trials: trials per task per round (int >= 1).
    Returns:
        the non-empty rounds in order; their concatenation holds every spec once.
    Raises:
        ValueError: ``round_trials`` < 1.
    """
    if isinstance(round_trials, bool) or not isinstance(round_trials, int) or round_trials < 1:
        raise ValueError(f"round_trials must be an integer >= 1, got {round_trials!r}")
    rounds: dict[int, list[Any]] = {}
    for spec in specs:
        rounds.setdefault(int(spec.episode_index) // round_trials, []).append(spec)
    return [rounds[r] for r in sorted(rounds)]


@dataclass(frozen=True)
class Competitor:
    """A finished point of the job: its label, ledger entry and outcome per episode.

    Attributes:
        label: strategy / mixture label (:func:`vlamix.core.labels.point_label`).
        path: its ledger entry.
        outcomes: ``{episode key: success}`` (:func:`vlamix.eval.paired.outcomes`: key = (suite, task_id,
            episode_index, instruction_variant); episodes with an error left out).
    """

    label: str
    path: str
    outcomes: Mapping[tuple, bool]

    @property
    def n_episodes(self) -> int:
        return len(self.outcomes)

    @property
    def n_successes(self) -> int:
        return sum(bool(v) for v in self.outcomes.values())

    def as_dict(self) -> dict[str, Any]:
        n = self.n_episodes
        return {"label": self.label, "path": self.path, "n_episodes": n, "n_successes": self.n_successes,
                "success_rate": self.n_successes / n if n else None}


def _counts(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(successes, episodes) over the rows without an ``error`` (as :func:`vlamix.eval.stats.summarize`)."""
    ok = [r for r in rows if not r.get("error")]
    return sum(bool(r.get("success")) for r in ok), len(ok)


def finished_competitors(ledger: str | None, plan: str, *, exclude_train_key: str | None = None) -> list[Competitor]:
    """The finished points of the same job whose episode plan is ``plan`` (:func:`plan_key`).

    A point is finished when its entry is in the job ledger (:mod:`vlamix.pipeline.ledger`, written last by
    ``predict`` under ``vlamix run``, ``ianvs -f`` and the Ray backend alike). Left out: reference rows (the
    scripted expert), points with another plan or no ``config``, points whose ``train_key`` is ``exclude_train_key``
    (the same model: a point does not race against an earlier run of itself), points without an episode free of
    errors, and unreadable entries (with a warning).

    Args:
        ledger: the job ledger folder; None gives [] (no job known).
        plan: this point's :func:`plan_key`.
        exclude_train_key: the racing point's own train key.
    Returns:
        competitors sorted by path.
    """
    out = []
    for path, pred in ledger_entries(ledger):
        try:
            if pred.get("reference") or not isinstance(pred.get("config"), dict):
                continue
            if plan_key(pred["config"]) != plan:
                continue
            if exclude_train_key is not None and pred.get("train_key") == exclude_train_key:
                continue
            found = episode_outcomes(pred.get("episodes") or [])
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            logger.warning("racing: skipping unreadable finished point %s (%s)", path, err)
            continue
        if found:
            out.append(Competitor(point_label(pred), path, found))
    return out


def _spec_key(spec: Any) -> tuple:
    """The episode key of a planned episode, as :func:`vlamix.eval.paired.episode_key` gives it for its row."""
    variant = getattr(spec, "instruction_variant", None) or "original"
    return (str(spec.suite), int(spec.task_id), int(spec.episode_index), str(variant))


def _comparison(test: Any, competitor: Competitor) -> dict[str, Any]:
    """One competitor's test state for the record (the point is ``a`` of the test, the competitor ``b``)."""
    decision = {"a_worse": "point worse", "b_worse": "competitor worse"}.get(test.decision)
    return {**competitor.as_dict(), "n_pairs": test.n_pairs, "point_only": test.a_only, "competitor_only": test.b_only,
            "statistic": test.b_only - test.a_only, "boundary": test.boundary, "alpha_spent": test.alpha_spent / 2.0,
            "decision": decision, "decided_at_pair": test.decided_at or None}


def race_point(
    specs: Sequence[Any],
    run_round: Callable[[list[Any]], list[dict[str, Any]]],
    *,
    round_trials: int,
    competitors: Callable[[], Sequence[Competitor]],
    alpha: float = 0.05,
    stored: Callable[[list[Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """Evaluate one point's plan in rounds; stop it once it is significantly worse than a finished point.

    After every round but the last: the first time ``competitors()`` returns some (asked anew each round
    until then, so a point that finishes meanwhile, e.g. a parallel Ray trial, counts), the ``m`` of them
    are fixed and each gets a one-sided paired sequential test at ``alpha / m``
    (:class:`vlamix.eval.sequential.VersusFinished`, horizon = the planned episodes). Each round then feeds
    every test the point's new episodes that the competitor also ran (same episode key, no error on either
    side), in plan order; the point stops when a test finds it worse. So a point that is as good as every
    competitor is stopped with probability <= ``alpha`` over all looks; a point that is better is stopped
    less often; with no competitor the whole plan runs. When ``stored(rest)`` says every remaining episode
    already has a row (a previous evaluation ran them), the rest costs nothing: the point is not stopped
    and its result is the whole plan.

    Args:
        specs: the plan (:class:`vlamix.eval.plan.EpisodeSpec` list, from ``plan_episodes``).
        run_round: ``specs -> episode rows`` in the order of ``specs`` (``vlamix.eval.rollout.evaluate``
            with the point's ``out_jsonl``: rows already stored are reused).
        round_trials: trials per task per round (int >= 1, :func:`plan_rounds`).
        competitors: returns the finished competitors now (:func:`finished_competitors`).
        alpha: bound on the probability of stopping a point as good as the best (float in (0, 0.5)).
        stored: ``specs -> bool``, True when all of them already have rows (None: never).
    Returns:
        ``(rows, evaluated_specs, record)``: rows of the evaluated rounds in plan order, their specs,
        and the record kept in the prediction as ``racing``: ``method``, ``sources``, ``alpha``,
        ``comparison_alpha`` (``alpha / m``; None without a competitor), ``round_trials``,
        ``rounds_planned``, ``rounds_run``, ``looks`` (rounds after which the point was compared),
        ``stopped_at_round`` (1-based; None = not stopped), ``stopped_by`` (label of the competitor whose
        test stopped it, or None), ``episodes_planned``, ``episodes_evaluated``, ``episodes_saved``
        (planned - evaluated; ints), ``competitor`` (the comparison that stopped the point, else None),
        ``competitors`` (per competitor: :meth:`Competitor.as_dict` plus its test: ``n_pairs``,
        ``point_only`` / ``competitor_only`` (discordant pairs won by each), ``statistic``
        (competitor_only - point_only), ``boundary`` (the last boundary on ``|statistic|``),
        ``alpha_spent`` (one-sided), ``decision`` ("point worse", "competitor worse" or None),
        ``decided_at_pair``) and ``rounds`` (per round: ``round``, ``n_episodes``, ``n_successes``,
        ``decision``: "continue", "stop", "rest stored" or "end").
    Raises:
        ValueError: ``round_trials`` < 1, ``alpha`` outside (0, 0.5), or ``run_round`` returned a wrong
            number of rows.
    """
    rounds = plan_rounds(specs, round_trials)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be a number in (0, 0.5), got {alpha!r}")
    rows: list[dict[str, Any]] = []
    evaluated: list[Any] = []
    own: list[tuple[tuple, bool]] = []  # (episode key, success) of the point's episodes without an error
    log: list[dict[str, Any]] = []
    stopped: int | None = None
    race: VersusFinished | None = None
    fixed: list[Competitor] = []
    fed = looks = 0
    racing = True
    for number, part in enumerate(rounds, start=1):
        got = list(run_round(list(part)))
        if len(got) != len(part):
            raise ValueError(f"run_round returned {len(got)} rows for {len(part)} episodes of round {number}")
        rows += got
        evaluated += part
        own += [(_spec_key(s), bool(r.get("success"))) for s, r in zip(part, got) if not r.get("error")]
        k, n = _counts(rows)
        entry: dict[str, Any] = {"round": number, "n_episodes": n, "n_successes": k, "decision": "end"}
        log.append(entry)
        if number == len(rounds):
            break
        if not racing:
            entry["decision"] = "rest stored"
            continue
        entry["decision"] = "continue"
        if race is None:
            fixed = list(competitors())
            if not fixed:
                continue
            race = VersusFinished(len(fixed), alpha, len(specs))
        new, fed = own[fed:], len(own)
        for j, comp in enumerate(fixed):
            pairs = [(ok, comp.outcomes[key]) for key, ok in new if key in comp.outcomes]
            if pairs:
                race.update(j, [p[0] for p in pairs], [p[1] for p in pairs])
        looks += 1
        if not race.stopped:
            continue
        by = fixed[race.stopped_by]
        rest = [s for later in rounds[number:] for s in later]
        if stored is not None and stored(rest):
            racing = False
            entry["decision"] = "rest stored"
            logger.info("racing: round %d: significantly worse than %s, but the remaining %d episodes are already "
                        "stored; using them", number, by.label, len(rest))
            continue
        entry["decision"] = "stop"
        stopped = number
        test = race.tests[race.stopped_by]
        logger.info("racing: stopped after round %d of %d: significantly worse than %s (%d vs %d discordant episodes "
                    "of %d shared, boundary %d, one-sided alpha %.4g); %d planned episodes not run", number,
                    len(rounds), by.label, test.a_only, test.b_only, test.n_pairs, test.boundary, race.comparison_alpha,
                    len(specs) - len(evaluated))
        break
    comparisons = [_comparison(t, c) for t, c in zip(race.tests, fixed)] if race is not None else []
    stopper = race.stopped_by if race is not None and stopped is not None else -1
    record = {
        "method": METHOD, "sources": SOURCES, "alpha": alpha,
        "comparison_alpha": race.comparison_alpha if race is not None else None,
        "round_trials": round_trials, "rounds_planned": len(rounds), "rounds_run": len(log),
        "looks": looks,
        "stopped_at_round": stopped, "stopped_by": fixed[stopper].label if stopper >= 0 else None,
        "episodes_planned": len(specs), "episodes_evaluated": len(evaluated),
        "episodes_saved": len(specs) - len(evaluated),
        "competitor": comparisons[stopper] if stopper >= 0 else None, "competitors": comparisons, "rounds": log,
    }
    return rows, evaluated, record
