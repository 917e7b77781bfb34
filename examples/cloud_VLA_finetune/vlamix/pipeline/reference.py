"""DoReMi without hand-made runs: the reference run (``dro_reference: auto``) and the transfer step
(``strategy: doremi_transfer``).

DoReMi (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language Model Pretraining",
Section 2 and Algorithm 1) has three steps:

1. train a *reference* model on the reference domain weights (here: the initial mixture weights);
2. train a proxy with group DRO against the reference's per-domain loss, and average its domain
   weights over the run;
3. train the final model on the averaged weights as a fixed mixture.

Here step 1 is :func:`reference_config`: the same point with ``strategy: static`` on the mixture
weights and the same budget (model, steps, batch, learning rate, data). Its training key is that of
any static point with the same values, so every DoReMi point of a job (and a static grid point of the
same mixture) share one run, trained once under a file lock (:func:`vlamix.pipeline.point.train_run`).
The DoReMi run then reads the reference's per-group training loss over the last quarter of its steps
(:func:`vlamix.mixing.strategies.doremi.reference_losses_from_run`); with ``dro_reference: initial`` the
untrained model is the reference, whose loss every group beats within a few steps, so the clipped
excess loss is 0 and the weights never move.

Step 3 is ``doremi_transfer``: the DoReMi run of the same parameters (trained, or reused by its key)
gives ``time_averaged_weights`` (``mixing_summary.json`` of its final checkpoint), and a fresh model
is fine-tuned with ``strategy: static`` on them (:func:`transfer_config`). Unlike DoReMi, proxy and
final model have the same size (the point's ``model``). Both need ``mixing_level: dataset``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

from vlamix.mixing.strategies.doremi import DRO_REFERENCE_AUTO, DRO_REFERENCE_INITIAL
from vlamix.mixing.trajectory import SUMMARY_FILE
from vlamix.pipeline.config import FIELDS, BenchConfig
from vlamix.core.settings import default_of

logger = logging.getLogger(__name__)

#: Written into the final checkpoint of a doremi_transfer run: the proxy run and the weights taken.
TRANSFER_FILE = "doremi_transfer.json"


def _reset_doremi(cfg: BenchConfig, **changes: Any) -> BenchConfig:
    """``cfg`` with ``changes`` and the DoReMi-only fields at their defaults."""
    reset = {k: default_of(FIELDS[k][1]) for k in ("mixing_update_every", "dro_eta", "dro_smoothing", "dro_reference",
                                                    "dro_reference_batches")}
    reset.update(changes)
    return cfg.without_checks(**reset)


def reference_config(cfg: BenchConfig) -> BenchConfig:
    """DoReMi step 1: the static run on the initial (mixture) weights with ``cfg``'s budget."""
    return _reset_doremi(cfg, strategy="static", mixing_level=None)


def proxy_config(cfg: BenchConfig) -> BenchConfig:
    """DoReMi step 2 of a ``doremi_transfer`` point: the same point with ``strategy: doremi``."""
    return cfg.without_checks(strategy="doremi", mixing_level=None)


def transfer_config(cfg: BenchConfig, weights: dict[str, float]) -> BenchConfig:
    """DoReMi step 3: a static run on ``weights`` (dataset -> weight), the rest of ``cfg`` unchanged."""
    return _reset_doremi(cfg, strategy="static", mixing_level=None, mixture=dict(weights), balance_by_size=False)


def time_averaged_weights(checkpoint: str) -> dict[str, float]:
    """``time_averaged_weights`` of a DoReMi checkpoint's ``mixing_summary.json`` (dataset -> weight).

    Raises:
        FileNotFoundError: no summary. ValueError: the summary has no averaged weights.
    """
    path = os.path.join(checkpoint, SUMMARY_FILE)
    with open(path, encoding="utf-8") as fh:
        summary = json.load(fh)
    weights = summary.get("time_averaged_weights")
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{path} has no time_averaged_weights (not a DoReMi run?)")
    return {str(k): float(v) for k, v in weights.items()}


def resolve_training_config(cfg: BenchConfig, train: Callable[[BenchConfig], str]) -> tuple[BenchConfig, dict[str, Any]]:
    """The config the fine-tuning loop runs for ``cfg``, after training the runs it depends on.

    Args:
        cfg: the point's config (its training key names the run folder).
        train: ``cfg -> final checkpoint folder``; trains or reuses a run (:func:`vlamix.pipeline.point.train_run`).
    Returns:
        ``(config for vlamix.train.finetune, provenance)``: ``cfg`` itself for most strategies;
        for ``doremi`` + ``auto`` the same with ``dro_reference`` = the reference run's checkpoint;
        for ``doremi_transfer`` a static config on the proxy's time-averaged weights.
        ``provenance`` is ``{}`` or ``{"reference_run": ..., "proxy_run": ..., "weights": ...}``.
    """
    info: dict[str, Any] = {}
    if cfg.mixing.strategy == "doremi" and cfg.mixing.dro_reference == DRO_REFERENCE_AUTO:
        ref = train(reference_config(cfg))
        logger.info("doremi reference run (static on %s, same budget): %s", cfg.mixture_label(), ref)
        info["reference_run"] = ref
        return cfg.without_checks(dro_reference=ref), info
    if cfg.mixing.strategy == "doremi_transfer":
        proxy = train(proxy_config(cfg))
        weights = time_averaged_weights(proxy)
        logger.info("doremi_transfer: time-averaged weights of %s: %s", proxy, weights)
        info.update(proxy_run=proxy, weights=weights)
        return transfer_config(cfg, weights), info
    return cfg, info


def write_transfer_record(checkpoint: str, cfg: BenchConfig, info: dict[str, Any]) -> None:
    """Record a doremi_transfer run's provenance in its checkpoint and relabel its mixing summary
    (the fine-tuning loop saw a static run) as ``cfg.strategy_label()``."""
    with open(os.path.join(checkpoint, TRANSFER_FILE), "w", encoding="utf-8") as fh:
        json.dump({"strategy_label": cfg.strategy_label(), **info}, fh, indent=2)
    path = os.path.join(checkpoint, SUMMARY_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
        summary.update(strategy_label=cfg.strategy_label(), strategy="doremi_transfer", transfer=info)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)


__all__ = [
    "DRO_REFERENCE_AUTO",
    "DRO_REFERENCE_INITIAL",
    "TRANSFER_FILE",
    "proxy_config",
    "reference_config",
    "resolve_training_config",
    "time_averaged_weights",
    "transfer_config",
    "write_transfer_record",
]
