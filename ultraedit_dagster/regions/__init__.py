"""Region stage: object selection, grounding, segmentation and mask math (docs/method.md §4)."""
