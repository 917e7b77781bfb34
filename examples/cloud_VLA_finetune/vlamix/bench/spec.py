"""Parse an Ianvs benchmarking job (``benchmarkingjob.yaml`` + ``testenv.yaml`` + algorithm YAMLs).

The layout and the meaning of every key follow kubeedge/ianvs:
``core/cmd/obj/benchmarkingjob.py`` (job), ``core/testenvmanager/testenv/testenv.py`` and
``core/testenvmanager/dataset/dataset.py`` (test environment), ``core/testcasecontroller/
algorithm/algorithm.py`` and ``algorithm/module/module.py`` (algorithms, modules, hyperparameter
grid), ``core/storymanager/rank/rank.py`` (rank). As in Ianvs, every URL (testenv, algorithm,
module, metric, dataset index) is relative to the current working directory (the Ianvs root), not
to the YAML file that names it.

The hyperparameter grid is expanded exactly as Ianvs does (``Module._parse_hyperparameters`` and
``generation_assistant.get_full_combinations``): each entry of a module's ``hyperparameters`` list is
a one-key mapping ``{name: {values: [...]}}``; the points are the Cartesian product of the value
lists in list order (the last list varies fastest), each merged over the mapping read from the
``other_hyperparameters`` files; the modules of an algorithm are combined the same way, and the
algorithms follow the order of ``test_object.algorithms``.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import yaml

from vlamix.core.io import DuplicateKeyError, load_yaml

#: Paradigm names Ianvs accepts (``core/common/constant.py`` ``ParadigmType``); the runner executes
#: only the single-task one.
PARADIGMS = (
    "singletasklearning",
    "incrementallearning",
    "multiedgeinference",
    "lifelonglearning",
    "federatedlearning",
    "federatedclassincrementallearning",
    "jointinference",
)
SINGLE_TASK = "singletasklearning"
#: Rank save modes of ``Rank.save`` that the runner writes.
SAVE_MODES = ("selected_and_all", "selected_only")


class JobConfigError(ValueError):
    """A benchmarking-job YAML is malformed. The message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class MetricSpec:
    """A testenv metric: ``name`` (= registry alias = rank column) and the ``url`` of its Python file."""

    name: str
    url: str


@dataclass(frozen=True)
class TestEnvSpec:
    """The ``testenv`` block: dataset index files (TXT, see :mod:`vlamix.bench.dataset`) and metrics."""

    __test__ = False  # not a pytest test class

    path: str
    train_index: str
    test_index: str
    metrics: tuple[MetricSpec, ...]

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]


@dataclass(frozen=True)
class ModuleSpec:
    """One algorithm module (``type``, registry ``name``, file ``url``) with its expanded grid.

    ``hyperparameters_list`` holds one dict per grid point, in Ianvs order; it is empty when the
    module has no ``hyperparameters`` key (the module is then used once, with no arguments).
    """

    type: str
    name: str
    url: str
    hyperparameters_list: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class AlgorithmSpec:
    """One entry of ``test_object.algorithms``: its name, YAML url, paradigm and modules."""

    name: str
    url: str
    paradigm_type: str
    initial_model_url: str
    modules: tuple[ModuleSpec, ...]
    third_party_packages: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class RankSpec:
    """The ``rank`` block (defaults as in Ianvs ``Rank.__init__``)."""

    sort_by: tuple[Any, ...]
    visualization: Mapping[str, Any] = field(default_factory=lambda: {"mode": "selected_only", "method": "print_table"})
    selected_dataitem: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: {"paradigms": ["all"], "modules": ["all"], "hyperparameters": ["all"], "metrics": ["all"]}
    )
    save_mode: str = "selected_and_all"


@dataclass(frozen=True)
class JobSpec:
    """A parsed benchmarking job. ``job_dir`` = ``<workspace>/<name>`` (relative paths kept relative)."""

    path: str
    name: str
    workspace: str
    testenv: TestEnvSpec
    algorithms: tuple[AlgorithmSpec, ...]
    rank: RankSpec

    @property
    def job_dir(self) -> str:
        return os.path.join(self.workspace, self.name)


# ---------------------------------------------------------------------------------------- grid
def full_combinations(name_values: Iterable[tuple[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    """Cartesian product of named value lists, as Ianvs ``get_full_combinations``.

    ``[("a", [1, 2]), ("b", [3, 4])]`` -> ``[{a:1,b:3}, {a:1,b:4}, {a:2,b:3}, {a:2,b:4}]``.
    """
    names, values = [], []
    for name, vals in name_values:
        names.append(name)
        values.append(list(vals))
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def expand_hyperparameters(entries: Any, *, source: str = "<algorithm>") -> list[dict[str, Any]]:
    """Expand a module's ``hyperparameters`` list into one dict per grid point (Ianvs order).

    Args:
        entries: list of one-key mappings ``{name: {"values": [v1, v2, ...]}}``; the special name
            ``other_hyperparameters`` lists YAML files whose mappings form the base of every point.
        source: file name used in error messages.
    Raises:
        JobConfigError: an entry is not a one-key mapping with a ``values`` list, a name is listed twice
            (Ianvs would silently keep the later one), or an ``other_hyperparameters`` file is missing or not a mapping.
    """
    if not isinstance(entries, list):
        raise JobConfigError(f"{source}: 'hyperparameters' must be a list of {{name: {{values: [...]}}}}, got {entries!r}")
    base: dict[str, Any] = {}
    grid: list[tuple[str, list[Any]]] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise JobConfigError(f"{source}: each hyperparameter entry must be a one-key mapping {{name: {{values: [...]}}}}, got {entry!r}")
        (name, spec), = entry.items()
        values = spec.get("values") if isinstance(spec, Mapping) else None
        if not isinstance(values, list) or not values:
            raise JobConfigError(f"{source}: hyperparameter '{name}' needs a non-empty 'values' list, got {spec!r}")
        if name != "other_hyperparameters" and any(name == seen for seen, _ in grid):
            raise JobConfigError(f"{source}: hyperparameter '{name}' is listed twice; give each field one entry with "
                                 f"all its values (values: [a, b]), since Ianvs would keep only the later entry")
        if name == "other_hyperparameters":
            for hp_file in values:
                base.update(_read_other_hyperparameters(hp_file, source))
        else:
            grid.append((str(name), copy.deepcopy(values)))
    points = []
    for combo in full_combinations(grid):
        point = copy.deepcopy(base)
        point.update(combo)
        points.append(point)
    return points


def _read_other_hyperparameters(hp_file: Any, source: str) -> dict[str, Any]:
    if not isinstance(hp_file, str) or not os.path.isfile(hp_file):
        raise JobConfigError(f"{source}: other_hyperparameters file {hp_file!r} not found (paths are relative to the current directory)")
    values = _read_yaml(hp_file)
    if not isinstance(values, Mapping):
        raise JobConfigError(f"{hp_file}: other_hyperparameters file must hold a mapping name -> value")
    return dict(values)


# ---------------------------------------------------------------------------------------- parsing
def load_job(path: str) -> JobSpec:
    """Read ``benchmarkingjob.yaml`` and every file it names (URLs relative to the current directory).

    Raises:
        JobConfigError: a file is missing, a required key is absent or has the wrong type, the
            paradigm is not single-task learning, or the rank block is invalid.
    """
    raw = _read_yaml(path)
    if not isinstance(raw, Mapping) or not isinstance(raw.get("benchmarkingjob"), Mapping):
        raise JobConfigError(f"{path}: top-level key 'benchmarkingjob' (a mapping) is required")
    job = raw["benchmarkingjob"]
    name = job.get("name")
    if not isinstance(name, str) or not name:
        raise JobConfigError(f"{path}: benchmarkingjob.name must be a non-empty string")
    workspace = job.get("workspace", "./workspace")
    if not isinstance(workspace, str) or not workspace:
        raise JobConfigError(f"{path}: benchmarkingjob.workspace must be a path string")
    testenv_url = job.get("testenv")
    if not isinstance(testenv_url, str) or not os.path.isfile(testenv_url):
        raise JobConfigError(f"{path}: testenv config file {testenv_url!r} not found (relative to the current directory {os.getcwd()})")
    test_object = job.get("test_object")
    if not isinstance(test_object, Mapping) or test_object.get("type") != "algorithms":
        raise JobConfigError(f"{path}: test_object.type must be 'algorithms'")
    algo_entries = test_object.get("algorithms")
    if not isinstance(algo_entries, list) or not algo_entries:
        raise JobConfigError(f"{path}: test_object.algorithms must be a non-empty list of {{name, url}}")
    algorithms = tuple(_load_algorithm(entry, path) for entry in algo_entries)
    names = [a.name for a in algorithms]
    if len(set(names)) != len(names):
        raise JobConfigError(f"{path}: algorithm names must be unique, got {names}")
    rank_raw = job.get("rank")
    if not isinstance(rank_raw, Mapping):
        raise JobConfigError(f"{path}: a 'rank' block with sort_by is required")
    return JobSpec(
        path=path,
        name=name,
        workspace=workspace,
        testenv=load_testenv(testenv_url),
        algorithms=algorithms,
        rank=parse_rank(rank_raw, path),
    )


def load_testenv(path: str) -> TestEnvSpec:
    """Read ``testenv.yaml``: ``testenv.dataset.{train_index,test_index}`` and ``testenv.metrics``.

    Raises:
        JobConfigError: a key is missing, an index or metric file does not exist, or the dataset uses
            a form the runner does not read (only TXT ``train_index``/``test_index``).
    """
    raw = _read_yaml(path)
    env = raw.get("testenv") if isinstance(raw, Mapping) else None
    if not isinstance(env, Mapping):
        raise JobConfigError(f"{path}: top-level key 'testenv' (a mapping) is required")
    dataset = env.get("dataset")
    if not isinstance(dataset, Mapping):
        raise JobConfigError(f"{path}: testenv.dataset is required")
    index = {}
    for key in ("train_index", "test_index"):
        url = dataset.get(key)
        if not isinstance(url, str) or not url.endswith(".txt"):
            others = sorted(k for k in dataset if k not in ("train_index", "test_index", "label"))
            raise JobConfigError(
                f"{path}: testenv.dataset.{key} must name a .txt index file (got {url!r}); "
                f"vlamix.bench reads only TXT indexes{'; found ' + ', '.join(others) if others else ''}"
            )
        if not os.path.isfile(url):
            raise JobConfigError(f"{path}: dataset index {key}={url!r} not found (relative to {os.getcwd()})")
        index[key] = url
    metrics_raw = env.get("metrics")
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise JobConfigError(f"{path}: testenv.metrics must be a non-empty list of {{name, url}}")
    metrics = []
    for entry in metrics_raw:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise JobConfigError(f"{path}: each metric needs a string 'name', got {entry!r}")
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise JobConfigError(
                f"{path}: metric '{entry['name']}' has no url; Ianvs built-in system metrics are not supported by vlamix.bench"
            )
        if not os.path.isfile(url):
            raise JobConfigError(f"{path}: metric '{entry['name']}' file {url!r} not found (relative to {os.getcwd()})")
        metrics.append(MetricSpec(entry["name"], url))
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise JobConfigError(f"{path}: metric names must be unique, got {names}")
    return TestEnvSpec(path=path, train_index=index["train_index"], test_index=index["test_index"], metrics=tuple(metrics))


def _load_algorithm(entry: Any, job_path: str) -> AlgorithmSpec:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str) or not entry.get("name"):
        raise JobConfigError(f"{job_path}: each algorithm needs a non-empty string 'name', got {entry!r}")
    url = entry.get("url")
    if not isinstance(url, str) or not os.path.isfile(url):
        raise JobConfigError(f"{job_path}: algorithm '{entry['name']}' config file {url!r} not found (relative to {os.getcwd()})")
    raw = _read_yaml(url)
    algo = raw.get("algorithm") if isinstance(raw, Mapping) else None
    if not isinstance(algo, Mapping):
        raise JobConfigError(f"{url}: top-level key 'algorithm' (a mapping) is required")
    paradigm = algo.get("paradigm_type")
    if paradigm not in PARADIGMS:
        raise JobConfigError(f"{url}: paradigm_type {paradigm!r} is not an Ianvs paradigm; allowed: {', '.join(PARADIGMS)}")
    if paradigm != SINGLE_TASK:
        raise JobConfigError(f"{url}: vlamix.bench runs only paradigm_type '{SINGLE_TASK}', got '{paradigm}'")
    initial_model_url = algo.get("initial_model_url", "")
    if not isinstance(initial_model_url, str):
        raise JobConfigError(f"{url}: initial_model_url must be a string")
    modules_raw = algo.get("modules")
    if not isinstance(modules_raw, list) or not modules_raw:
        raise JobConfigError(f"{url}: algorithm.modules must be a non-empty list")
    modules = []
    for module in modules_raw:
        if not isinstance(module, Mapping):
            raise JobConfigError(f"{url}: each module must be a mapping with type, name, url")
        mtype, mname, murl = module.get("type"), module.get("name"), module.get("url", "")
        if not isinstance(mtype, str) or not mtype or not isinstance(mname, str) or not mname:
            raise JobConfigError(f"{url}: each module needs string 'type' and 'name', got {dict(module)!r}")
        if not isinstance(murl, str) or (murl and not os.path.isfile(murl)):
            raise JobConfigError(f"{url}: module '{mname}' file {murl!r} not found (relative to {os.getcwd()})")
        hps = expand_hyperparameters(copy.deepcopy(module["hyperparameters"]), source=url) if "hyperparameters" in module else []
        modules.append(ModuleSpec(type=mtype, name=mname, url=murl, hyperparameters_list=tuple(hps)))
    if "basemodel" not in [m.type for m in modules]:
        raise JobConfigError(f"{url}: the single-task paradigm needs a module of type 'basemodel'")
    packages = algo.get("third_party_packages", []) or []
    return AlgorithmSpec(
        name=entry["name"],
        url=url,
        paradigm_type=paradigm,
        initial_model_url=initial_model_url,
        modules=tuple(modules),
        third_party_packages=tuple(packages),
    )


def parse_rank(raw: Mapping[str, Any], source: str = "<rank>") -> RankSpec:
    """Validate the ``rank`` block.

    ``sort_by`` entries are ``{column: "ascend"|"descend"}`` or a bare column name (ascending, as in
    newer Ianvs). Raises:
        JobConfigError: sort_by is not a non-empty list of those, selected_dataitem lacks
            paradigms/modules/metrics, or save_mode is not one of :data:`SAVE_MODES`.
    """
    sort_by = raw.get("sort_by")
    if not isinstance(sort_by, list) or not sort_by:
        raise JobConfigError(f"{source}: rank.sort_by must be a non-empty list such as [{{success_rate: descend}}]")
    for ele in sort_by:
        if isinstance(ele, str):
            continue
        if not isinstance(ele, Mapping) or len(ele) != 1 or next(iter(ele.values())) not in ("ascend", "descend"):
            raise JobConfigError(f"{source}: rank.sort_by entry {ele!r} must be {{column: ascend|descend}} or a column name")
    defaults = RankSpec(sort_by=())
    selected = dict(defaults.selected_dataitem)
    selected_raw = raw.get("selected_dataitem", selected)
    if not isinstance(selected_raw, Mapping):
        raise JobConfigError(f"{source}: rank.selected_dataitem must be a mapping")
    selected.update(selected_raw)
    for key in ("paradigms", "modules", "metrics"):
        if not isinstance(selected.get(key), list) or not selected[key]:
            raise JobConfigError(f"{source}: rank.selected_dataitem.{key} must be a non-empty list (or [\"all\"])")
    if not isinstance(selected.get("hyperparameters", ["all"]), list):
        raise JobConfigError(f"{source}: rank.selected_dataitem.hyperparameters must be a list (or [\"all\"])")
    save_mode = raw.get("save_mode", defaults.save_mode)
    if save_mode not in SAVE_MODES:
        raise JobConfigError(f"{source}: rank.save_mode {save_mode!r} not supported; allowed: {', '.join(SAVE_MODES)}")
    visualization = raw.get("visualization", defaults.visualization)
    if not isinstance(visualization, Mapping):
        raise JobConfigError(f"{source}: rank.visualization must be a mapping")
    return RankSpec(sort_by=tuple(sort_by), visualization=dict(visualization), selected_dataitem=selected, save_mode=save_mode)


def _read_yaml(path: str) -> Any:
    if not str(path).endswith((".yaml", ".yml")):
        raise JobConfigError(f"{path}: config files must be YAML (.yaml/.yml)")
    try:
        with open(path, "rb") as fh:
            return load_yaml(fh, path)
    except FileNotFoundError as err:
        raise JobConfigError(f"{path}: file not found (relative to {os.getcwd()})") from err
    except DuplicateKeyError as err:
        raise JobConfigError(str(err)) from err
    except yaml.YAMLError as err:
        raise JobConfigError(f"{path}: not valid YAML: {err}") from err
