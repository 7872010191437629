"""Data-quality audit (filled in below)."""
