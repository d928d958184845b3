"""Checkpoints: what the trainer saves and keeps (``saving``), reading them without running their code
(``safe_load``), making autoresume survive crashes and holding a resume to what its checkpoint fixes
(``resume``), and exporting the network (``export``)."""
