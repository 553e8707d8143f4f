"""Faithfulness and localisation metrics (placeholder, filled below)."""
