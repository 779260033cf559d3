"""Environment variables that configure a deployment (read once, when the definitions load).

ULTRAEDIT_PROFILE     tiny (default) | ultraedit
ULTRAEDIT_HOME        base folder for local state (default .ultraedit)
ULTRAEDIT_LAKE        lake root: a folder or s3://bucket/prefix (default $ULTRAEDIT_HOME/lake)
ULTRAEDIT_WAREHOUSE   DuckDB file (default $ULTRAEDIT_HOME/warehouse.duckdb)
ULTRAEDIT_SEED        global seed (default 0)
ULTRAEDIT_ALLOWED_URI_PREFIXES  comma-separated roots/buckets that manifest image URIs must lie under (default: any)
ULTRAEDIT_AUTOMATION_INTERVAL_S  seconds between two evaluations of the automation sensor (default 30)
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: the S3 endpoint and credentials
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("ULTRAEDIT_HOME", ".ultraedit")).expanduser().resolve()


def lake_root() -> str:
    return os.environ.get("ULTRAEDIT_LAKE") or str(home() / "lake")


def warehouse_path() -> str:
    return os.environ.get("ULTRAEDIT_WAREHOUSE") or str(home() / "warehouse.duckdb")


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or home() / "dagster").expanduser().resolve()


def global_seed() -> int:
    return int(os.environ.get("ULTRAEDIT_SEED", "0"))


def automation_interval_s() -> int:
    """How often the automation sensor evaluates the asset graph. Each evaluation reads the status of every
    (asset, shard) pair, so a deployment of thousands of shards may want it longer; a small test deployment shorter."""
    raw = os.environ.get("ULTRAEDIT_AUTOMATION_INTERVAL_S", "").strip() or "30"
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"ULTRAEDIT_AUTOMATION_INTERVAL_S={raw!r}: expected a whole number of seconds, at least 1")
    return int(raw)


def allowed_uri_prefixes() -> list[str]:
    raw = os.environ.get("ULTRAEDIT_ALLOWED_URI_PREFIXES", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


# Where the real weights live. Each variable overrides one field of one model resource (hub ids work where a hub
# is reachable; local paths always work). Unset variables leave the profile's choice.
MODEL_OVERRIDES: dict[str, tuple[str, str]] = {
    "ULTRAEDIT_EDITOR_MODEL": ("editor", "model"),
    "ULTRAEDIT_CLIP_MODEL": ("scorer", "clip_model"),
    "ULTRAEDIT_CLIP_PRETRAINED": ("scorer", "clip_pretrained"),
    "ULTRAEDIT_DINOV2_MODEL": ("scorer", "dinov2_model"),
    "ULTRAEDIT_TAGGER_CLIP_MODEL": ("tagger", "clip_model"),
    "ULTRAEDIT_TAGGER_CLIP_PRETRAINED": ("tagger", "clip_pretrained"),
    "ULTRAEDIT_GROUNDER_MODEL": ("grounder", "model"),
    "ULTRAEDIT_SAM_MODEL_TYPE": ("segmenter", "model_type"),
    "ULTRAEDIT_SAM_CHECKPOINT": ("segmenter", "checkpoint"),
    "ULTRAEDIT_CAPTIONER_MODEL": ("captioner", "model"),
}


def model_overrides(resource_key: str) -> dict[str, str]:
    """The fields of one resource that environment variables override."""
    return {
        field: os.environ[var]
        for var, (key, field) in MODEL_OVERRIDES.items()
        if key == resource_key and os.environ.get(var)
    }


def llm_cache_dir() -> str:
    """Where LLM answers are cached by payload hash (ULTRAEDIT_LLM_CACHE, default $ULTRAEDIT_HOME/llm_cache)."""
    return os.environ.get("ULTRAEDIT_LLM_CACHE") or str(home() / "llm_cache")
