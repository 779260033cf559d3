"""CLI defects of issue 13 item 7: sql with trailing comments, unknown assets, the summary's wording, the release
command, the backfill wording when shards are busy, progress lines."""

import io
import json
from types import SimpleNamespace

import duckdb
import pytest

from ultraedit_dagster import cli


def test_shard_asset_names_match_the_lake():
    from ultraedit_dagster.lake.store import SHARD_ASSETS

    assert cli.SHARD_ASSET_NAMES == SHARD_ASSETS


def test_sql_accepts_trailing_semicolon_comments_and_several_statements():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(5)")
    out = io.StringIO()
    cli.run_sql(con, "SELECT count(*) AS n FROM t; -- README query 4, pasted as written", out=out)
    cells = [line.strip("│ ") for line in out.getvalue().splitlines()]
    assert "n" in cells and "5" in cells
    out = io.StringIO()
    cli.run_sql(con, "SET threads = 1;\nSELECT max(x) AS biggest FROM t; -- last one is shown\n", out=out)
    assert "biggest" in out.getvalue() and "4" in out.getvalue()
    with pytest.raises(ValueError, match="no SQL statement"):
        cli.run_sql(con, "-- nothing but a comment")


def test_sql_command_reports_errors_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path))
    monkeypatch.delenv("ULTRAEDIT_WAREHOUSE", raising=False)
    assert cli.main(["sql", "SELECT 1"]) == 2
    assert "no warehouse at" in capsys.readouterr().err


def test_materialize_unknown_asset_is_a_clean_error(capsys):
    assert cli.main(["materialize", "--shard", "demo-00000", "--asset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown asset(s) 'nope'" in err and "filtered_release" in err


def test_parser_has_a_release_command():
    args = cli.build_parser().parse_args(["release"])
    assert args.func is cli.cmd_release


def test_release_on_an_empty_lake_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    assert cli.main(["release"]) == 2
    assert "no shard of metric_scores or filtered_release in the lake" in capsys.readouterr().err


def test_summary_is_not_called_a_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    assert cli.main(["summary", "--no-queries"]) == 0
    out = capsys.readouterr().out
    assert "lake summary" in out and "demo" not in out and "not materialized yet" in out


def test_backfill_dry_run_says_when_shards_are_only_busy(monkeypatch, capsys):
    from ultraedit_dagster.ops import backfill, instance

    monkeypatch.setattr(instance, "ensure_instance", lambda: object())
    monkeypatch.setattr(backfill, "failed_asset_partitions", lambda inst, defs, asset=None, **kw: {})
    monkeypatch.setattr(backfill, "busy_shards", lambda inst, defs: ["m-00000", "m-00001"])
    assert backfill.run(SimpleNamespace(asset=None, dry_run=True)) == 0
    out = capsys.readouterr().out
    assert "every shard is materialized" not in out
    assert "2 shard(s) skipped because a run of theirs is queued or in progress: m-00000, m-00001" in out


def test_progress_lines():
    from ultraedit_dagster.ops.progress import _PROGRESS, _step_stage, progress_message, rate_and_eta

    assert _step_stage("captions_captions_complete") == "captions_complete"
    assert _step_stage("source_images_source_images_unique_uids") == "source_images_unique_uids"
    assert _step_stage("edit_instructions") == "edit_instructions"

    assert rate_and_eta(10, 40, 5.0) == (2.0, 15.0)
    msg = progress_message("demo-00000", 10, 40, 5.0)
    assert msg == "progress demo-00000: rows 10/40, 2.00 rows/s, ~15 s left"
    assert _PROGRESS.match(msg)["total"] == "40"


def test_materialize_prints_progress_per_stage(tmp_path, monkeypatch, capsys):
    import importlib
    from importlib import resources

    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    import ultraedit_dagster.definitions as definitions

    importlib.reload(definitions)  # the definitions read the environment at import
    base = resources.files("ultraedit_dagster") / "demo_data"
    line = (base / "manifest.jsonl").read_text().splitlines()[0].replace('"images/', f'"{base}/images/')
    (tmp_path / "one.jsonl").write_text(line + "\n")
    assert cli.main(["add-manifest", str(tmp_path / "one.jsonl"), "--name", "prog", "--shard-size", "1"]) == 0
    capsys.readouterr()
    assert cli.main(["materialize", "--shard", "prog-00000", "--asset", "source_images"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(s.strip().startswith("[1/") and "source_images  prog-00000  started" in s for s in out), out
    assert any("source_images  prog-00000: 1 rows in" in s and "rows/s" in s for s in out), out
    assert out[-1].startswith("shard prog-00000: success in")


def test_init_materializes_the_seed_pool_once(tmp_path, monkeypatch, capsys):
    """`make ui` runs `ultraedit init`: afterwards a manifest dropped into the inbox can reach edit_instructions
    (automation never materializes the unpartitioned seed pool)."""
    import importlib

    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    import ultraedit_dagster.definitions as definitions

    importlib.reload(definitions)
    from ultraedit_dagster.text.assets import SEED_RELPATH

    assert cli.main(["init", "--no-seed-pool"]) == 0
    assert not cli._lake().has_bytes(SEED_RELPATH)
    assert cli.main(["init"]) == 0
    assert "seed pool: materialized" in capsys.readouterr().out
    assert cli._lake().has_bytes(SEED_RELPATH)
    assert cli.main(["init"]) == 0
    assert "seed pool: already in the lake" in capsys.readouterr().out


def test_summary_reports_yield_early_stops_dropped_triplets_and_gated_shards(tmp_path, capsys):
    """The demo summary says what the candidates came to and which shards the release gate left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ultraedit_dagster.core.profiles import get_profile
    from ultraedit_dagster.lake.store import Lake

    lake = Lake(str(tmp_path / "lake"))
    n_ff = get_profile().free_form.candidates_per_triplet
    n_rg = get_profile().region.candidates_per_triplet
    rows = (
        # a free-form triplet that stopped after 2 candidates, one selected
        [("ff1", "free_form", "ok", "selected"), ("ff1", "free_form", "ok", "below_clip_sim_dir")]
        # a free-form triplet that ran to the end with nothing passing
        + [("ff2", "free_form", "ok", "below_clip_sim_image")] * n_ff
        # a region triplet with too few passing: dropped
        + [("rg1", "region", "ok", "passed_triplet_dropped")]
        + [("rg1", "region", "ok", "below_dinov2_sim")] * (n_rg - 1)
        + [("rg2", "region", "failed", "generation_failed: nan")]
    )
    table = pa.table(
        {
            "candidate_uid": [f"c{i}" for i in range(len(rows))],
            "instruction_uid": [r[0] for r in rows],
            "mode": [r[1] for r in rows],
            "status": [r[2] for r in rows],
            "outcome": [r[3] for r in rows],
        }
    )
    lake.write_table("edit_candidates", "s-00000", table)
    lake.write_table("metric_scores", "s-00000", table)
    (tmp_path / "lake" / "release").mkdir()
    pq.write_table(
        pa.table(
            {
                "shard": ["s-00000", "s-00001"],
                "check": ["metric_scores_valid_ranges", "metric_scores_valid_ranges"],
                "passed": [True, False],
                "detail": ["passed", "ssim out of range"],
                "included": [True, False],
            }
        ),
        tmp_path / "lake" / "release" / "release_gate.parquet",
    )
    cost = {
        "kept_samples": 4,
        "candidates_per_kept_sample": 12.5,
        "unet_row_steps_per_kept_sample": 40.0,
        "lake_bytes_per_kept_sample": 2_500_000.0,
        "model_seconds_per_kept_sample": {"generation": 3.5, "scoring": 0.25},
    }
    (tmp_path / "lake" / "release" / "release.json").write_text(json.dumps({"cost": cost}))
    cli.print_yield(duckdb.connect(), lake)
    out = capsys.readouterr().out
    assert (
        "cost:       per kept sample (4 kept): 12.5 candidates, 40.0 UNet row-steps, 2.50 MB of lake, "
        "model seconds: generation 3.5, scoring 0.25" in out
    )
    total = len(rows)
    assert f"candidates: {total} (failed a threshold: {total - 3}, " in out
    assert "selected: 1" in out and "passed_triplet_dropped: 1" in out and "failed: 1" in out
    assert "triplets:   4, 2 stopped early, 2 region triplets kept nothing" in out
    assert "left out by the release gate:" in out and "s-00001: metric_scores_valid_ranges: ssim out of range" in out


def test_the_demo_comparison_manifest_registers_the_same_images_once(tmp_path):
    """`make demo` registers its first captions again under the other recipe, from a copy of the embedded manifest
    with absolute image paths; registering it on a second `make demo` adds nothing."""
    from importlib import resources as importlib_resources

    from ultraedit_dagster.lake.store import Lake
    from ultraedit_dagster.sources.manifests import manifest_recipe, register_manifest

    embedded = importlib_resources.files("ultraedit_dagster") / "demo_data" / "manifest.jsonl"
    text = cli.demo_subset(str(embedded), cli.DEMO_COMPARISON_IMAGES)
    records = [json.loads(line) for line in text.splitlines()]
    originals = [json.loads(line) for line in embedded.read_text().splitlines()][: cli.DEMO_COMPARISON_IMAGES]
    assert [r["caption"] for r in records] == [r["caption"] for r in originals]
    assert all(r["image"].startswith("/") and (tmp_path / r["image"]).is_file() for r in records)
    subset = tmp_path / "demo-ip2p.jsonl"
    subset.write_text(text)
    lake = Lake(str(tmp_path / "lake"))
    first = register_manifest(lake, str(subset), name="demo-ip2p", recipe="ip2p")
    again = register_manifest(lake, str(subset), name="demo-ip2p", recipe="ip2p", existing_keys=set(first.shard_keys))
    assert first.shard_keys == again.shard_keys == ["demo-ip2p-00000"] and not again.new_shard_keys
    assert manifest_recipe(lake, "demo-ip2p-00000") == "ip2p"
