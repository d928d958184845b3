"""Custom Composer callbacks and logger destinations of rsb-composer (a top-level package by design)."""

from callbacks.metrics import ClassificationMetrics
from callbacks.metrics_table import METRIC_KEYS, MetricsTable
from callbacks.sampler_epoch import SamplerEpoch

__all__ = ["METRIC_KEYS", "ClassificationMetrics", "MetricsTable", "SamplerEpoch"]
