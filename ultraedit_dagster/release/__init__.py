"""Release stage: selection, the release schema, the filtered release and its card (docs/method.md §5-6)."""
