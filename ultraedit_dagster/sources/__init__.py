"""Stage 0: manifests and the source_images asset (fetch, decode, normalise, crop)."""
