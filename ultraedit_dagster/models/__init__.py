"""Model loading and building (no Dagster imports)."""
