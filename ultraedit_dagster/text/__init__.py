"""Text stage: the seed pool, recaptioning, and edit-instruction expansion (docs/method.md §1-2)."""
