"""Reports of a job's finished points: ``report.md``, plots, the evaluation kit's sections.

- :mod:`~vlamix.report.markdown`: the leaderboard (with 95% intervals), per-task table, plots, ``write_report``.
- :mod:`~vlamix.report.kit`: the evaluation kit's sections (success rate vs ratio, paired significance, racing,
  robustness and generalisation, offline metrics, videos, versions).
- :mod:`~vlamix.report.sweep`: sweeps over a numeric hyperparameter.
- :mod:`~vlamix.report.recipes`: a mixture under two action recipes (OpenVLA tokens, OpenVLA-OFT) side by side.
- :mod:`~vlamix.report.videos`: rollout errors and episode videos.

Everything here reads finished predictions (dicts); nothing trains or rolls out.
"""
