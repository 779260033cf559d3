"""Editing stage: candidate source/target pairs under Prompt-to-Prompt control (docs/method.md §3-4), generated in
rounds and scored in the same step, which writes both `edit_candidates` and `metric_scores` (docs/method.md §8)."""
