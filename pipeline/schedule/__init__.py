"""Runs on a schedule: `digits schedule --local` on this machine and the recurring Kubeflow run."""
