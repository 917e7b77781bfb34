"""Racing for the evaluation budget: stop evaluating points that are clearly worse than the best.

Points are evaluated in rounds of episodes. After a round a point's success rate gets its Wilson
score interval (:func:`vlamix.eval.stats.wilson_interval`, ``z`` = 1.96 by default, fractions in
[0, 1]); a point whose upper bound falls below the best point's lower bound stops (its episodes so
far stay its result: same success rate estimator, smaller N, wider interval). The best point never
stops: its upper bound is at least its own lower bound. This is Hoeffding racing (Maron & Moore
1994, "Hoeffding races: accelerating model selection search for classification and function
approximation", NIPS 6; Heidrich-Meisner & Igel 2009 for racing in policy search) with Wilson
intervals, which hold at small N. Every decision compares two 95% intervals; the looks after every
round are not corrected for multiplicity (as in the original races).

Two forms:

- :func:`race`: the decision rule over episode streams of several points evaluated round by round
  together (the leader = the highest lower bound among the points still running).
- :func:`race_point`: what ``vlamix run``, ``ianvs -f`` and the Ray backend do with the
  hyperparameter ``racing: true`` (:class:`vlamix.pipeline.config.RacingConfig` ``racing``,
  ``racing_round_trials``). Their points are evaluated one after another (or in parallel trials), so
  a point races against the *finished* points of the same job evaluated on the same episode plan
  (:func:`finished_competitors`, :func:`plan_key`): those in the job ledger (:mod:`vlamix.pipeline.ledger`)
  when the round ends (under Ray: whatever trials have finished by then).
  Round r runs trials ``r * k .. (r + 1) * k - 1`` of every planned task (``k`` =
  ``racing_round_trials``, :func:`plan_rounds`), so a stopped point is balanced over tasks, and its
  episodes are a prefix of the full plan in the same rollout file: the eval key does not depend on
  racing, and a later evaluation without racing reuses them and runs only the rest.

Usage (inside :meth:`vlamix.pipeline.point.VLADataSelect.predict`)::

    rows, evaluated, record = race_point(specs, lambda part: evaluate(ckpt, part, out_jsonl=path),
                                         round_trials=10, best=lambda: best_competitor(finished_competitors(url, key)))
    record["episodes_saved"], record["stopped_at_round"]
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from vlamix.core.labels import point_label
from vlamix.core.settings import settings_of, yaml_name
from vlamix.eval.stats import Z_95, wilson_interval
from vlamix.pipeline.config import EPISODE_FIELDS, RacingConfig
from vlamix.pipeline.ledger import entries as ledger_entries

logger = logging.getLogger(__name__)

#: Fields of racing (:class:`vlamix.pipeline.config.RacingConfig`, runtime role): in neither the train key nor
#: the eval key, nor :func:`plan_key`.
RACING_FIELDS = tuple(yaml_name(f) for f in settings_of(RacingConfig))


@dataclass
class RaceResult:
    """Per point: episodes run, successes, the round it stopped in (None: ran to the end)."""

    episodes: dict[str, int]
    successes: dict[str, int]
    stopped_at_round: dict[str, int | None]
    max_episodes: int
    rounds: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    @property
    def stopped(self) -> list[str]:
        return [p for p, r in self.stopped_at_round.items() if r is not None]

    @property
    def episodes_saved(self) -> int:
        """Episodes not run compared with evaluating every point to ``max_episodes``."""
        return sum(self.max_episodes - n for n in self.episodes.values())


def race(
    run_episodes: Callable[[str, int, int], list[bool]],
    points: list[str],
    *,
    round_size: int,
    max_episodes: int,
    z: float = Z_95,
) -> RaceResult:
    """Evaluate ``points`` in rounds, stopping those whose Wilson upper bound < the leader's lower bound.

    Args:
        run_episodes: ``(point, start, count) -> list of successes`` for episodes ``start .. start+count-1``
            of that point (the same episode indices, i.e. init states, for every point).
        points: point names (str).
        round_size, max_episodes: episodes per round and per point at most (int >= 1).
        z: normal quantile of the Wilson intervals (default two-sided 95%).
    Returns:
        :class:`RaceResult` (episodes run, successes and stop round per point; bounds per round).
    Raises:
        ValueError: ``round_size`` or ``max_episodes`` < 1, or no points.
    """
    if round_size < 1 or max_episodes < 1 or not points:
        raise ValueError(f"need round_size >= 1, max_episodes >= 1 and points, got {round_size}, {max_episodes}, {points}")
    n = {p: 0 for p in points}
    k = {p: 0 for p in points}
    stopped: dict[str, int | None] = {p: None for p in points}
    result = RaceResult(n, k, stopped, max_episodes)
    rnd = 0
    while True:
        active = [p for p in points if stopped[p] is None and n[p] < max_episodes]
        if not active:
            return result
        rnd += 1
        for p in active:
            count = min(round_size, max_episodes - n[p])
            outcomes = run_episodes(p, n[p], count)
            if len(outcomes) != count:
                raise ValueError(f"run_episodes returned {len(outcomes)} outcomes for {count} episodes of {p!r}")
            n[p] += count
            k[p] += sum(bool(o) for o in outcomes)
        bounds = {p: wilson_interval(k[p], n[p], z) for p in points if n[p] > 0}
        result.rounds.append(bounds)
        leader = max((p for p in points if stopped[p] is None), key=lambda p: bounds[p][0])
        for p in points:
            if stopped[p] is None and p != leader and bounds[p][1] < bounds[leader][0]:
                stopped[p] = rnd


# ------------------------------------------------------------------ one point against finished points
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
    """A finished point of the job: its label, prediction file and Wilson interval.

    Attributes:
        label: strategy / mixture label (:func:`vlamix.core.labels.point_label`).
        path: its ledger entry.
        n_episodes, n_successes: episodes without an error, successful ones (int).
        ci_low, ci_high: Wilson interval of its success rate at the race's ``z`` (fractions in [0, 1]).
    """

    label: str
    path: str
    n_episodes: int
    n_successes: int
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "path": self.path, "n_episodes": self.n_episodes, "n_successes": self.n_successes,
                "success_rate": self.n_successes / self.n_episodes if self.n_episodes else None,
                "ci_low": self.ci_low, "ci_high": self.ci_high}


def _counts(rows: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(successes, episodes) over the rows without an ``error`` (as :func:`vlamix.eval.stats.summarize`)."""
    ok = [r for r in rows if not r.get("error")]
    return sum(bool(r.get("success")) for r in ok), len(ok)


def finished_competitors(
    ledger: str | None, plan: str, *, exclude_train_key: str | None = None, z: float = Z_95
) -> list[Competitor]:
    """The finished points of the same job whose episode plan is ``plan`` (:func:`plan_key`).

    A point is finished when its entry is in the job ledger (:mod:`vlamix.pipeline.ledger`, written last by
    ``predict`` under ``vlamix run``, ``ianvs -f`` and the Ray backend alike). Left out: reference rows (the
    scripted expert), points with another plan or no ``config``, points whose ``train_key`` is ``exclude_train_key``
    (the same model: a point does not race against an earlier run of itself), points without an episode free of
    errors, and unreadable entries (with a warning).

    Args:
        ledger: the job ledger folder; None gives [] (no job known).
        plan: this point's :func:`plan_key`.
        z: normal quantile of the intervals.
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
            k, n = _counts(pred.get("episodes") or [])
        except (KeyError, TypeError, AttributeError) as err:
            logger.warning("racing: skipping unreadable finished point %s (%s)", path, err)
            continue
        if n:
            low, high = wilson_interval(k, n, z)
            out.append(Competitor(point_label(pred), path, n, k, low, high))
    return out


def best_competitor(competitors: Sequence[Competitor]) -> Competitor | None:
    """The competitor with the highest Wilson lower bound (the first by path on ties); None if empty."""
    best = None
    for c in competitors:
        if best is None or c.ci_low > best.ci_low:
            best = c
    return best


def race_point(
    specs: Sequence[Any],
    run_round: Callable[[list[Any]], list[dict[str, Any]]],
    *,
    round_trials: int,
    best: Callable[[], Competitor | None],
    stored: Callable[[list[Any]], bool] | None = None,
    z: float = Z_95,
) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    """Evaluate one point's plan in rounds; stop when its Wilson upper bound < the best finished point's lower bound.

    After every round but the last: ``(low, high) = wilson_interval(successes, episodes, z)`` over the
    point's episodes so far without an error, ``c = best()`` (asked anew each round, so a point that
    finishes meanwhile, e.g. a parallel Ray trial, counts from then on); stop when ``c`` is not None
    and ``high < c.ci_low``. A point whose lower bound is at least ``c.ci_low`` (the leader) is never
    stopped, and with no competitor the whole plan runs. When ``stored(rest)`` says every remaining
    episode already has a row (a previous evaluation ran them), the rest costs nothing: the point is
    not stopped and its result is the whole plan.

    Args:
        specs: the plan (:class:`vlamix.eval.plan.EpisodeSpec` list, from ``plan_episodes``).
        run_round: ``specs -> episode rows`` in the order of ``specs`` (``vlamix.eval.rollout.evaluate``
            with the point's ``out_jsonl``: rows already stored are reused).
        round_trials: trials per task per round (int >= 1, :func:`plan_rounds`).
        best: returns the best finished competitor now (:func:`best_competitor` of
            :func:`finished_competitors`), or None.
        stored: ``specs -> bool``, True when all of them already have rows (None: never).
        z: normal quantile of the intervals (default two-sided 95%).
    Returns:
        ``(rows, evaluated_specs, record)``: rows of the evaluated rounds in plan order, their specs,
        and the record kept in the prediction as ``racing``: ``round_trials``, ``z``,
        ``rounds_planned``, ``rounds_run``, ``stopped_at_round`` (1-based; None = not stopped),
        ``episodes_planned``, ``episodes_evaluated``, ``episodes_saved`` (planned - evaluated; ints),
        ``competitor`` (:meth:`Competitor.as_dict` of the best finished point at the last decision,
        or None) and ``rounds`` (per round: ``round``, ``n_episodes``, ``n_successes``, ``ci_low``,
        ``ci_high``, ``best_ci_low`` (None without a competitor), ``decision``: "continue", "stop",
        "rest stored" or "end").
    Raises:
        ValueError: ``round_trials`` < 1, or ``run_round`` returned a wrong number of rows.
    """
    rounds = plan_rounds(specs, round_trials)
    rows: list[dict[str, Any]] = []
    evaluated: list[Any] = []
    log: list[dict[str, Any]] = []
    stopped: int | None = None
    competitor: Competitor | None = None
    racing = True
    for number, part in enumerate(rounds, start=1):
        got = list(run_round(list(part)))
        if len(got) != len(part):
            raise ValueError(f"run_round returned {len(got)} rows for {len(part)} episodes of round {number}")
        rows += got
        evaluated += part
        k, n = _counts(rows)
        low, high = wilson_interval(k, n, z)
        entry: dict[str, Any] = {"round": number, "n_episodes": n, "n_successes": k, "ci_low": low, "ci_high": high,
                                 "best_ci_low": None, "decision": "end"}
        log.append(entry)
        if number == len(rounds):
            break
        if not racing:
            entry["decision"] = "rest stored"
            continue
        current = best()
        if current is not None:
            competitor = current
            entry["best_ci_low"] = current.ci_low
        if current is not None and high < current.ci_low:
            rest = [s for later in rounds[number:] for s in later]
            if stored is not None and stored(rest):
                racing = False
                entry["decision"] = "rest stored"
                logger.info("racing: round %d: upper bound %.3f < %.3f of %s, but the remaining %d episodes are "
                            "already stored; using them", number, high, current.ci_low, current.label, len(rest))
                continue
            entry["decision"] = "stop"
            stopped = number
            logger.info("racing: stopped after round %d of %d: upper bound %.3f (%d/%d) < lower bound %.3f of %s; "
                        "%d planned episodes not run", number, len(rounds), high, k, n, current.ci_low, current.label,
                        len(specs) - len(evaluated))
            break
        entry["decision"] = "continue"
    record = {
        "round_trials": round_trials, "z": z, "rounds_planned": len(rounds), "rounds_run": len(log),
        "stopped_at_round": stopped, "episodes_planned": len(specs), "episodes_evaluated": len(evaluated),
        "episodes_saved": len(specs) - len(evaluated),
        "competitor": competitor.as_dict() if competitor is not None else None, "rounds": log,
    }
    return rows, evaluated, record
