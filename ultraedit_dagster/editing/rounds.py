"""Generate and score in rounds, stop early, keep images only where they are needed (docs/method.md §8). Pure: no
Dagster; the lake, the editor and the scorer come in as arguments.

A shard's triplets are worked on a pool at a time (`Rounds.max_active_triplets`): each round generates the next
`round_size` candidates of every unfinished triplet in the pool, batched across triplets (the generator groups them by
the schedule they must share), and scores each chunk of generated pairs in memory right after it is generated. After a
round the stopping policy decides per triplet whether it needs more:

- `exhaustive`: all N candidates (the published behaviour);
- `early`: stop once the triplet has as many passing candidates as its selection keeps (free-form: top k; region:
  max(top k, min passing)) *and* `extra_rounds` more rounds have run since, or when all N exist.

Candidate i of a triplet is always `candidate_uid(instruction uid, i)` with parameters drawn from that uid alone
(`generation.draw_params`) and round r holds indices [r * round_size, (r + 1) * round_size): the policy only decides
how many of the same candidates exist, so a re-run reproduces the same rounds, scores and bytes, and `exhaustive` makes
exactly the candidates the one-shot generator made.

When a triplet finishes, `release.selection.select` (the rule `filtered_release` applies) picks its samples, and every
candidate gets a typed `outcome`: `selected`, `passed_not_selected`, `passed_triplet_dropped` (a passing candidate of a
region triplet with fewer than the required passing), `below_<metric>` (the first failed threshold in
docs/method.md §5 order), `generation_failed: <reason>`, `scoring_failed: <reason>` or `upstream_failed: <asset>`.
Image bytes stay only on the top passing candidates of each triplet (`image_kept` = `selected`, or `selectable` when
the triplet was dropped) and on a deterministic audit sample of the rest (`audit`, `Rounds.audit_fraction`, decided
from the candidate uid). Every other row keeps its parameters, scores and outcome, without images. Only the triplets
in the pool and their few best images are held in memory, so memory does not grow with candidates per triplet.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ultraedit_dagster.core.ids import rng_for
from ultraedit_dagster.core.imaging import decode_png, encode_png
from ultraedit_dagster.core.rows import source_images_of
from ultraedit_dagster.editing.params import (
    FREE_FORM,
    REGION,
    PairRequest,
    draw_params,
    load_mask,
    recipe_options_text,
    recipe_version,
)
from ultraedit_dagster.editing.rows import base_row, fail, load_work
from ultraedit_dagster.regions import mask_math
from ultraedit_dagster.release import selection as release_selection
from ultraedit_dagster.scoring.rows import first_failed_threshold, score_rows, thresholds_for

IMAGE_BATCH = 8  # source images read per lake batch
SELECTED, PASSED_NOT_SELECTED, PASSED_DROPPED = "selected", "passed_not_selected", "passed_triplet_dropped"


def recipe_fields(profile: Any, editor: Any) -> dict[str, Any]:
    """recipe, recipe_version and recipe_options for every row of a shard (docs/method.md §12): the editor's recipe
    and generator choices (what actually ran), plus the profile's soft-mask draw."""
    recipe = getattr(editor, "recipe", None) or profile.recipe
    options = dict(editor.recipe_options()) if hasattr(editor, "recipe_options") else {}
    if recipe != "ip2p":
        options["soft_mask_draw"] = profile.region.soft_mask_draw
    return {
        "recipe": recipe,
        "recipe_version": recipe_version(recipe),
        "recipe_options": recipe_options_text(options),
    }


def needed_passing(region: bool, selection: Any) -> int:
    """How many passing candidates fill a triplet's selection."""
    if region:
        return max(selection.region_top_k, selection.region_min_passing)
    return selection.free_form_top_k


def top_k(region: bool, selection: Any) -> int:
    return selection.region_top_k if region else selection.free_form_top_k


def needs_more(generated: int, total: int, rounds_done: int, enough_at: int | None, rounds: Any) -> bool:
    """The stopping policy after a round. `enough_at`: the round count at which the triplet first had enough passing
    candidates (None: not yet)."""
    if generated >= total:
        return False
    if rounds.policy == "exhaustive" or enough_at is None:
        return True
    return rounds_done - enough_at < rounds.extra_rounds


def unet_row_steps(row: Mapping[str, Any]) -> int:
    """A candidate's generation work: UNet rows (source + target, doubled with CFG) times the steps run."""
    run = min(int(row["steps"] * row["strength"]), row["steps"])
    return 2 * (2 if row["guidance"] > 1.0 else 1) * run


def is_audited(global_seed: int, uid: str, fraction: float) -> bool:
    """The deterministic audit sample: a candidate keeps its images with probability `fraction`, from its uid."""
    return fraction > 0 and float(rng_for(global_seed, uid, "audit").random()) < fraction


def select_triplet(scores: list[dict], profile: Any) -> Any:
    """`filtered_release`'s selection on one triplet's rows (the same function and arguments, so the images kept
    here are exactly the ones the release will ask for)."""
    by_mode = getattr(release_selection, "thresholds_by_mode", None)
    if by_mode is None:
        return release_selection.select(scores, profile.selection)
    return release_selection.select(scores, profile.selection, by_mode(profile))


def ineligible(score: Mapping[str, Any], profile: Any) -> str | None:
    """Why a scored candidate cannot be selected (None: it can), by the release's own rule."""
    reason = getattr(release_selection, "ineligible_reason", None)
    if reason is not None:
        return reason(score, thresholds_for(profile, score.get("mode")))
    value = score.get("clip_sim_dir")
    if score.get("status") != "ok" or not score.get("pass_all"):
        return "pass_all is false"
    return None if value is not None and math.isfinite(value) else "clip_sim_dir missing or not finite"


def outcome_of(score: Mapping[str, Any]) -> str:
    """The outcome of a candidate that did not pass (or of any candidate before selection)."""
    error = score.get("error") or ""
    if score.get("status") != "ok":
        if error.startswith("edit_candidates:"):
            return "generation_failed: " + error.removeprefix("edit_candidates:").strip()[:200]
        if error.startswith("metric_scores:"):
            return "scoring_failed: " + error.removeprefix("metric_scores:").strip()[:200]
        return "upstream_failed: " + (error.split(":", 1)[0] if ":" in error else "unknown")
    failed = first_failed_threshold(score)
    return f"below_{failed}" if failed else "passed"


@dataclass
class RoundStats:
    """What the step did and what it cost (docs/method.md §8)."""

    generated: int = 0
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0
    rounds: int = 0
    triplets: int = 0
    stopped_early: int = 0
    exhausted: int = 0
    triplets_kept: int = 0
    region_dropped: int = 0
    kept_samples: int = 0
    images_kept: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    passed_by_threshold: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    scored: int = 0
    preview: list[Image.Image] = field(default_factory=list)
    max_active_pairs: int = 0  # the most candidate pairs held in memory at once (images)


@dataclass
class _Triplet:
    ins: dict
    region: bool
    settings: Any
    image_uid: str
    mask: np.ndarray | None = None
    mask_png: bytes | None = None
    soft_value: float | None = None
    # per-candidate soft masks (RegionGen.soft_mask_draw = "candidate"): the binary inner / outer masks, and the
    # (array, PNG) built so far per band value
    inner: np.ndarray | None = None
    outer: np.ndarray | None = None
    soft_cache: dict = field(default_factory=dict)
    generated: int = 0
    rounds_done: int = 0
    passing: int = 0
    enough_at: int | None = None
    rows: list[tuple[dict, dict]] = field(default_factory=list)  # (edit_candidates row, metric_scores row)
    best: list[tuple[float, str, Image.Image | None, Image.Image]] = field(default_factory=list)  # top passing

    @property
    def total(self) -> int:
        return self.settings.candidates_per_triplet


def _order(clip_dir: float, uid: str) -> tuple[float, str]:
    return (-clip_dir, uid)  # release.selection's order


class RoundRunner:
    """Runs one shard; iterate `run()` for (edit_candidates rows, metric_scores rows) of finished triplets."""

    def __init__(
        self,
        lake: Any,
        shard: str,
        *,
        profile: Any,
        global_seed: int,
        editor: Any,
        scorer: Any,
        score_ids: Mapping[str, str],
        rounds: Any | None = None,
        preview_pairs: int = 4,
    ) -> None:
        self.lake, self.shard, self.profile, self.global_seed = lake, shard, profile, global_seed
        self.editor, self.scorer, self.score_ids = editor, scorer, dict(score_ids)
        self.rounds = rounds or profile.rounds
        self.selection = profile.selection
        self.stats = RoundStats()
        self.preview_pairs = preview_pairs
        self.log: list[tuple[str, int, int]] = []  # (instruction uid, round, candidate index) in generation order
        self.stop_log: dict[str, int] = {}  # instruction uid -> the round after which it stopped
        self._gen = None
        self._images: dict[str, tuple[Image.Image, bytes]] = {}
        self._image_users: dict[str, int] = defaultdict(int)
        self.recipe = recipe_fields(profile, editor)

    # -- rows without generation ----------------------------------------------------------------------------------

    def _finish_failed(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        for row in rows:
            row.update(self.recipe)
        scores = score_rows(rows, self.scorer, self.profile, self.score_ids, images=[None] * len(rows))
        for cand, score in zip(rows, scores, strict=True):
            self._set_outcome(cand, score, outcome_of(score))
        return rows, scores

    def _set_outcome(self, cand: dict, score: dict, outcome: str) -> None:
        cand["outcome"] = score["outcome"] = outcome
        self.stats.outcomes[outcome.split(":", 1)[0]] += 1

    # -- the loop --------------------------------------------------------------------------------------------------

    def run(self) -> Iterator[tuple[list[dict], list[dict]]]:
        editor_id = self.editor.editor_id
        failed, instructions, masks = load_work(self.lake, self.shard, self.profile, editor_id)
        if failed:
            yield self._finish_failed(failed)
        wanted = [uid for uid, lst in instructions.items() if lst]
        if not wanted:
            return
        self._gen = self.editor.generator()
        sources = source_images_of(self.lake, self.shard, wanted, batch_size=IMAGE_BATCH)
        active: list[_Triplet] = []
        exhausted_sources = False
        while True:
            while not exhausted_sources and len(active) < self.rounds.max_active_triplets:
                source = next(sources, None)
                if source is None:
                    exhausted_sources = True
                    break
                bad, new = self._triplets_of(source, instructions[source.uid], masks, editor_id)
                if bad:
                    yield self._finish_failed(bad)
                active.extend(new)
            if not active:
                return
            self._round(active)
            still: list[_Triplet] = []
            done_c: list[dict] = []
            done_s: list[dict] = []
            for t in active:
                if needs_more(t.generated, t.total, t.rounds_done, t.enough_at, self.rounds):
                    still.append(t)
                    continue
                self.stop_log[t.ins["instruction_uid"]] = t.rounds_done
                c, s = self._finalize(t)
                done_c += c
                done_s += s
            active = still
            if done_c:
                yield done_c, done_s

    def _triplets_of(self, source, ins_list, masks, editor_id) -> tuple[list[dict], list[_Triplet]]:
        shard, profile = self.shard, self.profile
        if source.error:
            return [fail(base_row(i, shard, profile.name, editor_id), source.error) for i in ins_list], []
        bad, out = [], []
        ip2p = self.recipe["recipe"] == "ip2p"
        for ins in ins_list:
            region = ins["mode"] == REGION
            # InstructPix2Pix has no region mode: its region rows are text-to-image pairs like the free-form ones
            settings = profile.region if region and not ip2p else profile.free_form
            t = _Triplet(ins, region, settings, source.uid)
            if region and not ip2p:
                m = masks[ins["instruction_uid"]]
                t.mask_png, t.soft_value = m["soft_mask"], m["soft_value"]
                try:
                    t.mask = load_mask(decode_png(t.mask_png), source.image.size[0])
                    if profile.region.soft_mask_draw == "candidate":
                        size = source.image.size[0]
                        t.inner = load_mask(decode_png(m["inner_mask"]), size) >= 0.5
                        t.outer = load_mask(decode_png(m["outer_mask"]), size) >= 0.5
                except Exception as exc:  # noqa: BLE001 - recorded in the row
                    bad.append(
                        fail(
                            base_row(ins, shard, profile.name, editor_id), f"region_masks: undecodable soft mask: {exc}"
                        )
                    )
                    continue
            out.append(t)
        if out:
            self._images[source.uid] = (source.image, source.png)
            self._image_users[source.uid] += len(out)
            self.stats.triplets += len(out)
        return bad, out

    def _round(self, active: list[_Triplet]) -> None:
        """Generate and score the next round of every active triplet, a chunk of pairs at a time."""
        work: list[tuple[_Triplet, dict, PairRequest]] = []
        editor_id = self.editor.editor_id
        source_real = self.profile.free_form.source_mode == "real"
        for t in active:
            stop = min(t.generated + self.rounds.round_size, t.total)
            for k in range(t.generated, stop):
                row = base_row(t.ins, self.shard, self.profile.name, editor_id, k)
                mode = REGION if t.region and t.mask is not None else FREE_FORM
                params = draw_params(self.global_seed, row["candidate_uid"], mode, t.settings)
                soft_value, mask, mask_png = self._candidate_mask(t, row["candidate_uid"])
                row.update(
                    seed=params.seed,
                    p=params.p,
                    steps=params.steps,
                    strength=params.strength,
                    guidance=params.guidance,
                    soft_value=soft_value,
                    mask_image=mask_png,
                    round=t.rounds_done,
                    **self.recipe,
                )
                if source_real and not t.region:
                    row["source_is_real"] = True
                image = self._images[t.image_uid][0]
                req = PairRequest(
                    uid=row["candidate_uid"],
                    mode=mode,
                    image=image,
                    source_caption=t.ins["source_caption"],
                    target_caption=t.ins["target_caption"],
                    params=params,
                    mask=mask,
                    image_key=t.image_uid,
                )
                work.append((t, row, req))
                self.log.append((t.ins["instruction_uid"], t.rounds_done, k))
            t.generated = stop
        chunk = max(64, 4 * self._gen.batch_size)
        for i in range(0, len(work), chunk):
            self._generate_and_score(work[i : i + chunk])
        self.stats.rounds += 1
        for t in active:
            t.rounds_done += 1
            if t.enough_at is None and t.passing >= needed_passing(t.region, self.selection):
                t.enough_at = t.rounds_done

    def _candidate_mask(self, t: _Triplet, uid: str) -> tuple[float | None, np.ndarray | None, bytes | None]:
        """(band value, soft mask array, its PNG) of one candidate. Per candidate (the released code draws whether
        to use the band and its value for every pipeline call) the draw comes from the candidate uid; per triplet it
        is region_masks' soft mask (docs/method.md §12)."""
        if t.mask is None:
            return None, None, None
        if t.inner is None:
            return t.soft_value, t.mask, t.mask_png
        region = self.profile.region
        value = mask_math.choose_soft_value(
            self.global_seed, uid, region.soft_mask_probability, region.soft_mask_values
        )
        if value not in t.soft_cache:
            soft = mask_math.soft_mask(t.inner, t.outer, value)
            t.soft_cache[value] = (soft, encode_png(Image.fromarray(mask_math.to_uint8(soft), mode="L")))
        soft, png = t.soft_cache[value]
        return value, soft, png

    def _generate_and_score(self, work: list[tuple[_Triplet, dict, PairRequest]]) -> None:
        self.stats.max_active_pairs = max(self.stats.max_active_pairs, len(work))
        t0 = time.perf_counter()
        results = self._gen.generate([req for _, _, req in work])
        self.stats.generation_seconds += time.perf_counter() - t0
        self.stats.generated += len(results)
        rows, pixels, kept_pil = [], [], []
        for (_t, row, req), res in zip(work, results, strict=True):
            if not res.ok:
                rows.append(fail(row, f"edit_candidates: {res.error}"))
                pixels.append(None)
                kept_pil.append(None)
                continue
            src_pil = req.image if row["source_is_real"] else res.source
            rows.append(row)
            pixels.append((np.asarray(src_pil.convert("RGB")), np.asarray(res.target.convert("RGB"))))
            kept_pil.append((None if row["source_is_real"] else res.source, res.target))
        t0 = time.perf_counter()
        scores = score_rows(rows, self.scorer, self.profile, self.score_ids, images=pixels)
        self.stats.scoring_seconds += time.perf_counter() - t0
        for (t, _, _), row, score, pil in zip(work, rows, scores, kept_pil, strict=True):
            score["round"] = row["round"]
            score["unet_row_steps"] = unet_row_steps(row) if row.get("steps") else 0
            t.rows.append((row, score))
            if pil is None or score["status"] != "ok":
                continue
            if is_audited(self.global_seed, row["candidate_uid"], self.rounds.audit_fraction):
                self._attach(row, pil, "audit")
            if ineligible(score, self.profile) is None:
                t.passing += 1
                t.best.append((score["clip_sim_dir"], row["candidate_uid"], pil[0], pil[1]))
                t.best.sort(key=lambda b: _order(b[0], b[1]))
                del t.best[top_k(t.region, self.selection) :]

    def _attach(self, row: dict, pil: tuple[Image.Image | None, Image.Image], reason: str) -> None:
        src, tgt = pil
        if src is not None and row.get("source_image") is None:
            row["source_image"] = encode_png(src)
        elif src is None and row.get("source_image") is None:
            row["source_image"] = self._images[row["image_uid"]][1]  # the real photo, as the source_images row holds
        if row.get("target_image") is None:
            row["target_image"] = encode_png(tgt)
        row["image_kept"] = reason

    def _finalize(self, t: _Triplet) -> tuple[list[dict], list[dict]]:
        st = self.stats
        if t.generated < t.total:
            st.stopped_early += 1
        else:
            st.exhausted += 1
        scores = [s for _, s in t.rows]
        result = select_triplet(scores, self.profile)
        selected = {r["candidate_uid"] for r in result.selected}
        best = {b[1]: b for b in t.best}
        if result.triplets_kept:
            st.triplets_kept += 1
        elif t.region and t.passing:
            st.region_dropped += 1
        for cand, score in t.rows:
            uid = cand["candidate_uid"]
            outcome = outcome_of(score)
            if outcome == "passed" and uid not in best and ineligible(score, self.profile) is not None:
                outcome = "ineligible: " + str(ineligible(score, self.profile))
            if outcome == "passed":
                outcome = SELECTED if uid in selected else PASSED_NOT_SELECTED
                if uid in best and uid not in selected:
                    outcome = PASSED_DROPPED
            if uid in best:
                self._attach(cand, (best[uid][2], best[uid][3]), "selected" if uid in selected else "selectable")
            self._set_outcome(cand, score, outcome)
            if score["status"] == "ok":
                st.scored += 1
                for m in ("clip_sim_image", "clip_sim_dir", "clip_sim_source", "clip_sim_target", "dinov2_sim"):
                    st.passed_by_threshold[m] += bool(score.get(f"pass_{m}"))
            if cand.get("image_kept"):
                st.images_kept[cand["image_kept"]] += 1
            if outcome == SELECTED:
                st.kept_samples += 1
                if len(st.preview) < 2 * self.preview_pairs:
                    st.preview += [decode_png(cand["source_image"]), decode_png(cand["target_image"])]
        if len(selected) != sum(1 for c, _ in t.rows if c["outcome"] == SELECTED):
            raise RuntimeError(f"triplet {t.ins['instruction_uid']}: selection and outcomes disagree")
        self._image_users[t.image_uid] -= 1
        if self._image_users[t.image_uid] == 0:
            del self._images[t.image_uid], self._image_users[t.image_uid]
            self._gen.forget_images([t.image_uid])
        return [c for c, _ in t.rows], scores
