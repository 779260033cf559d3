"""The release schema: UltraEdit's Hugging Face columns (docs/method.md §6) plus our provenance columns.

UltraEdit columns, same names and types: `clip_sim_source`, `clip_sim_target`, `clip_sim_dir`, `clip_sim_image`,
`dinov2_sim`, `ssim` (float64); `source_caption`, `target_caption`, `edit_prompt`, `edit_object` (string; null for
free-form); `idx` (int64, unique across the release); `source_image`, `edited_image`, `mask_image` (Hugging Face
`datasets` Image columns stored as struct{bytes: binary, path: string}; mask null for free-form).

The Parquet schema carries the `huggingface` feature metadata, so `datasets.load_dataset("parquet", ...)` decodes
the three image columns as PIL images. Free-form and region are separate splits: every row has a `split` column
(`free_form` / `region`), and the release card writes one file set per split.

`idx` = the first 63 bits of sha256("ultraedit-release-idx" + candidate uid): deterministic across re-runs and shard
orders; uniqueness over the whole release is checked (a collision would need ~3e9 rows to become likely).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SPLITS = ("free_form", "region")
RELEASE_METRICS = ("clip_sim_source", "clip_sim_target", "clip_sim_dir", "clip_sim_image", "dinov2_sim", "ssim")
IMAGE_COLUMNS = ("source_image", "edited_image", "mask_image")
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# (name, arrow type, Hugging Face feature)
_V = lambda dtype: {"dtype": dtype, "_type": "Value"}  # noqa: E731
_IMAGE = {"_type": "Image"}
ULTRAEDIT_FIELDS: list[tuple[str, pa.DataType, dict]] = [
    *[(m, pa.float64(), _V("float64")) for m in RELEASE_METRICS],
    ("source_caption", pa.string(), _V("string")),
    ("target_caption", pa.string(), _V("string")),
    ("edit_prompt", pa.string(), _V("string")),
    ("edit_object", pa.string(), _V("string")),
    ("idx", pa.int64(), _V("int64")),
    ("source_image", IMAGE_TYPE, _IMAGE),
    ("edited_image", IMAGE_TYPE, _IMAGE),
    ("mask_image", IMAGE_TYPE, _IMAGE),
]
_S, _F, _I = (pa.string(), _V("string")), (pa.float64(), _V("float64")), (pa.int64(), _V("int64"))
PROVENANCE_FIELDS: list[tuple[str, pa.DataType, dict]] = [
    (name, *t)
    for name, t in [
        ("split", _S),
        ("uid", _S),
        ("instruction_uid", _S),
        ("image_uid", _S),
        ("shard", _S),
        ("edit_type", _S),
        ("mode", _S),
        ("rank", _I),
        ("seed", _I),
        ("p", _F),
        ("steps", _I),
        ("strength", _F),
        ("guidance", _F),
        ("soft_value", _F),
        ("l1", _F),
        ("clip_model_id", _S),
        ("dinov2_model_id", _S),
        ("scorer_input_sizes", _S),
        ("editor_id", _S),
        ("llm_id", _S),
        ("captioner_id", _S),
        ("tagger_id", _S),
        ("grounder_id", _S),
        ("segmenter_id", _S),
        ("profile", _S),
        ("caption_gt", _S),
        ("caption_short", _S),
        ("caption_desc", _S),
        ("source_uri", _S),
        ("source_dataset", _S),
        ("license", _S),
        ("status", _S),
        ("error", _S),
        ("thresholds", _S),
        ("selection_rule", _S),
        ("rule_version", _S),
    ]
]
RELEASE_FIELDS = ULTRAEDIT_FIELDS + PROVENANCE_FIELDS
RELEASE_COLUMNS = [name for name, _, _ in RELEASE_FIELDS]


def hf_features() -> dict[str, dict]:
    return {name: feature for name, _, feature in RELEASE_FIELDS}


def release_schema() -> pa.Schema:
    """The Arrow schema with the `huggingface` metadata `datasets` reads to decode Image columns."""
    meta = {"huggingface": json.dumps({"info": {"features": hf_features()}})}
    return pa.schema([pa.field(name, typ) for name, typ, _ in RELEASE_FIELDS], metadata=meta)


def release_idx(uid: str) -> int:
    digest = hashlib.sha256(b"ultraedit-release-idx\x1f" + uid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def image_cell(data: bytes | None, path: str | None = None) -> dict | None:
    return None if data is None else {"bytes": data, "path": path}


def split_of(mode: str) -> str:
    if mode not in SPLITS:
        raise ValueError(f"mode {mode!r} is not one of {SPLITS}")
    return mode


def release_row(
    candidate: Mapping[str, Any],
    scores: Mapping[str, Any],
    *,
    rank: int,
    caption: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
    instruction: Mapping[str, Any] | None = None,
    region: Mapping[str, Any] | None = None,
    rule: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One release row from a kept candidate (edit_candidates row with images), its metric_scores row and the
    upstream rows it came from (captions / source_images / edit_instructions / region_masks; any may be None).
    `rule`: {"thresholds": {mode: text}, "selection_rule": text, "rule_version": text}, what admitted the row
    (`release_rule` builds it from the profile)."""
    caption, source, instruction, region = caption or {}, source or {}, instruction or {}, region or {}
    rule = rule or {}
    uid = candidate["candidate_uid"]
    mode = candidate["mode"]
    is_region = mode == "region"
    row: dict[str, Any] = {m: _float(scores.get(m)) for m in RELEASE_METRICS}
    row.update(
        source_caption=candidate.get("source_caption"),
        target_caption=candidate.get("target_caption"),
        edit_prompt=candidate.get("instruction"),
        edit_object=(region.get("edit_object") or "NONE") if is_region else None,
        idx=release_idx(uid),
        source_image=image_cell(candidate.get("source_image"), f"{uid}/source.png"),
        edited_image=image_cell(candidate.get("target_image"), f"{uid}/edited.png"),
        mask_image=image_cell(candidate.get("mask_image"), f"{uid}/mask.png") if is_region else None,
        split=split_of(mode),
        uid=uid,
        instruction_uid=candidate.get("instruction_uid"),
        image_uid=candidate.get("image_uid"),
        shard=candidate.get("shard"),
        edit_type=candidate.get("edit_type"),
        mode=mode,
        rank=rank,
        seed=candidate.get("seed"),
        p=_float(candidate.get("p")),
        steps=candidate.get("steps"),
        strength=_float(candidate.get("strength")),
        guidance=_float(candidate.get("guidance")),
        soft_value=_float(candidate.get("soft_value")),
        l1=_float(scores.get("l1")),
        clip_model_id=scores.get("clip_model_id"),
        dinov2_model_id=scores.get("dinov2_model_id"),
        scorer_input_sizes=scores.get("scorer_input_sizes"),
        editor_id=candidate.get("editor_id"),
        llm_id=instruction.get("llm_id"),
        captioner_id=caption.get("captioner_id"),
        tagger_id=region.get("tagger_id"),
        grounder_id=region.get("grounder_id"),
        segmenter_id=region.get("segmenter_id"),
        profile=scores.get("profile") or candidate.get("profile"),
        caption_gt=caption.get("caption_gt") or source.get("caption_gt"),
        caption_short=caption.get("caption_short"),
        caption_desc=caption.get("caption_desc") or instruction.get("caption_desc"),
        source_uri=source.get("uri"),
        source_dataset=source.get("source"),
        license=source.get("license"),
        status="ok",
        error=None,
        thresholds=(rule.get("thresholds") or {}).get(mode),
        selection_rule=rule.get("selection_rule"),
        rule_version=rule.get("rule_version"),
    )
    return row


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def release_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=release_schema())


def empty_release_table() -> pa.Table:
    return release_schema().empty_table()
