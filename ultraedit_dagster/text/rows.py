"""Row logic of the text stage (captions, edit_instructions): schemas and per-shard row building.

Kept free of Dagster so it can be tested and benchmarked directly; the assets in `assets/text.py` only stream shards
through these functions and write the result.

Failed rows carry the reason in `error` with a prefix that says where it failed:
`source_images: ...` / `captions: ...` (an upstream failure carried down), `captioner: ...`, `request failed: ...`
(the LLM request failed after retries), `parse failed: ...` (a reply without a valid triplet), `moderation: ...`.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ultraedit_dagster.core.ids import make_uid
from ultraedit_dagster.core.rows import mark_failed
from ultraedit_dagster.text.edit_types import EDIT_TYPES, choose_mode, classify_edit_type
from ultraedit_dagster.text.parsing import (
    PromptEchoes,
    Triplet,
    instruction_key,
    near_duplicate_flags,
    parse_triplets,
    validate_triplet,
)
from ultraedit_dagster.text.prompts import instruction_messages, messages_hash
from ultraedit_dagster.text.seeds import SeedTriplet, sample_in_context
from ultraedit_dagster.text.template_writer import TEMPLATE_ID, write_triplets

MAX_CLIP_TOKENS = 77

CAPTIONS_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("shard", pa.string()),
        ("caption_gt", pa.string()),
        ("caption_short", pa.string()),
        ("caption_desc", pa.string()),
        ("caption_short_truncated", pa.bool_()),
        ("caption_short_clip_tokens", pa.int32()),
        ("captioner_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("profile", pa.string()),
    ]
)

EDIT_INSTRUCTIONS_SCHEMA = pa.schema(
    [
        ("instruction_uid", pa.string()),
        ("image_uid", pa.string()),
        ("shard", pa.string()),
        ("source_caption", pa.string()),
        ("instruction", pa.string()),
        ("target_caption", pa.string()),
        ("edit_type", pa.string()),
        ("mode", pa.string()),
        ("llm_id", pa.string()),
        ("caption_desc", pa.string()),
        ("near_duplicate", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("profile", pa.string()),
        # provenance beyond the contract
        ("triplet_index", pa.int32()),
        ("prompt_sha", pa.string()),  # hash of the exact messages sent (null for the template backend)
        ("llm_cached", pa.bool_()),
        ("source_replaced", pa.bool_()),  # the model altered the caption; the sent caption was used instead
        ("parse_note", pa.string()),
        ("target_clip_tokens", pa.int32()),  # the target caption's CLIP tokens as written (with start / end)
        ("target_truncated", pa.bool_()),  # the target was cut to fit CLIP's window (the edit stays inside it)
    ]
)


# -- CLIP token budget ------------------------------------------------------------------------------------------


def clip_token_count(text: str) -> int:
    """Tokens CLIP's text encoder sees, including its start and end tokens."""
    from ultraedit_dagster.text.clip_tokens import clip_bpe

    return clip_bpe().count(text) + 2


def fit_clip_tokens(text: str, max_tokens: int = MAX_CLIP_TOKENS) -> tuple[str, bool, int]:
    """(text cut at a word boundary to fit `max_tokens` CLIP tokens, whether it was cut, original token count)."""
    n = clip_token_count(text)
    if n <= max_tokens:
        return text, False, n
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # longest word prefix that fits
        mid = (lo + hi + 1) // 2
        if clip_token_count(" ".join(words[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;:"), True, n


@dataclass(frozen=True)
class ClipFit:
    """A triplet's captions against CLIP's window: the target to use (None when rejected), whether it was cut, the
    target's original token count, and the reason when rejected."""

    target: str | None
    truncated: bool
    target_tokens: int
    reason: str = ""


def fit_edit_in_clip_window(source: str, target: str, max_tokens: int = MAX_CLIP_TOKENS) -> ClipFit:
    """Source and target captions are diffusion prompts and CLIP metric texts, so both must fit `max_tokens` CLIP
    tokens (docs/method.md §1). A source over the window is rejected (the captions stage already cuts caption_short).
    A target over the window is repaired by cutting it at a word boundary when every word the edit changes lies inside
    the part that fits; when the edit reaches past the window (e.g. an object appended at the end) it is rejected,
    because CLIP would never see the edit."""
    import difflib

    if clip_token_count(source) > max_tokens:
        return ClipFit(None, False, clip_token_count(target), f"source caption over {max_tokens} CLIP tokens")
    n = clip_token_count(target)
    if n <= max_tokens:
        return ClipFit(target, False, n)
    fitted, _, _ = fit_clip_tokens(target, max_tokens)
    src_words, tgt_words = source.lower().split(), target.lower().split()
    ops = difflib.SequenceMatcher(a=src_words, b=tgt_words, autojunk=False).get_opcodes()
    last_changed = max((j2 for tag, _, _, _, j2 in ops if tag != "equal"), default=0)
    kept = len(fitted.split())
    # the cut keeps every changed word, and removes at least one word of the source too (so the source's tail, which
    # CLIP also never sees, is what is lost, not the edit)
    if last_changed <= kept and kept < len(tgt_words):
        return ClipFit(fitted, True, n)
    return ClipFit(None, False, n, f"edit beyond CLIP's {max_tokens}-token window")


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# -- captions ---------------------------------------------------------------------------------------------------

CaptionFn = Callable[[list[dict]], list[tuple[str | None, str | None, str | None]]]  # rows -> (short, desc, error)


def caption_rows(
    rows: list[dict],
    *,
    shard: str,
    profile: str,
    captioner_id: str,
    caption_fn: CaptionFn,
    max_clip_tokens: int = MAX_CLIP_TOKENS,
) -> list[dict]:
    """Caption one batch of source_images rows (dicts with uid, caption_gt, image, status, error)."""
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    results = dict(zip((r["uid"] for r in ok_rows), caption_fn(ok_rows), strict=True)) if ok_rows else {}
    out = []
    for r in rows:
        base = {
            "uid": r["uid"],
            "shard": shard,
            "caption_gt": r.get("caption_gt"),
            "caption_short": None,
            "caption_desc": None,
            "caption_short_truncated": False,
            "caption_short_clip_tokens": None,
            "captioner_id": captioner_id,
            "status": "failed",
            "error": None,
            "profile": profile,
        }
        if r.get("status") != "ok":
            mark_failed(base, f"source_images: {r.get('error') or 'failed upstream'}")
        else:
            short, desc, error = results[r["uid"]]
            if error or not (short or "").strip() or not (desc or "").strip():
                mark_failed(base, f"captioner: {error or 'empty caption'}")
            else:
                fitted, truncated, n = fit_clip_tokens(short.strip(), max_clip_tokens)
                base.update(
                    caption_short=fitted,
                    caption_desc=desc.strip(),
                    caption_short_truncated=truncated,
                    caption_short_clip_tokens=n,
                    status="ok",
                )
        out.append(base)
    return out


# -- edit instructions ------------------------------------------------------------------------------------------


@dataclass
class WriterSettings:
    backend: str = "template"  # template | openai
    llm_id: str = TEMPLATE_ID
    k: int = 3
    region_fraction: float = 0.3
    n_instructions: int = 50
    n_examples: int = 10
    sampling: dict = field(default_factory=lambda: {"temperature": 0.7, "max_tokens": 1024})
    moderation: bool = False
    near_duplicate_threshold: float = 0.8
    # InstructPix2Pix's hygiene (docs/method.md §1), off by default (UltraEdit keeps k triplets per caption)
    one_per_caption: bool = False
    one_per_url: bool = False


@dataclass
class InstructionStats:
    images: int = 0
    upstream_failed: int = 0
    request_failed: int = 0
    parse_failed: int = 0
    moderation_failed: int = 0
    fewer_than_k: int = 0
    source_replaced: int = 0
    triplets_rejected: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_replies: int = 0

    def as_metadata(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "triplets_rejected"}
        d["triplets_rejected"] = dict(self.triplets_rejected)
        return d


def _split_tokens(total: int, n: int) -> list[int]:
    """`total` split over n rows so the rows sum to it exactly."""
    if n <= 0:
        return []
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _failed_row(cap: dict, shard: str, profile: str, llm_id: str, error: str, tokens=(0, 0), prompt_sha=None) -> dict:
    return mark_failed(
        {
            "instruction_uid": make_uid(cap["uid"], "failed"),
            "image_uid": cap["uid"],
            "shard": shard,
            "source_caption": cap.get("caption_short"),
            "instruction": None,
            "target_caption": None,
            "edit_type": None,
            "mode": None,
            "llm_id": llm_id,
            "caption_desc": cap.get("caption_desc"),
            "near_duplicate": False,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "profile": profile,
            "triplet_index": None,
            "prompt_sha": prompt_sha,
            "llm_cached": False,
            "source_replaced": False,
            "parse_note": None,
            "target_clip_tokens": None,
            "target_truncated": None,
        },
        error,
    )


def build_prompt(cap: dict, seeds: list[SeedTriplet], global_seed: int, s: WriterSettings) -> list[dict]:
    return prompt_and_echoes(cap, seeds, global_seed, s)[0]


def prompt_and_echoes(
    cap: dict, seeds: list[SeedTriplet], global_seed: int, s: WriterSettings
) -> tuple[list[dict], PromptEchoes]:
    """The instruction prompt for one caption and what it shows the model (an answer must not copy it)."""
    sample = sample_in_context(seeds, cap["uid"], global_seed, s.n_instructions, s.n_examples)
    echoes = PromptEchoes.of(
        sample.instructions, [(e.source_caption, e.instruction, e.target_caption) for e in sample.examples]
    )
    return instruction_messages(cap["caption_short"], cap.get("caption_desc") or "", sample, s.k), echoes


@dataclass(frozen=True)
class _Failure:
    """An image without a valid triplet: why, and the tokens its request was billed for."""

    reason: str
    tokens: tuple[int, int] = (0, 0)
    prompt_sha: str | None = None


def _mark(error: str | None, retryable: bool) -> str | None:
    """An LLM failure's text, marked retryable (timeouts, 429 / 5xx, circuit open) so that `backfill --failed` and
    the nightly rebuild redo the shard once the endpoint is back (sources.rows.RETRYABLE_MARK)."""
    from ultraedit_dagster.sources.rows import RETRYABLE_MARK

    return f"{RETRYABLE_MARK}{error}" if retryable and error else error


def instruction_rows(
    captions: Iterable[dict],
    *,
    shard: str,
    profile: str,
    seeds: list[SeedTriplet],
    global_seed: int,
    settings: WriterSettings,
    client: Any = None,  # an LLMClient for the openai backend
) -> tuple[list[dict], InstructionStats]:
    """Edit triplet rows for a shard's caption rows (one failed row per image that yields none)."""
    s = settings
    stats = InstructionStats()
    caps = list(captions)
    stats.images = len(caps)
    per_image: dict[str, list[dict]] = {}
    ok_caps = [c for c in caps if c.get("status") == "ok"]

    # 1. candidate triplets per image: (triplets with types, tokens, cached, prompt_sha) or an error
    outcomes: dict[
        str, tuple[list[tuple[str, str, str, str | None, bool, ClipFit]], tuple[int, int], bool, str | None] | _Failure
    ] = {}
    if s.backend == "template":
        for c in ok_caps:
            edits = write_triplets(c["caption_short"], c["uid"], global_seed, s.k)
            # the template's output is validated by the same rules as an LLM's (e.g. ≤ 60 words per caption)
            trip, rejected = [], Counter()
            for e in edits:
                v = validate_triplet(Triplet(c["caption_short"], e.instruction, e.target), c["caption_short"])
                fit = fit_edit_in_clip_window(v.triplet.source, v.triplet.target) if v.triplet else None
                if v.triplet is None:
                    rejected[v.reason] += 1
                elif fit.target is None:
                    rejected[fit.reason] += 1
                else:
                    trip.append((v.triplet.source, v.triplet.instruction, fit.target, e.edit_type, False, fit))
            stats.triplets_rejected.update(rejected)
            if trip:
                outcomes[c["uid"]] = (trip, (0, 0), False, None)
            elif rejected:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
                outcomes[c["uid"]] = f"parse failed: no valid triplet from the template writer ({reasons})"
    elif s.backend == "openai":
        if client is None:
            raise ValueError("the openai backend needs an LLM client")
        todo = []
        if s.moderation and ok_caps:
            mods = client.moderate([c["caption_short"] for c in ok_caps])
            for c, m in zip(ok_caps, mods, strict=True):
                if m.error:
                    outcomes[c["uid"]] = f"moderation: check failed: {_mark(m.error, m.retryable)}"
                elif m.flagged:
                    outcomes[c["uid"]] = f"moderation: caption flagged ({', '.join(m.categories) or 'unspecified'})"
                else:
                    todo.append(c)
        else:
            todo = ok_caps
        prompts = [prompt_and_echoes(c, seeds, global_seed, s) for c in todo]
        messages = [m for m, _ in prompts]
        results = client.chat_many(messages, **s.sampling)
        for c, (msgs, echoes), res in zip(todo, prompts, results, strict=True):
            sha = messages_hash(msgs)
            billed = (res.prompt_tokens or 0, res.completion_tokens or 0)
            if not res.ok:
                outcomes[c["uid"]] = _Failure(f"request failed: {_mark(res.error, res.retryable)}", billed, sha)
                continue
            parsed = parse_triplets(res.text, sent_caption=c["caption_short"])
            trip = []
            rejected: Counter = Counter()
            for t in parsed.triplets:
                v = validate_triplet(t, c["caption_short"], echoes=echoes)
                if v.triplet is None:
                    rejected[v.reason] += 1
                    continue
                fit = fit_edit_in_clip_window(v.triplet.source, v.triplet.target)
                if fit.target is None:
                    rejected[fit.reason] += 1
                    continue
                et = classify_edit_type(v.triplet.instruction, v.triplet.source, v.triplet.target)
                trip.append((v.triplet.source, v.triplet.instruction, fit.target, et, False, fit))
            if trip and s.moderation:
                mods = client.moderate([f"{t[1]}\n{t[2]}" for t in trip])
                outage = next((_mark(m.error, m.retryable) for m in mods if m.error), None)
                if outage:  # an outage is not a verdict: the image fails as retryable, nothing is marked flagged
                    outcomes[c["uid"]] = _Failure(f"moderation: check failed: {outage}", billed, sha)
                    continue
                kept = [t for t, m in zip(trip, mods, strict=True) if not m.flagged]
                stats.triplets_rejected["moderation flagged"] += len(trip) - len(kept)
                if not kept:
                    outcomes[c["uid"]] = _Failure("moderation: every triplet was flagged", billed, sha)
                    continue
                trip = kept
            stats.triplets_rejected.update(rejected)
            if not trip:
                client.forget(msgs, **s.sampling)  # a useless answer is not kept: the next run asks again
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "no triplet in the reply"
                outcomes[c["uid"]] = _Failure(
                    f"parse failed: no valid triplet ({len(parsed.triplets)} parsed; {reasons})", billed, sha
                )
                continue
            outcomes[c["uid"]] = (trip, billed, res.cached, sha)
    else:
        raise ValueError(f"unknown instruction backend {s.backend!r} (template | openai)")

    # 2. rows per image, in caption order; duplicates of an instruction for the same image removed
    for c in caps:
        uid = c["uid"]
        if c.get("status") != "ok":
            stats.upstream_failed += 1
            per_image[uid] = [
                _failed_row(c, shard, profile, s.llm_id, f"captions: {c.get('error') or 'failed upstream'}")
            ]
            continue
        outcome = outcomes.get(uid)
        if outcome is None:
            outcome = "parse failed: the template writer found nothing to edit"
        if isinstance(outcome, str):
            outcome = _Failure(outcome)
        if isinstance(outcome, _Failure):
            if outcome.reason.startswith("request failed"):
                stats.request_failed += 1
            elif outcome.reason.startswith("moderation"):
                stats.moderation_failed += 1
            else:
                stats.parse_failed += 1
            # every billed token is counted, also for answers that gave no triplet
            stats.prompt_tokens += outcome.tokens[0]
            stats.completion_tokens += outcome.tokens[1]
            per_image[uid] = [
                _failed_row(c, shard, profile, s.llm_id, outcome.reason, outcome.tokens, outcome.prompt_sha)
            ]
            continue
        trip, (pt, ct), cached, sha = outcome
        seen: set[str] = set()
        unique = []
        for t in trip:
            key = instruction_key(t[1])
            if key not in seen:
                seen.add(key)
                unique.append(t)
        extra = len(unique) - s.k
        unique = unique[: s.k]
        if len(unique) < s.k:
            stats.fewer_than_k += 1
        note = [f"{len(unique)} of {s.k} triplets"] if len(unique) < s.k else []
        if extra > 0:
            note.append(f"{extra} extra triplets dropped")
        stats.prompt_tokens += pt
        stats.completion_tokens += ct
        stats.cached_replies += int(cached)
        rows = []
        for i, ((src, ins, tgt, et, replaced, fit), p_tok, c_tok) in enumerate(
            zip(unique, _split_tokens(pt, len(unique)), _split_tokens(ct, len(unique)), strict=True)
        ):
            stats.source_replaced += int(replaced)
            iuid = make_uid(uid, "instruction", instruction_key(ins))
            rows.append(
                {
                    "instruction_uid": iuid,
                    "image_uid": uid,
                    "shard": shard,
                    "source_caption": src,
                    "instruction": ins,
                    "target_caption": tgt,
                    "edit_type": et if et in EDIT_TYPES else "Others",
                    "mode": choose_mode(global_seed, iuid, s.region_fraction, et if et in EDIT_TYPES else "Others"),
                    "llm_id": s.llm_id,
                    "caption_desc": c.get("caption_desc"),
                    "near_duplicate": False,
                    "prompt_tokens": p_tok,
                    "completion_tokens": c_tok,
                    "status": "ok",
                    "error": None,
                    "profile": profile,
                    "triplet_index": i,
                    "prompt_sha": sha,
                    "llm_cached": cached,
                    "source_replaced": replaced,
                    "parse_note": "; ".join(
                        note
                        + (["source caption replaced by the sent caption"] if replaced else [])
                        + (
                            [f"target cut from {fit.target_tokens} to {MAX_CLIP_TOKENS} CLIP tokens"]
                            if fit.truncated
                            else []
                        )
                    )
                    or None,
                    "target_clip_tokens": fit.target_tokens,
                    "target_truncated": fit.truncated,
                }
            )
        per_image[uid] = rows

    out = [row for c in caps for row in per_image[c["uid"]]]
    ok_idx = [i for i, r in enumerate(out) if r["status"] == "ok"]
    flags = near_duplicate_flags([out[i]["instruction"] for i in ok_idx], s.near_duplicate_threshold)
    for i, f in zip(ok_idx, flags, strict=True):
        out[i]["near_duplicate"] = f
    return out, stats


@dataclass
class PriorShards:
    """What earlier shards (keys sorting before this one, already in the lake) hold: their ok instructions, source
    captions (normalised) and image URIs. Cross-shard rules compare against these, so the first shard wins."""

    instructions: list[str] = field(default_factory=list)
    captions: set[str] = field(default_factory=set)
    uris: set[str] = field(default_factory=set)


DUPLICATE = "duplicate"


def apply_hygiene(
    rows: list[dict],
    settings: WriterSettings,
    *,
    image_uris: dict[str, str] | None = None,
    prior: PriorShards | None = None,
) -> dict[str, int]:
    """InstructPix2Pix's hygiene over a shard's rows, in place; returns counts.

    - `one_per_caption` / `one_per_url`: only the first ok triplet per normalised source caption / per image URI is
      kept, in this shard and against earlier shards; the others become failed rows `duplicate: ...` (never dropped
      silently).
    - near-duplicate instructions are flagged (not failed) against the shard's earlier rows and every earlier shard's
      instructions, with the same content-word Jaccard rule as within a shard.
    """
    from ultraedit_dagster.text.parsing import normalize_caption

    prior = prior or PriorShards()
    uris = image_uris or {}
    seen_caps, seen_uris = set(prior.captions), set(prior.uris)
    counts = {"duplicate_caption": 0, "duplicate_url": 0, "near_duplicate_cross_shard": 0}
    for row in rows:
        if row["status"] != "ok":
            continue
        cap = normalize_caption(row["source_caption"] or "")
        uri = uris.get(row["image_uid"])
        if settings.one_per_caption and cap in seen_caps:
            counts["duplicate_caption"] += 1
            mark_failed(row, f"{DUPLICATE}: the source caption already has a triplet (one per caption)")
            continue
        if settings.one_per_url and uri and uri in seen_uris:
            counts["duplicate_url"] += 1
            mark_failed(row, f"{DUPLICATE}: the image URL already has a triplet (one per URL)")
            continue
        seen_caps.add(cap)
        if uri:
            seen_uris.add(uri)
    ok_idx = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    flags = near_duplicate_flags(
        prior.instructions + [rows[i]["instruction"] for i in ok_idx], settings.near_duplicate_threshold
    )[len(prior.instructions) :]
    for i, f in zip(ok_idx, flags, strict=True):
        if f and not rows[i]["near_duplicate"]:
            counts["near_duplicate_cross_shard"] += 1
        rows[i]["near_duplicate"] = f
    return counts


def read_prior_shards(lake: Any, shard: str) -> PriorShards:
    """The ok instructions, source captions and image URIs of the shards whose keys sort before `shard` (the lake's
    `edit_instructions` and `source_images`). A shard not yet materialized is not there to compare with."""
    from ultraedit_dagster.text.parsing import normalize_caption

    prior = PriorShards()
    earlier = [k for k in lake.list_shards("edit_instructions") if k < shard]
    for key in earlier:
        uids: set[str] = set()
        cols = ["image_uid", "source_caption", "instruction", "status"]
        for batch in lake.iter_batches("edit_instructions", key, batch_size=4096, columns=cols):
            for r in batch.to_pylist():
                if r["status"] == "ok":
                    prior.instructions.append(r["instruction"] or "")
                    prior.captions.add(normalize_caption(r["source_caption"] or ""))
                    uids.add(r["image_uid"])
        if uids and lake.exists("source_images", key):
            for batch in lake.iter_batches("source_images", key, batch_size=4096, columns=["uid", "uri"]):
                prior.uris.update(r["uri"] for r in batch.to_pylist() if r["uid"] in uids and r["uri"])
    return prior


def summarize(rows: list[dict]) -> dict[str, Any]:
    ok = [r for r in rows if r["status"] == "ok"]
    per_type = {t: sum(1 for r in ok if r["edit_type"] == t) for t in EDIT_TYPES}
    uniq = len({instruction_key(r["instruction"]) for r in ok})
    return {
        "rows": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "triplets_per_edit_type": per_type,
        "unique_instruction_ratio": round(uniq / len(ok), 4) if ok else 0.0,
        "near_duplicates": sum(1 for r in ok if r["near_duplicate"]),
        "region": sum(1 for r in ok if r["mode"] == "region"),
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
    }
