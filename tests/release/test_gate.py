"""The release contains only what passed its gates (issue 14): planted violations run through the same assets and
checks as `shard_pipeline` / `release`, then `release_card` publishes. Each test states what the release contains
afterwards and what the card says.

`metric_scores` here is a stand-in asset with the real key and the real blocking check: it scores every candidate of
write_upstream's shards with fixed healthy values above the UltraEdit thresholds (profile `ultraedit`), then applies
the shard's planted defect. A healthy shard releases 5 rows (free-form F1: 2 passing; region R1: 3 passing)."""

import json
import stat

import dagster as dg
import pyarrow as pa
import pytest

from tests.quality_fixtures import write_upstream
from ultraedit_dagster.core.partitions import shards
from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release import gate
from ultraedit_dagster.release.assets import filtered_release, release_card
from ultraedit_dagster.release.checks import asset_checks as release_checks
from ultraedit_dagster.release.selection import RULE_VERSION
from ultraedit_dagster.scoring.checks import asset_checks as scoring_checks
from ultraedit_dagster.scoring.checks import metric_scores_valid_ranges
from ultraedit_dagster.scoring.metrics import pass_flags

PROFILE = get_profile("ultraedit")
HEALTHY = {
    "clip_sim_source": 0.30,
    "clip_sim_target": 0.31,
    "clip_sim_image": 0.90,
    "dinov2_sim": 0.80,
    "ssim": 0.70,
    "l1": 0.05,
}
PLANTS: dict[str, object] = {}  # shard -> function(ok rows) planting a defect


def _plant_first(**values):
    def plant(rows):
        rows[0].update(values)

    return plant


def _score(cand: dict, k: int) -> dict:
    base = {
        "candidate_uid": cand["candidate_uid"],
        "instruction_uid": cand["instruction_uid"],
        "image_uid": cand["image_uid"],
        "shard": cand["shard"],
        "mode": cand["mode"],
        "edit_type": cand["edit_type"],
        "clip_model_id": "clip-x",
        "dinov2_model_id": "dino-y",
        "scorer_input_sizes": "64",
        "profile": PROFILE.name,
        "status": cand["status"],
        "error": cand["error"],
    }
    if cand["status"] != "ok":
        return {**base, **{m: None for m in (*HEALTHY, "clip_sim_dir")}, "pass_all": False}
    values = {**HEALTHY, "clip_sim_dir": 0.40 - 0.01 * k}
    thresholds = PROFILE.region_thresholds if cand["mode"] == "region" else PROFILE.free_form_thresholds
    return {**base, **values, **pass_flags(values, thresholds)}


@dg.asset(name="metric_scores", partitions_def=shards)
def stand_in_scores(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    shard = context.partition_key
    cands = lake.lake.read_table(
        "edit_candidates",
        shard,
        columns=["candidate_uid", "instruction_uid", "image_uid", "shard", "mode", "edit_type", "status", "error"],
    ).to_pylist()
    rows = [_score(c, k) for k, c in enumerate(cands)]
    if shard in PLANTS:
        PLANTS[shard]([r for r in rows if r["status"] == "ok"])
    lake.lake.write_table("metric_scores", shard, pa.Table.from_pylist(rows))
    return dg.MaterializeResult(metadata={"rows": len(rows)})


SHARD_RUN = [stand_in_scores, filtered_release, metric_scores_valid_ranges, *release_checks]


class World:
    def __init__(self, root, instance):
        self.root, self.instance = root, instance
        self.lake = Lake(str(root))
        self.resources = {"lake": LakeResource(root=str(root)), "pipeline": PipelineResource(profile_name="ultraedit")}

    def add(self, shard):
        self.instance.add_dynamic_partitions("shards", [shard])
        write_upstream(self.lake, shard)

    def run(self, shard, assets=SHARD_RUN):
        return dg.materialize(
            assets, partition_key=shard, instance=self.instance, resources=self.resources, raise_on_error=False
        )

    def release(self):
        result = dg.materialize([release_card], instance=self.instance, resources=self.resources)
        release = self.root / "release"
        return {
            "result": result,
            "summary": json.loads((release / "release.json").read_text()),
            "card": (release / "README.md").read_text(),
            "gate": pa.parquet.read_table(release / "release_gate.parquet").to_pylist(),
            "rows": _released_rows(release),
        }


def _released_rows(release) -> list[dict]:
    """The rows of the data files the card lists (the admitted shards' filtered_release files), checksums verified."""
    import hashlib

    rows = []
    for f in json.loads((release / "release.json").read_text())["files"]:
        path = release / f["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"], f"{path} changed after the card"
        rows += pa.parquet.read_table(path).to_pylist()
    return rows


def _mutate(lake: Lake, asset: str, shard: str, fn) -> None:
    rows = lake.read_table(asset, shard).to_pylist()
    fn(rows)
    lake.write_table(asset, shard, pa.Table.from_pylist(rows, schema=lake.read_table(asset, shard).schema))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import pyarrow.parquet  # noqa: F401  (pa.parquet)

    root = tmp_path_factory.mktemp("gate") / "lake"
    with dg.DagsterInstance.ephemeral() as inst:
        w = World(root, inst)
        runs = {}
        # healthy
        w.add("good-00000")
        runs["good"] = w.run("good-00000")
        # a scorer bug writes ssim = 1.5; later filtered_release is materialized on its own (with its checks)
        w.add("ssim-00000")
        PLANTS["ssim-00000"] = _plant_first(ssim=1.5)
        runs["ssim"] = w.run("ssim-00000")
        runs["ssim_alone"] = w.run("ssim-00000", [filtered_release, *release_checks])
        # a NaN metric
        w.add("nan-00000")
        PLANTS["nan-00000"] = _plant_first(clip_sim_dir=float("nan"))
        runs["nan"] = w.run("nan-00000")
        # a row below a threshold whose pass flags wrongly say it passes, and a no-op pair (L1 = 0)
        w.add("below-00000")
        PLANTS["below-00000"] = _plant_first(clip_sim_image=0.2, pass_all=True)
        runs["below"] = w.run("below-00000")
        w.add("noop-00000")
        PLANTS["noop-00000"] = _plant_first(l1=0.0)
        runs["noop"] = w.run("noop-00000")
        # an older passing version, then the region mask goes missing: the latest materialization fails its check
        w.add("mask-00000")
        runs["mask_first"] = w.run("mask-00000")
        _mutate(w.lake, "edit_candidates", "mask-00000", lambda rows: [r.update(mask_image=None) for r in rows])
        runs["mask"] = w.run("mask-00000")
        # a selected candidate missing from edit_candidates (candidates regenerated, scores not)
        w.add("missing-00000")
        runs["missing_first"] = w.run("missing-00000")
        w.missing_before = (w.root / "filtered_release/shard=missing-00000/data.parquet").read_bytes()
        runs["missing_scores"] = w.run("missing-00000", [stand_in_scores, metric_scores_valid_ranges])
        _mutate(w.lake, "edit_candidates", "missing-00000", lambda rows: rows.pop(0))
        runs["missing"] = w.run("missing-00000", [filtered_release, *release_checks])
        # a duplicate uid across shards: dup-00001 holds dup-00000's candidates
        w.add("dup-00000")
        w.add("dup-00001")
        dup = w.lake.read_table("edit_candidates", "dup-00000")
        w.lake.write_table("edit_candidates", "dup-00001", dup)
        runs["dup0"] = w.run("dup-00000")
        runs["dup1"] = w.run("dup-00001")
        # a file written into the lake outside any run
        w.add("planted-00000")
        runs["planted"] = w.run("planted-00000")
        good = w.lake.read_table("filtered_release", "good-00000")
        w.lake.write_table("filtered_release", "planted-00000", good.replace_schema_metadata({}))
        # a registered shard that never ran
        w.instance.add_dynamic_partitions("shards", ["never-00000"])
        w.runs = runs
        w.out = w.release()
        yield w


def _excluded(world):
    return world.out["result"].asset_materializations_for_node("release_card")[0].metadata["excluded_shards"].value


def _released_shards(world):
    return {r["shard"] for r in world.out["rows"]}


def test_healthy_shard_is_released_with_its_rule(world):
    """Release: good-00000's 5 rows, each carrying the thresholds and rule version that admitted it.
    Card: the shard is among those that passed; it states the selection rule and the L1 band."""
    assert world.runs["good"].success
    rows = [r for r in world.out["rows"] if r["shard"] == "good-00000"]
    assert len(rows) == 5
    assert all(r["rule_version"] == RULE_VERSION and "top 4" in r["selection_rule"] for r in rows)
    region = next(r for r in rows if r["split"] == "region")
    assert region["thresholds"].startswith("clip_sim_image>=0.7") and "0.002<=l1<=0.5" in region["thresholds"]
    card = world.out["card"]
    assert "## Selection rule" in card and "region: top 3 per triplet when at least 3 pass" in card
    assert "| l1 band | 0.002 ≤ l1 ≤ 0.5 | 0.002 ≤ l1 ≤ 0.5 |" in card
    assert "good-00000" not in _excluded(world)


def test_ssim_out_of_range_never_reaches_the_release(world):
    """Release: nothing from ssim-00000, even after filtered_release ran on its own and its checks passed (the bad
    candidate was not selectable). Card: ssim-00000 left out because metric_scores_valid_ranges failed."""
    ranges = [e for e in world.runs["ssim"].get_asset_check_evaluations() if e.check_name.endswith("valid_ranges")]
    assert [e.passed for e in ranges] == [False]
    assert world.runs["ssim_alone"].success
    assert "ssim-00000" not in _released_shards(world)
    assert all(r["ssim"] <= 1 for r in world.out["rows"])
    reasons = _excluded(world)["ssim-00000"]
    assert any("metric_scores_valid_ranges (metric_scores): failed" in r for r in reasons)
    assert "| ssim-00000 | metric_scores_valid_ranges" in world.out["card"]


def test_nan_metric_never_reaches_the_release(world):
    """Release: nothing from nan-00000. Card: left out, the range check failed on metric_scores."""
    assert "nan-00000" not in _released_shards(world)
    assert any("metric_scores_valid_ranges" in r for r in _excluded(world)["nan-00000"])


def test_row_below_threshold_and_noop_pair_are_not_selected(world):
    """Release: below-00000 and noop-00000 are released without the planted candidate (4 rows each: it was the
    best free-form candidate); the shard's metadata counts why. Card: both shards passed the gate."""
    for shard, why in (("below-00000", "clip_sim_image below threshold"), ("noop-00000", "no-op pair")):
        rows = [r for r in world.out["rows"] if r["shard"] == shard]
        assert len(rows) == 4, shard
        assert all(r["clip_sim_image"] >= 0.75 and r["l1"] >= 0.002 for r in rows if r["split"] == "free_form")
        meta = world.runs[shard.split("-")[0]].asset_materializations_for_node("filtered_release")[0].metadata
        assert why in meta["candidates_ineligible"].value
        assert shard not in _excluded(world)


def test_latest_materialization_failing_its_check_excludes_the_shard(world):
    """An older version of mask-00000 passed; the latest lost its region masks. Release: nothing from mask-00000
    (no region row without a mask). Card: left out, filtered_release_region_masks failed."""
    assert world.runs["mask_first"].success and not world.runs["mask"].success
    assert "mask-00000" not in _released_shards(world)
    assert all(r["mask_image"] is not None for r in world.out["rows"] if r["split"] == "region")
    assert any("filtered_release_region_masks" in r for r in _excluded(world)["mask-00000"])


def test_missing_candidate_fails_once_leaves_the_file_and_the_shard_is_stale(world):
    """The guard runs before the shard file is replaced, and the deterministic error is not retried. Release:
    nothing from missing-00000 (its scores changed after its last good filtered_release). Card: left out as stale."""
    run = world.runs["missing"]
    assert not run.success
    starts = [e for e in run.all_events if e.step_key == "filtered_release" and e.event_type_value == "STEP_START"]
    assert len(starts) == 1
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in run.all_events)
    [failure] = [e for e in run.all_events if e.is_step_failure]
    assert "missing from edit_candidates" in failure.step_failure_data.error.message
    assert (world.root / "filtered_release/shard=missing-00000/data.parquet").read_bytes() == world.missing_before
    assert "missing-00000" not in _released_shards(world)
    assert any("stale: metric_scores" in r for r in _excluded(world)["missing-00000"])


def test_duplicate_uid_across_shards_keeps_the_first_shard(world):
    """Release: dup-00000's rows once; dup-00001 left out. Card: dup-00001 repeats uids of dup-00000."""
    shards_ = _released_shards(world)
    assert "dup-00000" in shards_ and "dup-00001" not in shards_
    uids = [r["uid"] for r in world.out["rows"]]
    assert len(uids) == len(set(uids))
    assert any("repeats uids of shard(s) dup-00000" in r for r in _excluded(world)["dup-00001"])


def test_file_written_outside_a_run_and_never_run_shard_are_left_out(world):
    assert "planted-00000" not in _released_shards(world)
    assert any("lake_file_matches_materialization" in r for r in _excluded(world)["planted-00000"])
    assert any("never materialized" in r for r in _excluded(world)["never-00000"])


def test_gate_table_and_release_summary(world):
    gate_rows = world.out["gate"]
    good = [r for r in gate_rows if r["shard"] == "good-00000"]
    checks = {(r["asset"], r["check"]) for r in good}
    for asset, names in gate.BLOCKING_CHECKS.items():
        assert {(asset, n) for n in names} <= checks
    assert all(r["passed"] and r["included"] for r in good)
    assert all(r["run_id"] == world.runs["good"].run_id for r in good if r["run_id"])
    summary = world.out["summary"]
    assert set(summary["shards"]) == {"good-00000", "below-00000", "noop-00000", "dup-00000"}
    assert set(summary["excluded"]) == {
        "ssim-00000",
        "nan-00000",
        "mask-00000",
        "missing-00000",
        "dup-00001",
        "planted-00000",
        "never-00000",
    }
    assert summary["rows"] == 5 + 4 + 4 + 5


def test_release_folder_is_readable_like_the_lake(world):
    release = world.root / "release"
    assert stat.S_IMODE(release.stat().st_mode) == 0o755
    for path in release.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_blocking_checks_are_the_gate_s_checks():
    defined = {}
    for c in [*scoring_checks, *release_checks]:
        for spec in c.check_specs:
            if spec.blocking:
                defined.setdefault(spec.asset_key.to_user_string(), set()).add(spec.name)
    assert defined == {a: set(n) for a, n in gate.BLOCKING_CHECKS.items()}


def test_release_card_follows_its_shards_under_automation(tmp_path):
    """After a shard of filtered_release is materialized again, the automation condition requests release_card,
    even while another registered shard has never run."""
    parts = ["a-00000", "b-00000"]

    @dg.asset(name="filtered_release", partitions_def=shards)
    def stand_in_release() -> None:
        return None

    defs = dg.Definitions(
        assets=[stand_in_release, release_card],
        resources={"lake": LakeResource(root=str(tmp_path)), "pipeline": PipelineResource(profile_name="tiny")},
    )
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("shards", parts)
        first = dg.evaluate_automation_conditions(defs=defs, instance=inst)
        dg.materialize([stand_in_release], partition_key="a-00000", instance=inst)
        after = dg.evaluate_automation_conditions(defs=defs, instance=inst, cursor=first.cursor)
    assert after.get_num_requested(dg.AssetKey("release_card")) == 1


def test_threshold_check_fails_a_nan_metric(tmp_path, world):
    """DuckDB orders NaN above every number: `NOT coalesce(x >= t, false)` let NaN pass. The release rows of a
    healthy shard pass; the same rows with one NaN metric fail both the threshold and the range check."""
    import ultraedit_dagster.release.checks as cq

    rows = world.lake.read_table("filtered_release", "good-00000").to_pylist()
    rows[0]["clip_sim_dir"] = float("nan")
    lake = Lake(str(tmp_path / "lake"))
    lake.write_table(
        "filtered_release",
        "good-00000",
        pa.Table.from_pylist(rows, schema=world.lake.read_table("filtered_release", "good-00000").schema),
    )
    res = LakeResource(root=str(tmp_path / "lake"))
    pipeline = PipelineResource(profile_name="ultraedit")
    thr = cq.filtered_release_meets_thresholds_result(res, "good-00000", pipeline)
    assert not thr.passed and "clip_sim_dir" in thr.metadata["violations"].value
    assert not cq.filtered_release_valid_ranges_result(res, "good-00000").passed
    good = LakeResource(root=str(world.root))
    assert cq.filtered_release_meets_thresholds_result(good, "good-00000", pipeline).passed
    rows[0]["clip_sim_dir"], rows[0]["l1"] = 0.3, 0.0  # a no-op pair
    lake.write_table(
        "filtered_release",
        "good-00000",
        pa.Table.from_pylist(rows, schema=world.lake.read_table("filtered_release", "good-00000").schema),
    )
    thr = cq.filtered_release_meets_thresholds_result(res, "good-00000", pipeline)
    assert not thr.passed and "l1_band" in thr.metadata["violations"].value
