"""A benchmark point's configuration as the job runners see it: values checked, then the environment."""

from vlamix.pipeline.checks import check_environment
from vlamix.pipeline.config import BenchConfig


def checked(values, **kwargs):
    """``check_environment(BenchConfig.from_dict(values))``: every error a job reports before its first point
    (not cached: tests change what the machine offers)."""
    return check_environment(BenchConfig.from_dict(values, **kwargs), cached=False)
