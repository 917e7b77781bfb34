"""Short labels of datasets, weights, mixtures and benchmark points, as reports, logs and rank rows show them."""

from __future__ import annotations

from typing import Any, Mapping


def short_dataset(name: str) -> str:
    """``libero_spatial_no_noops`` -> ``spatial``."""
    return name.replace("libero_", "").replace("_no_noops", "")


def fmt_weight(weight: float) -> str:
    """A mixture weight as written: ``2`` for 2 or 2.0, ``0.5`` for 0.5."""
    return str(int(weight)) if float(weight).is_integer() else f"{weight:g}"


def mixture_label(mixture: Mapping[str, float]) -> str:
    """``{"libero_spatial_no_noops": 2, "libero_object_no_noops": 1}`` -> ``spatial:object=2:1`` (weights as given)."""
    return f"{':'.join(short_dataset(n) for n in mixture)}={':'.join(fmt_weight(w) for w in mixture.values())}"


def point_label(result: Mapping[str, Any]) -> str:
    """Row label of a finished point: its data-ratio strategy label (``static spatial:object=2:1``,
    ``temperature T=2``, ...), or its mixture for results without one, or ``?``."""
    label = (result.get("mixing") or {}).get("strategy_label")
    if label:
        return str(label)
    mixture = (result.get("config") or {}).get("mixture") or {}
    return mixture_label(mixture) if mixture else "?"
