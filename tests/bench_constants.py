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
    # training seeds, groups, P(best), best trade-offs (issue 28)
    "num_seeds",
    "seed_success_rates",
    "pooled_success_rate",
    "between_seed_sd",
    "pooled_ci_low",
    "pooled_ci_high",
    "prob_best",
    "group",
    "best_tradeoff",
    # cost and provenance (issue 28)
    "train_wall_s",
    "rollout_wall_s",
    "episodes_per_hour",
    "device",
    "dataset_fingerprint",
    "sim_versions",
    # action recipe (issue 29)
    "recipe",
]

#: The smallest end-to-end grid (two LoRA ranks, scripted demos of LIBERO-Spatial task 0, 2 training
#: steps, one 3-step rollout per point): the budgets the real-Ianvs, Ray and end-to-end tests share.
TINY_GRID = {
    "mixture": [{"libero_spatial_no_noops": 1}],
    "lora_rank": [4, 8],
    "demo_tasks": [1],
    "demo_episodes_per_task": [2],
    "heldout_fraction": [0.5],
    "train_steps": [2],
    "batch_size": [2],
    "eval_tasks": [1],
    "trials_per_task": [1],
    "eval_max_steps": [3],
    "eval_workers": [1],
}
