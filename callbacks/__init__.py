"""Custom Composer callbacks and logger destinations of rsb-composer (a top-level package by design)."""

from callbacks.metrics import ClassificationMetrics
from callbacks.metrics_table import METRIC_KEYS, MetricsTable

__all__ = ["METRIC_KEYS", "ClassificationMetrics", "MetricsTable"]
