"""Reads back from ML Metadata what one pipeline run did, and says it in a few lines."""
from __future__ import annotations
