"""clinassist: AI clinical-assist models for imaging triage and medication risk."""

__version__ = "0.1.0"
