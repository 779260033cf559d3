"""Pipeline-wide settings: the profile, the global seed, input limits."""


import dagster as dg

from ..profiles import Profile, get_profile


class PipelineResource(dg.ConfigurableResource):
    """Settings every stage shares. Every random choice derives from `global_seed` and row uids."""

    profile_name: str = ""  # empty: ULTRAEDIT_PROFILE, else `tiny`
    global_seed: int = 0
    image_size: int = 512
    min_image_side: int = 64
    max_image_pixels: int = 89_478_485  # Pillow's default decompression-bomb limit
    max_failed_fraction: float = 0.25
    # When non-empty, manifest image URIs must start with one of these (local folders, file://, s3://bucket/prefix).
    allowed_uri_prefixes: list[str] = []

    @property
    def profile(self) -> Profile:
        return get_profile(self.profile_name or None)
