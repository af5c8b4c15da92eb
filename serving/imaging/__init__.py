"""Imaging triage: the pipeline (QC, model, result objects), its HTTP API and the results store."""
