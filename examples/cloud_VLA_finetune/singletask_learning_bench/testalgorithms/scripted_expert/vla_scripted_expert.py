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

"""Ianvs basemodel ``ScriptedExpertReference``: the scripted expert as a reference row of the leaderboard.

A thin adapter over :class:`vlamix.pipeline.expert.ExpertReference`: ``train``/``save``/``load``
have nothing to learn; ``predict`` rolls the scripted expert out on the same planned episodes as
the VLA points (same suites, tasks, init states, seed) through the same batched evaluator, so the
leaderboard shows what the evaluator reports for a competent policy. The file is not called
``basemodel.py`` because Ianvs imports module files by their stem
(``importlib.import_module("basemodel")``): two files of one example with the same stem would shadow each other.
"""

try:
    from sedna.common.class_factory import ClassFactory, ClassType
except ImportError:  # run by vlamix.bench.job on a machine without Sedna
    from vlamix.bench.registry import ClassFactory, ClassType

from vlamix.bench import ianvs
from vlamix.pipeline.expert import ExpertReference

__all__ = ["ScriptedExpertReference"]


@ClassFactory.register(ClassType.GENERAL, alias="ScriptedExpertReference")
class ScriptedExpertReference(ExpertReference):
    """Ianvs basemodel of the reference row.

    Args:
        **hyperparameters: the evaluation fields of ``vla_algorithm.yaml`` (``eval_suites``,
            ``eval_tasks``, ``trials_per_task``, ``eval_max_steps``, ``num_steps_wait``,
            ``eval_workers``, ``eval_seed``, ``eval_instruction``), with the same values as the VLA points.
    Raises:
        vlamix.core.errors.ConfigError: an invalid hyperparameter (names the field).
    """

    def predict(self, data=None, **kwargs):
        """Roll the expert out on the job's episode plan and record the row in the job ledger (from ``RESULT_SAVED_URL``)."""
        kwargs.setdefault("ledger", ianvs.job_ledger())
        return super().predict(data, **kwargs)
