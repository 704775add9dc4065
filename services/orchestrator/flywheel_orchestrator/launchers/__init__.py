"""Launchers run one training job by its deterministic name: locally as a subprocess, or on SageMaker."""
