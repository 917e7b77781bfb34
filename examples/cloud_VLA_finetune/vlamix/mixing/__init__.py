"""Data-ratio strategies: which frames fine-tuning sees, in what proportions, and how that changes.

- :mod:`vlamix.mixing.settings`: the mixing section of a point's configuration (:class:`MixingConfig`).
- :mod:`vlamix.mixing.strategies`: one module per strategy, registered by name (static, full_dataset,
  task_balanced, temperature, doremi, exp3, curriculum, doremi_transfer); each is also its run's weight controller.
- :mod:`vlamix.mixing.weights`: sources and groups, closed-form baselines.
- :mod:`vlamix.mixing.skills`: skill of an instruction (``mixing_level: skill``), overridable.
- :mod:`vlamix.mixing.loss_weights`: per-group loss weights (``loss_weighting``).
- :mod:`vlamix.mixing.trajectory`: the saved weight trajectory and its plot.

Action-based filtering of steps lives with the data: :mod:`vlamix.data.filters`.
"""
