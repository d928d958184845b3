"""The worked examples of docs/development.md, "Adding a choice": each is the whole module a user would add to
rsb_composer/loggers/, rsb_composer/data/augmentations/ or rsb_composer/eval_metrics/ (tests/test_registries.py
imports them from here, checks their behaviour, and checks that the docs show them as they are)."""
