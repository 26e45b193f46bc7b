"""phasescan's version: one place, read by pyproject.toml, the CLI (--version), results metadata."""
__version__ = "0.1.0"
