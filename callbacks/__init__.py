"""Custom Composer callbacks and logger destinations of rsb-composer (a top-level package by design).

Each module holds one callback; import it from its module (``from callbacks.metrics import
ClassificationMetrics``). They depend on Composer and on the run folder's names (``rsb_composer.run_folder``) only.
"""
