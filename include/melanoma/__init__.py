"""Melanoma detection pipeline library: HAM10000 ingest, splits, object store, embedded stack.

Research use only, not a diagnostic device.
"""

RESEARCH_NOTICE = (
    "Research use only. Not a diagnostic device: outputs must not be used to diagnose, "
    "treat or triage patients."
)
