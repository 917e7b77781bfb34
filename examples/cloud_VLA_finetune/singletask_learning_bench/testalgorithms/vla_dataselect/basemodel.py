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

A thin adapter over :class:`vlamix.pipeline.VLADataSelect`. For each grid point of
``vla_algorithm.yaml`` the single-task paradigm of Ianvs (and ``python -m vlamix.bench``) calls::

    model = VLADataSelect(**hyperparameters)   # one value per vlamix.config.BenchConfig field
    model.train(train_data)                    # parsed testenv train index: .x = RLDS dataset entries
    path = model.save("<point dir>/output/train/")
    model.load(path)
    prediction = model.predict(test_data.x)    # test index entries = LIBERO task suites
    # -> {"episodes": [...], "summary": {...}, "offline": {...}, "config": {...}}

Ianvs also sets ``BASE_MODEL_URL`` (the algorithm's ``initial_model_url``) before ``train`` and
``RESULT_SAVED_URL`` (``<point dir>/output/inference/``) before ``load``/``predict``.
"""

import logging

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:  # run by vlamix.bench.job on a machine without Sedna
    from vlamix.bench.registry import ClassFactory, ClassType

from vlamix.bench.dataset import index_names, require_listed
from vlamix.eval.plan import base_suite
from vlamix.pipeline import VLADataSelect as _Pipeline

logger = logging.getLogger(__name__)

__all__ = ["VLADataSelect"]


@ClassFactory.register(ClassType.GENERAL, alias="VLADataSelect")
class VLADataSelect:
    """Ianvs basemodel for one data mixture.

    Args:
        **hyperparameters: BenchConfig fields (``mixture``, ``model``, ``train_steps``, ...), one
            value each, as Ianvs passes them from ``vla_algorithm.yaml`` (plus the pipeline's
            ``runs_dir``).
    Raises:
        vlamix.config.ConfigError: an invalid hyperparameter (names the field).
    """

    def __init__(self, **hyperparameters):
        self._pipeline = _Pipeline(**hyperparameters)
        self.config = self._pipeline.config

    def train(self, train_data, valid_data=None, **kwargs):
        """Fine-tune on the mixture; every dataset with non-zero weight must be in the train index.

        Raises:
            ValueError: the mixture uses a dataset that the testenv train index does not list.
        """
        require_listed(self.config.mixture_weights(), index_names(train_data), "the testenv train index (RLDS datasets)")
        return self._pipeline.train(train_data, valid_data=valid_data, **kwargs)

    def save(self, model_path):
        """Save the fine-tuned checkpoint under ``model_path``; return the checkpoint path."""
        return self._pipeline.save(model_path)

    def load(self, model_url):
        """Load the checkpoint that :meth:`save` returned."""
        return self._pipeline.load(model_url)

    def predict(self, data, **kwargs):
        """Roll out in LIBERO and compute offline metrics; return the prediction dict.

        Raises:
            ValueError: an evaluation suite (for a perturbation suite, its base suite) is not listed in
                the testenv test index.
        """
        suites = dict.fromkeys(base_suite(s) for s in self.config.resolved_eval_suites())  # perturbation suites: their base
        require_listed(suites, index_names(data), "the testenv test index (task suites)")
        return self._pipeline.predict(data, **kwargs)
