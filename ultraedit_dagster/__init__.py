"""ultraedit-dagster: instruction-based image-editing datasets (UltraEdit / InstructPix2Pix) as Dagster assets."""

__version__ = "0.1.0"
