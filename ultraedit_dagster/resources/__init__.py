"""Dagster resources: storage, warehouse and one per model role."""
