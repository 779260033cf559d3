"""Region-stage model bindings: tagger, object selector, grounder (GroundingDINO) and segmenter (SAM)."""

from typing import Any, Optional

import dagster as dg
from pydantic import PrivateAttr

from ultraedit_dagster.core.devices import resolve_device, resolve_dtype, use_fp16
from ultraedit_dagster.core.profiles import Profile
from ultraedit_dagster.core.resources import LLMEndpoint, endpoint_or_default
from ultraedit_dagster.regions.object_selection import (
    MAX_OBJECTS,
    ObjectSelection,
    SelectionParseError,
    load_vocabulary,
    parse_selection,
    select_by_rules,
    selection_prompt,
)

# The grounder: GroundingDINO (transformers) turning the selected object phrase into boxes, loaded lazily.


class GrounderResource(dg.ConfigurableResource):
    """GroundingDINO open-set detection (docs/method.md §4). `model`: a hub id (`IDEA-Research/grounding-dino-base`),
    a local folder written by `save_pretrained` (model and processor together), or `tiny` (seeded random, small
    config). Boxes whose best token score exceeds `box_threshold` (0.30) are kept and labelled with the tokens above
    `text_threshold` (0.25); `max_boxes` > 0 keeps only the best ones. On GPU the model runs under fp16 autocast."""

    model: str = "tiny"
    box_threshold: float = 0.30
    text_threshold: float = 0.25
    max_boxes: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    seed: int = 0

    _grounder: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "GrounderResource":
        rm = profile.region_masking
        kwargs: dict[str, Any] = dict(
            model=profile.grounder_model,
            box_threshold=rm.box_threshold,
            text_threshold=rm.text_threshold,
            max_boxes=rm.max_boxes,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._grounder is None:
            from ultraedit_dagster.models.grounder import load_grounder

            device = resolve_device(self.device)
            self._grounder = load_grounder(self.model, device=device, fp16=use_fp16(self.dtype, device), seed=self.seed)
        return self._grounder

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def detect(self, images: list, texts: list[str]) -> list:
        """One `Detection` per (image, text) pair, batched by `batch_size`."""
        grounder = self.load()
        out = []
        for start in range(0, len(images), max(1, self.batch_size)):
            out += grounder.detect(
                images[start : start + self.batch_size],
                texts[start : start + self.batch_size],
                box_threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                max_boxes=self.max_boxes,
            )
        return out


# The object selector: which object(s) an instruction edits, or NONE, by rules or by an LLM.


class ObjectSelectorResource(dg.ConfigurableResource):
    """`backend`: `rules` (the tiny profile: caption words the instruction changes, matched against the tags and
    the caption's nouns) or `openai` (UltraEdit's selection prompt to any OpenAI-compatible endpoint: `base_url`,
    the shared `endpoint`, core.resources.LLMEndpoint: cached by payload hash, retried on 429 / 5xx / timeouts)."""

    backend: str = "rules"
    endpoint: Optional[LLMEndpoint] = None
    temperature: float = 0.0
    max_tokens: int = 32
    max_objects: int = MAX_OBJECTS
    vocabulary_path: str = ""

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "ObjectSelectorResource":
        kwargs: dict[str, Any] = dict(
            backend=profile.object_selector_backend, max_objects=profile.region_masking.max_objects
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def selector_id(self) -> str:
        if self.backend == "rules":
            return "rules"
        if self.backend == "openai":
            return f"openai:{endpoint_or_default(self.endpoint).model}"
        raise ValueError(f"unknown object selector backend {self.backend!r} (rules | openai)")

    def _llm(self):
        return endpoint_or_default(self.endpoint).client()

    def select_many(self, requests: list[dict]) -> list[ObjectSelection | Exception]:
        """For each request (instruction, source_caption, target_caption, tags, edit_type) a ObjectSelection, or the
        exception that says why no selection could be made (the asset records it as a failed row)."""
        if self.backend == "rules":
            vocab = load_vocabulary(self.vocabulary_path or None)
            out: list[ObjectSelection | Exception] = []
            for r in requests:
                try:
                    out.append(
                        select_by_rules(
                            r["instruction"],
                            r["source_caption"],
                            r["target_caption"],
                            r.get("tags") or (),
                            edit_type=r.get("edit_type"),
                            vocabulary=vocab,
                            max_objects=self.max_objects,
                        )
                    )
                except Exception as exc:  # noqa: BLE001 - recorded per row
                    out.append(exc)
            return out
        _ = self.selector_id  # validates the backend name
        messages = [
            [
                {
                    "role": "user",
                    "content": selection_prompt(
                        r["instruction"], r["source_caption"], r["target_caption"], r.get("tags") or ()
                    ),
                }
            ]
            for r in requests
        ]
        client = self._llm()
        params = dict(temperature=self.temperature, max_tokens=self.max_tokens)
        results = client.chat_many(messages, **params)
        out = []
        for req, msgs, res in zip(requests, messages, results, strict=True):
            if not res.ok:
                out.append(RuntimeError(f"LLM error: {res.error}"))
                continue
            try:
                # strict: NONE variants, lists and sentences are read; an object not found in the tags, the source
                # caption or the instruction is refused, never sent to the grounder
                objects = parse_selection(
                    res.text or "",
                    max_objects=self.max_objects,
                    instruction=req["instruction"],
                    source_caption=req["source_caption"],
                    tags=req.get("tags") or (),
                )
            except SelectionParseError as exc:
                forget = getattr(client, "forget", None)
                if forget is not None:
                    forget(msgs, **params)  # an unusable answer is not kept: the next run asks again
                out.append(SelectionParseError(f"object selection failed: {exc} (answer {(res.text or '')[:80]!r})"))
                continue
            out.append(
                ObjectSelection(
                    objects,
                    self.selector_id,
                    "llm",
                    raw=res.text,
                    prompt_tokens=res.prompt_tokens,
                    completion_tokens=res.completion_tokens,
                )
            )
        return out


# The segmenter: SAM prompted with all boxes of an image at once, masks merged by max, loaded lazily.


class SegmenterResource(dg.ConfigurableResource):
    """segment-anything's SamPredictor (docs/method.md §4). `model_type`: vit_h / vit_l / vit_b (built exactly as
    segment_anything builds them) or `tiny` (same modelling classes, small config); `checkpoint`: the .pth file,
    loaded with `torch.load(weights_only=True)`; empty means random weights (only for `tiny`). On GPU SAM runs under
    fp16 autocast."""

    model_type: str = "tiny"
    checkpoint: str = ""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1  # SamPredictor embeds one image at a time
    seed: int = 0

    _segmenter: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "SegmenterResource":
        kwargs: dict[str, Any] = dict(model_type=profile.sam_model_type, checkpoint=profile.sam_checkpoint)
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._segmenter is None:
            if self.model_type != "tiny" and not self.checkpoint:
                raise ValueError(f"SAM {self.model_type} needs a checkpoint file (only 'tiny' is built random)")
            from ultraedit_dagster.models.segmenter import load_segmenter

            device = resolve_device(self.device)
            self._segmenter = load_segmenter(
                self.model_type,
                self.checkpoint or None,
                device=device,
                fp16=use_fp16(self.dtype, device),
                seed=self.seed,
            )
        return self._segmenter

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def segment(self, image_rgb, boxes):
        """The fine mask (bool HxW) for one image and its boxes (xyxy pixels)."""
        return self.load().segment(image_rgb, boxes)


# The tagger: zero-shot open_clip tagging over the shipped object vocabulary, loaded lazily.


class TaggerResource(dg.ConfigurableResource):
    """Tags images with the nouns of `vocabulary_path` (default: the shipped ultraedit_dagster/data/
    object_vocabulary.txt) by CLIP zero-shot classification (stands in for Recognize Anything, which the package
    registry does not carry). `clip_model` / `clip_pretrained`: an open_clip name and pretrained tag or checkpoint
    file; `tiny` / `random` builds a seeded random model. Keeps tags with softmax probability >= `min_score`, best
    first, at most `max_tags`."""

    clip_model: str = "tiny"
    clip_pretrained: str = "random"
    vocabulary_path: str = ""
    min_score: float = 0.02
    max_tags: int = 20
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    seed: int = 0

    _tagger: Any = PrivateAttr(default=None)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> "TaggerResource":
        rm = profile.region_masking
        kwargs: dict[str, Any] = dict(
            clip_model=profile.tagger_clip_model,
            clip_pretrained=profile.tagger_clip_pretrained,
            min_score=rm.tag_min_score,
            max_tags=rm.max_tags,
        )
        kwargs.update(overrides)
        return cls(**kwargs)

    def load(self):
        if self._tagger is None:
            from ultraedit_dagster.models.tagger import load_tagger
            from ultraedit_dagster.regions.object_selection import load_vocabulary

            device = resolve_device(self.device)
            dtype = resolve_dtype(self.dtype, device)
            self._tagger = load_tagger(
                self.clip_model,
                self.clip_pretrained,
                vocabulary=load_vocabulary(self.vocabulary_path or None),
                device=device,
                dtype=dtype,
                seed=self.seed,
            )
        return self._tagger

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def tag(self, images: list) -> list[list[str]]:
        """Tags per image, best first."""
        results = self.load().tag(images, min_score=self.min_score, max_tags=self.max_tags, batch_size=self.batch_size)
        return [[name for name, _ in r] for r in results]
