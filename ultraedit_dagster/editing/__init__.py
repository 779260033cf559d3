"""Editing stage: candidate source/target pairs under Prompt-to-Prompt control (docs/method.md §3-4)."""
