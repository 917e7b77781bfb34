# Copyright 2025 The KubeEdge Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Ianvs basemodel ``VLADataSelect``: LoRA-fine-tune a VLA on one data mixture, evaluate it in LIBERO.

A thin adapter over :class:`vlamix.pipeline.point.VLADataSelect`. For each grid point of
``vla_algorithm.yaml`` the single-task paradigm of Ianvs (and ``python -m vlamix.bench``) calls::

    model = VLADataSelect(**hyperparameters)   # one value per vlamix.pipeline.config.BenchConfig field
    model.preprocess()                         # Ianvs calls it unconditionally; nothing to do here
    model.train(train_data)                    # parsed testenv train index: .x = RLDS dataset entries
    path = model.save("<point dir>/output/train/")
    model.load(path)
    prediction = model.predict(test_data.x)    # test index entries = LIBERO task suites; records in the job ledger
    # -> {"episodes": [...], "summary": {...}, "offline": {...}, "config": {...}}

Ianvs also sets ``BASE_MODEL_URL`` (the algorithm's ``initial_model_url``) before ``train`` and
``RESULT_SAVED_URL`` (``<point dir>/output/inference/``) before ``load``/``predict``.

Under ``ianvs -f`` (kubeedge/ianvs ``core/``, checked against commit 1d3da5b) the first construction
also checks the whole job (``vlamix check``, :func:`vlamix.bench.ianvs.check_job_once`) and gives the
``vlamix`` logger a handler, so every stage below logs one INFO line.
"""

import logging

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:  # run by vlamix.bench.job on a machine without Sedna
    from vlamix.bench.registry import ClassFactory, ClassType

from vlamix.bench import ianvs
from vlamix.core.index import index_names, require_listed
from vlamix.core.suites import base_suite
from vlamix.pipeline.config import train_key
from vlamix.pipeline.point import VLADataSelect as _Pipeline

# a "vlamix" logger: Ianvs shows it through ianvs.ensure_log_handler (this file's own module name is "basemodel")
logger = logging.getLogger("vlamix.bench.basemodel")

__all__ = ["VLADataSelect"]


@ClassFactory.register(ClassType.GENERAL, alias="VLADataSelect")
class VLADataSelect:
    """Ianvs basemodel for one data mixture.

    Args:
        **hyperparameters: BenchConfig fields (``mixture``, ``model``, ``train_steps``, ...), one
            value each, as Ianvs passes them from ``vla_algorithm.yaml`` (plus the pipeline's
            ``runs_dir``).
    Raises:
        vlamix.core.errors.ConfigError: an invalid or unknown hyperparameter (names the field); under
            ``ianvs -f``, any invalid grid point of the job (names the point and the field).
    """

    def __init__(self, **hyperparameters):
        ianvs.ensure_log_handler()
        ianvs.check_job_once()
        self._pipeline = _Pipeline(**hyperparameters)
        self.config = self._pipeline.config
        self._label = f"{self.config.mixture_label()} (train key {train_key(self.config)})"
        logger.info("grid point %s: hyperparameters valid", self._label)
        ianvs.announce("point  %s", self._label)

    def preprocess(self, *args, **kwargs):
        """Ianvs's single-task paradigm calls this before ``train``; datasets are prepared in ``train``.

        Returns None (Ianvs calls ``preprocess()`` a second time when the first call returns something).
        """
        logger.info("grid point %s: preprocess (nothing to do; datasets are checked in train)", self._label)

    def train(self, train_data, valid_data=None, **kwargs):
        """Fine-tune on the mixture; every dataset with non-zero weight must be in the train index.

        Raises:
            ValueError: the mixture uses a dataset that the testenv train index does not list.
        """
        require_listed(self.config.mixture_weights(), index_names(train_data), "the testenv train index (RLDS datasets)")
        logger.info("grid point %s: train", self._label)
        return self._pipeline.train(train_data, valid_data=valid_data, **kwargs)

    def save(self, model_path):
        """Save the fine-tuned checkpoint under ``model_path``; return the checkpoint path."""
        path = self._pipeline.save(model_path)
        logger.info("grid point %s: saved checkpoint to %s", self._label, path)
        return path

    def load(self, model_url):
        """Load the checkpoint that :meth:`save` returned."""
        logger.info("grid point %s: load %s", self._label, model_url)
        return self._pipeline.load(model_url)

    def predict(self, data, **kwargs):
        """Roll out in LIBERO and compute offline metrics; return the prediction dict.

        Raises:
            ValueError: an evaluation suite (for a perturbation suite, its base suite) is not listed in
                the testenv test index.
        """
        suites = dict.fromkeys(base_suite(s) for s in self.config.resolved_eval_suites())  # perturbation suites: their base
        require_listed(suites, index_names(data), "the testenv test index (task suites)")
        logger.info("grid point %s: predict (LIBERO rollouts + offline metrics)", self._label)
        kwargs.setdefault("ledger", ianvs.job_ledger())  # how this point sees the job's finished points, and they it
        prediction = self._pipeline.predict(data, **kwargs)
        summary = prediction["summary"]
        logger.info("grid point %s: done, success rate %.3f over %d episode(s)", self._label,
                    summary["success_rate"], summary["n_episodes"])
        ianvs.announce("  done: success rate %.3f over %d episode(s)", summary["success_rate"], summary["n_episodes"])
        return prediction
