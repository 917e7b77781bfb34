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

"""Ianvs metric ``recipe``: the point's action recipe (OpenVLA tokens or OpenVLA-OFT's L1 regression).

Registered under the testenv metric name (= rank column, = ``sort_by`` key). Ianvs calls it as
``metric(test_dataset.y, prediction)`` with the dict returned by the basemodel's ``predict``;
the computation lives in :mod:`vlamix.bench.metrics`.
"""

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:  # run by vlamix.bench.job on a machine without Sedna
    from vlamix.bench.registry import ClassFactory, ClassType

from vlamix.bench import metrics

__all__ = ["vla_recipe"]


@ClassFactory.register(ClassType.GENERAL, alias="recipe")
def vla_recipe(y_true, y_pred):
    """The action recipe, e.g. ``tokens`` or ``l1_regression chunk 8 open-loop 8 +wrist +proprio``.

    ``y_true`` (the test index labels) is not used.
    """
    return metrics.recipe(y_true, y_pred)
