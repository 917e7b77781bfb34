"""Constants shared by the bench tests."""

#: The example's testenv metrics, in testenv order (= rank columns).
METRICS = [
    "success_rate",
    "success_rate_ci_low",
    "success_rate_ci_high",
    "num_episodes",
    "num_errors",
    "worst_task_success_rate",
    "action_token_accuracy",
    "action_l1",
    "mixing_strategy",
    "steps_kept",
    "steps_dropped_nonfinite",
    "steps_dropped_out_of_range",
    "steps_dropped_near_zero_motion",
    "steps_dropped_dataset_list",
    # evaluation kit
    "seen_success_rate",
    "unseen_success_rate",
    "perturbed_success_rate",
    "robustness_drop",
    "language_reliance",
    "worst_suite_success_rate",
    "tied_with_best",
    # racing (issue 12)
    "episodes_saved",
]
