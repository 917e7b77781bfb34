"""The configuration of one benchmark point: sections, one flat YAML form, and the keys derived from field roles.

``vla_algorithm.yaml`` lists flat ``field: values`` (Ianvs passes one value per field to the basemodel); the
code holds them in frozen sections, each owned by the layer that reads it:

=========  ===========================================  ======================================
section    class                                        read by
=========  ===========================================  ======================================
data       :class:`vlamix.data.settings.DataConfig`     the mixture loader, the recorder
mixing     :class:`vlamix.mixing.settings.MixingConfig` the strategies, the loader, the trainer
model      :class:`vlamix.model.settings.ModelConfig`   the trainer (model path, LoRA)
train      :class:`vlamix.train.settings.TrainConfig`   the trainer
eval       :class:`vlamix.eval.settings.EvalConfig`     the rollout plan, the offline metrics
rollout    :class:`vlamix.eval.settings.RolloutConfig`  the rollout runtime
racing     :class:`RacingConfig`                        :mod:`vlamix.pipeline.racing`
=========  ===========================================  ======================================

Every field is declared once with its role (:mod:`vlamix.core.settings`); the train key, the eval key and
the fields that must match on resume are derived from the roles, never listed by hand.

Validation is two steps: :meth:`BenchConfig.from_dict` checks values (pure, cheap, once); whether the
environment can run the point (files on disk, the LIBERO registry, the scripted expert, CUDA, memory) is
:func:`vlamix.pipeline.checks.check_environment`, run once per job by ``vlamix check`` / ``vlamix run`` and at
the first construction under Ianvs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from vlamix.core.constants import DATASET_TO_SUITE, LIBERO_SUITES
from vlamix.core.errors import ConfigError
from vlamix.core.io import load_yaml
from vlamix.core.settings import check_bool, check_int, default_of, number_string_fix, role, setting, settings_of, yaml_name
from vlamix.core.suites import base_suite
from vlamix.data.settings import DataConfig
from vlamix.eval.settings import EvalConfig, RolloutConfig
from vlamix.mixing.settings import MixingConfig
from vlamix.mixing.strategies import STRATEGIES, strategy_params
from vlamix.model.settings import ModelConfig
from vlamix.train.settings import TrainConfig, resolve_precision


@dataclass(frozen=True)
class RacingConfig:
    """Racing for the evaluation budget (:mod:`vlamix.pipeline.racing`): in no key, so a raced point's episodes are
    a prefix of the plan, reused by any later evaluation of the same checkpoint."""

    racing: bool = setting(False, role="runtime",
                           doc="evaluate in rounds and stop a point that is significantly worse than a finished point")
    racing_round_trials: int = setting(10, role="runtime", unit="episodes per task", doc="trials per planned task in one round")
    racing_alpha: float = setting(0.05, role="runtime", allowed="a number in (0, 0.5)",
                                  doc="bound on the probability that racing stops a point as good as the best finished "
                                      "point (over all looks; each of m finished points gets alpha / m, one-sided)")

    def check(self, trials_per_task: int) -> None:
        check_bool("racing", self.racing)
        check_int("racing_round_trials", self.racing_round_trials, 1)
        if (isinstance(self.racing_alpha, bool) or not isinstance(self.racing_alpha, (int, float))
                or not 0.0 < self.racing_alpha < 0.5):
            raise ConfigError("racing_alpha", f"must be a number in (0, 0.5) (e.g. 0.05), got {self.racing_alpha!r}")
        if self.racing and trials_per_task < 2:
            raise ConfigError("racing", f"true needs at least two rounds, so trials_per_task >= 2 (got {trials_per_task}); "
                              f"allowed here: false")
        if self.racing and self.racing_round_trials >= trials_per_task:
            raise ConfigError(
                "racing_round_trials",
                f"{self.racing_round_trials} trials per round with trials_per_task {trials_per_task} leaves a single "
                f"round, so racing can stop nothing; allowed with racing: true: 1..{trials_per_task - 1} (or racing: false)")


#: (attribute, section class) in the order of the flat form and of validation.
SECTIONS = (("data", DataConfig), ("mixing", MixingConfig), ("model", ModelConfig), ("train", TrainConfig),
            ("eval", EvalConfig), ("rollout", RolloutConfig), ("racing", RacingConfig))
#: Fields that hold a list (YAML lists become tuples) and are often written as a bare string.
_LIST_FIELDS = ("eval_suites", "dataset_whitelist", "dataset_blacklist")


def _index() -> dict[str, tuple[str, dataclasses.Field]]:
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for attr, cls in SECTIONS:
        for f in settings_of(cls):
            name = yaml_name(f)
            if name in out:
                raise RuntimeError(f"configuration field {name!r} is declared in two sections")
            out[name] = (attr, f)
    return out


#: YAML name -> (section attribute, dataclass field), every field of every section.
FIELDS: dict[str, tuple[str, dataclasses.Field]] = _index()


def fields_with_role(*roles: str) -> tuple[str, ...]:
    """YAML names of the fields with one of ``roles`` (in declaration order)."""
    return tuple(name for name, (_, f) in FIELDS.items() if role(f) in roles)


#: Fields that determine the rollout episodes (the eval key).
EPISODE_FIELDS = fields_with_role("episodes")
#: Fields of the train key that must match when a run resumes (the rest may change: steps, data location, ...).
RESUME_FIELDS = tuple(n for n in fields_with_role("train") if not FIELDS[n][1].metadata["may_change_on_resume"])


@dataclass(frozen=True)
class BenchConfig:
    """All hyperparameters of one benchmark point (one leaderboard row), in sections.

    Build it from the flat YAML form with :meth:`from_dict`; ``cfg.train.batch_size``, ``cfg.data.mixture``,
    ``cfg.model.path`` (YAML ``model``), ... read it; :meth:`get` reads a field by its YAML name;
    :meth:`replace` changes fields by YAML name. ``extra``: keys Ianvs adds (``allow_extra``).
    """

    data: DataConfig
    mixing: MixingConfig = field(default_factory=MixingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    racing: RacingConfig = field(default_factory=RacingConfig)
    extra: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ the flat form
    @staticmethod
    def field_names() -> tuple[str, ...]:
        """Every field's YAML name, in declaration order."""
        return tuple(FIELDS)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, allow_extra: bool = False) -> "BenchConfig":
        """Build and check a config from flat hyperparameters (as Ianvs passes them).

        Args:
            values: YAML name -> value; unknown names raise unless ``allow_extra`` (then kept in ``extra``).
        Raises:
            ConfigError: naming the first invalid field (values only; see :mod:`vlamix.pipeline.checks`).
        """
        unknown = sorted(k for k in values if k not in FIELDS)
        if unknown and not allow_extra:
            raise ConfigError(unknown[0], f"unknown field; allowed fields: {', '.join(sorted(FIELDS))}")
        if "mixture" not in values:
            raise ConfigError("mixture", "required: a mapping from dataset name to weight")
        cfg = cls._build({k: v for k, v in values.items() if k in FIELDS}, extra={k: values[k] for k in unknown})
        cfg.validate()
        return cfg

    @classmethod
    def from_file(cls, path: str, overrides: Mapping[str, Any] | None = None) -> "BenchConfig":
        """A checked config from a YAML or JSON file of flat fields, with ``overrides`` applied on top.

        Raises:
            FileNotFoundError: no such file. DuplicateKeyError: a key twice in one YAML mapping (both lines named).
            ConfigError: the file is not a mapping (field ``<file>``), or an invalid field (named).
        """
        with open(path, encoding="utf-8") as f:
            text = f.read()
        values = json.loads(text) if path.endswith(".json") else load_yaml(text, path)
        if not isinstance(values, dict):
            raise ConfigError("<file>", f"{path}: expected a mapping of configuration fields, got {type(values).__name__}")
        return cls.from_dict({**values, **(overrides or {})})

    @classmethod
    def _build(cls, values: Mapping[str, Any], extra: Mapping[str, Any]) -> "BenchConfig":
        per: dict[str, dict[str, Any]] = {attr: {} for attr, _ in SECTIONS}
        for name, value in _normalised(values).items():
            attr, f = FIELDS[name]
            per[attr][f.name] = value
        return cls(**{attr: sec(**per[attr]) for attr, sec in SECTIONS}, extra=dict(extra))

    def get(self, name: str) -> Any:
        """A field's value by its YAML name. Raises KeyError for an unknown name."""
        attr, f = FIELDS[name]
        return getattr(getattr(self, attr), f.name)

    def replace(self, **changes: Any) -> "BenchConfig":
        """A checked copy with fields changed (YAML names).

        Raises:
            ConfigError: an unknown name or an invalid value.
        """
        unknown = sorted(k for k in changes if k not in FIELDS)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; allowed fields: {', '.join(sorted(FIELDS))}")
        cfg = self.without_checks(**changes)
        cfg.validate()
        return cfg

    def without_checks(self, **changes: Any) -> "BenchConfig":
        """A copy with fields changed (YAML names), not checked: for derived configs whose values come from a
        checked one (DoReMi's reference run, the offline metrics' fixed held-out set)."""
        per: dict[str, dict[str, Any]] = {}
        for name, value in _normalised(changes).items():
            attr, f = FIELDS[name]
            per.setdefault(attr, {})[f.name] = value
        return dataclasses.replace(self, **{attr: dataclasses.replace(getattr(self, attr), **kw) for attr, kw in per.items()})

    def to_dict(self) -> dict[str, Any]:
        """The flat form (JSON-able): every field by YAML name; ``eval_suites`` resolved (:meth:`resolved_eval_suites`)."""
        out = {name: _plain(self.get(name)) for name in FIELDS}
        out["eval_suites"] = list(self.resolved_eval_suites())
        return out

    def sections(self) -> Iterator[tuple[str, Any]]:
        """``(attribute, section)`` pairs in :data:`SECTIONS` order."""
        for attr, _ in SECTIONS:
            yield attr, getattr(self, attr)

    # ------------------------------------------------------------------ checks of values
    def validate(self) -> None:
        """Check every value; raise :class:`ConfigError` naming the first invalid field. Pure: no disk, no registry,
        no CUDA (those are :func:`vlamix.pipeline.checks.check_environment`)."""
        _check_yaml_pitfalls(self)
        self.data.check()
        self.model.check()
        self.data.check_counts_and_filters()
        self.mixing.check(self.data)
        self.train.check()
        if not self.resolved_eval_suites():
            raise ConfigError("eval_suites", f"no suite to evaluate; allowed: {', '.join(LIBERO_SUITES)} and their perturbations")
        self.eval.check()
        only = self.eval.eval_instruction_suites
        suites = self.resolved_eval_suites()
        if only is not None and (not isinstance(only, tuple) or not only or not set(only) <= set(suites)):
            raise ConfigError("eval_instruction_suites", f"got {only!r}; allowed: null or a non-empty list of evaluation suites ({', '.join(suites)})")
        self.racing.check(self.eval.trials_per_task)
        self.rollout.check()
        self._check_unnorm_sources(suites)
        steps = self.eval.open_loop_steps
        if steps is not None and steps > self.model.action_chunk:
            chunk = self.model.action_chunk
            raise ConfigError("open_loop_steps", f"{steps} actions per observation but the model predicts chunks of "
                              f"{chunk} (action_chunk); allowed: null or 1..{chunk}")

    def _check_unnorm_sources(self, suites: tuple[str, ...]) -> None:
        """Every evaluated suite must have action statistics to un-normalise with.

        The fine-tuned checkpoint holds the norm stats of the datasets it trained on; a suite uses those of
        ``<base suite>_no_noops`` (or ``<base suite>``), else the only dataset's when exactly one was trained
        (:func:`vlamix.eval.policy.resolve_unnorm_key`, OpenVLA's ``unnorm_key`` rule). A suite without its dataset
        in a mixture of two or more datasets would fail at its first rollout, after training.

        Raises:
            ConfigError: field ``eval_suites``, naming the suite and the trained datasets.
        """
        trained = self.data.selected_datasets()
        if len(trained) < 2:
            return
        for suite in suites:
            base = base_suite(suite)
            if f"{base}_no_noops" not in trained and base not in trained:
                raise ConfigError(
                    "eval_suites",
                    f"suite '{suite}' has no action norm stats: its dataset {base}_no_noops is not trained on (trained: "
                    f"{', '.join(trained)}), and with two or more datasets no single statistics un-normalise its "
                    f"actions; give {base}_no_noops a weight > 0 in the mixture or leave '{suite}' out of eval_suites",
                )

    # ------------------------------------------------------------------ derived values
    def mixture_weights(self) -> dict[str, float]:
        return self.data.mixture_weights()

    def selected_datasets(self) -> list[str]:
        return self.data.selected_datasets()

    def mixture_label(self) -> str:
        return self.data.mixture_label()

    def resolved_mixing_level(self) -> str:
        return self.mixing.resolved_level()

    def resolved_eval_suites(self) -> tuple[str, ...]:
        """``eval_suites``, or the suites of the datasets trained on (after the white/blacklist)."""
        if self.eval.eval_suites is not None:
            return tuple(self.eval.eval_suites)
        return tuple(dict.fromkeys(DATASET_TO_SUITE[name] for name in self.data.selected_datasets()))

    def resolved_precision(self) -> str:
        """``precision`` with "auto" resolved (:func:`vlamix.train.settings.resolve_precision`)."""
        return resolve_precision(self.train.precision, self.model.path)

    def resolved_center_crop(self) -> bool:
        """``center_crop``, with null (auto) resolved for the checkpoint this config trains: ``image_aug``."""
        return bool(self.data.image_aug) if self.eval.center_crop is None else bool(self.eval.center_crop)

    def policy_batch_size(self) -> int:
        return self.rollout.policy_batch_size()

    def resolved_open_loop_steps(self) -> int:
        """Actions executed per policy query: ``open_loop_steps``, or the whole chunk (``action_chunk``) when null."""
        return self.model.action_chunk if self.eval.open_loop_steps is None else int(self.eval.open_loop_steps)

    def strategy_label(self) -> str:
        """Label of the strategy and the parameters it uses (``temperature T=2 by task``, ``doremi eta=1 c=0.05 K=10
        ref=initial``), with `` | filter ...`` when steps are filtered: the rank column ``mixing_strategy``."""
        d = self.data
        filters = []
        if d.filter_min_motion > 0:
            filters.append(f"motion<{d.filter_min_motion:g} w{d.filter_motion_window}")
        if d.filter_action_limit is not None:
            filters.append(f"|a|<={d.filter_action_limit:g}")
        if not d.filter_nonfinite:
            filters.append("keep NaN/Inf")
        short = lambda n: n.replace("libero_", "").replace("_no_noops", "")  # noqa: E731
        if d.dataset_whitelist is not None:
            filters.append("only " + ",".join(short(n) for n in d.dataset_whitelist))
        if d.dataset_blacklist is not None:
            filters.append("without " + ",".join(short(n) for n in d.dataset_blacklist))
        label = self.mixing.label(d)
        return label + (f" | filter {'; '.join(filters)}" if filters else "")

    # ------------------------------------------------------------------ keys
    def training_signature(self) -> dict[str, Any]:
        """The train-role fields (flat) that determine the trained model: two configs with equal signatures train the
        same model. Parameters the strategy ignores are reset to their defaults; for a strategy whose weights do not
        matter only the set of datasets is kept; fields added after runs were stored are left out at their default.
        """
        out = {name: value for name, value in self.to_dict().items() if role(FIELDS[name][1]) == "train"}
        cls = STRATEGIES.get(self.mixing.strategy)
        for name in strategy_params():
            if name not in cls.params:
                out[name] = _plain(default_of(FIELDS[name][1]))
        out["mixing_level"] = self.mixing.resolved_level()
        if not cls.uses_mixture_weights:
            out["mixture"] = {name: 1 for name in self.data.mixture_weights()}
        if self.mixing.resolved_level() != "skill":
            out["skill_map"] = None
        elif self.mixing.loss_weighting != "none":  # the loss weights' skill groups depend on it
            out["skill_map"] = _plain(self.mixing.skill_map)
        for name, (_, f) in FIELDS.items():
            if f.metadata["key_omits_default"] and out.get(name) == _plain(default_of(f)):
                out.pop(name, None)
        out["precision"] = self.resolved_precision()  # "auto" trains what it resolves to
        return out


def recipe_label(config: Mapping[str, Any]) -> str:
    """The action recipe of a point as its rank column ``recipe`` and the report show it.

    ``tokens`` for OpenVLA's action tokens (one action per observation); for OpenVLA-OFT's parallel decoding
    (moojink/openvla-oft) ``l1_regression chunk <action_chunk> open-loop <actions executed per query>``, then
    ``+wrist`` and ``+proprio`` for the optional inputs, e.g. ``l1_regression chunk 8 open-loop 8 +wrist +proprio``.

    Args:
        config: a point's flat configuration (:meth:`BenchConfig.to_dict`, as a prediction's ``config``); fields
            it lacks take their defaults (a prediction written before the recipe existed is ``tokens``), and a null
            ``open_loop_steps`` is the whole chunk (:meth:`BenchConfig.resolved_open_loop_steps`).
    Returns:
        The label (str).
    """
    value = {name: config.get(name, _plain(default_of(FIELDS[name][1]))) for name in RECIPE_FIELDS}
    if value["action_head"] == "tokens":
        return "tokens"
    chunk = int(value["action_chunk"])
    steps = chunk if value["open_loop_steps"] is None else int(value["open_loop_steps"])
    extras = [flag for name, flag in (("use_wrist_image", "+wrist"), ("use_proprio", "+proprio")) if value[name]]
    return " ".join([f"{value['action_head']} chunk {chunk} open-loop {steps}", *extras])


#: The flat fields :func:`recipe_label` reads.
RECIPE_FIELDS = ("action_head", "action_chunk", "open_loop_steps", "use_wrist_image", "use_proprio")


def train_key(cfg: BenchConfig) -> str:
    """Stable 16-hex-digit key of :meth:`BenchConfig.training_signature`: where a run is stored and reused."""
    blob = json.dumps(cfg.training_signature(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def eval_key(cfg: BenchConfig) -> str:
    """Stable 12-hex-digit key of the fields that determine the rollout episodes (:data:`EPISODE_FIELDS`; the
    suites resolved, ``center_crop`` resolved for this config's checkpoint, ``open_loop_steps`` resolved and left
    out when it is 1, the one action per observation of every run stored before it existed)."""
    values = {name: _plain(cfg.get(name)) for name in EPISODE_FIELDS}
    values["eval_suites"] = list(cfg.resolved_eval_suites())
    values["center_crop"] = cfg.resolved_center_crop()
    values["open_loop_steps"] = cfg.resolved_open_loop_steps()
    if values["open_loop_steps"] == 1:
        values.pop("open_loop_steps")
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------ helpers
def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    """YAML values in the types the sections hold: lists as tuples, ``center_crop: auto`` as null."""
    out = dict(values)
    for name in ("eval_suites", "curriculum", "dataset_whitelist", "dataset_blacklist", "eval_instruction_suites"):
        if isinstance(out.get(name), list):
            out[name] = tuple(out[name])
    if isinstance(out.get("eval_instruction"), (str, list)):
        value = out["eval_instruction"]
        out["eval_instruction"] = (value,) if isinstance(value, str) else tuple(value)
    if out.get("center_crop") == "auto":
        out["center_crop"] = None
    if isinstance(out.get("heldout_tasks"), Mapping):
        out["heldout_tasks"] = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in out["heldout_tasks"].items()}
    return out


def _plain(value: Any) -> Any:
    """A JSON-able copy: mappings as dicts, tuples as lists (recursively)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_yaml_pitfalls(cfg: BenchConfig) -> None:
    """Numbers that YAML read as strings, and bare strings where a list is expected (before the other checks,
    whose messages would not say why)."""
    for name, (attr, f) in FIELDS.items():
        value = cfg.get(name)
        if name in _LIST_FIELDS and isinstance(value, str):
            raise ConfigError(name, f"got the string {value!r}, a list is expected; write [{value}] (a YAML list)")
        if name == "mixture" and isinstance(value, Mapping):
            for dataset, weight in value.items():
                fix = number_string_fix(weight)
                if fix:
                    raise ConfigError("mixture", f"weight of '{dataset}': {fix}")
        elif str(f.type).split(" |")[0] in ("int", "float"):
            fix = number_string_fix(value)
            if fix:
                raise ConfigError(name, fix)
