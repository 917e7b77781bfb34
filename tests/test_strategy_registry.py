"""Strategies are registered classes (issue 21): adding one is one module, found by name, nothing else edited.

``GreedyLoss`` below is written exactly as a new file ``vlamix/mixing/strategies/greedy_loss.py`` would be (the
"Add a strategy" section of docs/strategies.md shows the same class); the test registers it the way the package's
``__init__`` does for every module of the folder, then drives it through the configuration, the train key and
the real fine-tuning loop.
"""

import os

import numpy as np
import pytest

from vlamix.core.errors import ConfigError
from vlamix.mixing.strategies import STRATEGIES, Strategy
from vlamix.pipeline.config import BenchConfig, train_key
from vlamix.train.finetune import FineTuner
from test_train_mixing import GROUPS, GroupedInMemoryLoader

STRATEGY_DIR = os.path.join(os.path.dirname(__file__), "..", "examples", "cloud_VLA_finetune", "vlamix", "mixing", "strategies")


class GreedyLoss(Strategy):
    """Every ``mixing_update_every`` steps, weights proportional to each group's mean training loss."""

    name = "greedy_loss"
    params = ("mixing_update_every",)
    dynamic = True

    def after_step(self, step):
        if step % self.every:
            return None
        loss = self._window_loss()
        if not np.isfinite(loss).all():
            return None
        self.weights = loss / loss.sum()
        self.history.append(self._row(step, "update", loss, loss))
        return self.current()


@pytest.fixture
def registered(monkeypatch):
    """The registry after ``vlamix/mixing/strategies/greedy_loss.py`` was added (removed again after the test)."""
    monkeypatch.setitem(STRATEGIES._items, "greedy_loss", GreedyLoss)
    return GreedyLoss


def test_every_module_of_the_folder_is_one_registered_strategy():
    modules = sorted(f[:-3] for f in os.listdir(STRATEGY_DIR) if f.endswith(".py") and f not in ("__init__.py", "base.py", "registry.py"))
    assert sorted(STRATEGIES.names()) == modules  # file name = strategy name: the folder is the list
    for name in modules:
        cls = STRATEGIES.get(name)
        assert issubclass(cls, Strategy) and cls.name == name


def test_an_unknown_strategy_says_did_you_mean():
    with pytest.raises(ConfigError) as err:
        BenchConfig.from_dict({"mixture": {GROUPS[0]: 1}, "strategy": "doremii"})
    assert err.value.field == "strategy" and "did you mean 'doremi'" in str(err.value) and "temperature" in str(err.value)


def test_a_registered_strategy_runs_with_no_other_edit(registered, tmp_path):
    values = {"mixture": {GROUPS[0]: 1, GROUPS[1]: 1}, "strategy": "greedy_loss", "train_steps": 4, "batch_size": 4,
              "lora_rank": 4, "lora_alpha": 8, "learning_rate": 2e-3, "seed": 3, "mixing_update_every": 2}
    cfg = BenchConfig.from_dict(values)
    assert cfg.strategy_label() == "greedy_loss"
    static = BenchConfig.from_dict({**values, "strategy": "static"})
    assert train_key(cfg) != train_key(static)
    # its parameter is in its train key, another strategy's parameter is not
    assert train_key(cfg) != train_key(cfg.replace(mixing_update_every=3))
    assert train_key(cfg) == train_key(cfg.replace(temperature=9.0))
    tuner = FineTuner(cfg, str(tmp_path / "run"), loader=GroupedInMemoryLoader(), device="cpu")
    tuner.train()
    history = tuner.mixing.history
    assert [r["step"] for r in history] == [0, 2, 4]
    for row in history[1:]:  # the weights it set are its losses, normalised, and the loader received them
        loss = np.array([row["group_loss"][g] for g in GROUPS])
        np.testing.assert_allclose([row["weights"][g] for g in GROUPS], loss / loss.sum())
    assert tuner.loader.set_calls == [r["weights"] for r in history[1:]]
    with pytest.raises(ValueError, match="registered twice"):
        STRATEGIES.register("greedy_loss")(GreedyLoss)
