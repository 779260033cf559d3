"""The threshold plots: figures with the expected series, PNGs that decode, curves that reproduce the release, the
asset's bounded UI metadata, and the release card's figures inlined for the UI."""

import base64
import io
import re

import dagster as dg
import duckdb
import numpy as np
import pytest
from PIL import Image

from tests.analysis.scored_lake import write_scored_lake
from ultraedit_dagster.analysis import plots
from ultraedit_dagster.core.profiles import get_profile
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.scoring.metrics import METRIC_COLUMNS, THRESHOLD_METRICS

DATA_URL = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    lake = Lake(str(tmp_path_factory.mktemp("plots") / "lake"))
    write_scored_lake(lake)
    con = duckdb.connect()
    relation = f"read_parquet('{lake.root}/metric_scores/*/*.parquet', union_by_name = true)"
    return lake, con, relation


def _released(con, lake) -> dict[str, int]:
    sql = f"select split, count(*) from read_parquet('{lake.root}/filtered_release/*/*.parquet') group by 1"
    return dict(con.execute(sql).fetchall())


def test_curves_at_the_profiles_thresholds_equal_what_the_release_kept(scored):
    lake, con, relation = scored
    profile = get_profile("tiny")
    released = _released(con, lake)
    for mode in plots.MODES:
        data = plots.load_mode(con, relation, profile, mode)
        t = plots.thresholds_of(profile, mode)
        for metric in THRESHOLD_METRICS:
            curve = dict(data.curves[metric])
            assert curve[float(getattr(t, metric))] == released[mode], (mode, metric)
            # loosening never keeps fewer in free-form (min(passing, k) is monotone); the grid is sorted
            xs = [x for x, _ in data.curves[metric]]
            assert xs == sorted(xs)
            if mode == "free_form":
                kept = [k for _, k in data.curves[metric]]
                assert all(a >= b for a, b in zip(kept, kept[1:], strict=False))
        # every scored candidate is in the histograms, NaN ones counted (not drawn)
        n = con.execute(f"select count(*) from {relation} where status = 'ok' and mode = ?", [mode]).fetchone()[0]
        assert all(v.size == n for v in data.values.values())
        assert np.isnan(data.values["clip_sim_dir"]).sum() > 0


def test_figures_have_the_expected_series(scored):
    _, con, relation = scored
    profile = get_profile("tiny")
    data = plots.load_mode(con, relation, profile, "region")
    fig = plots.histogram_figure(data, profile)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title().split(" ")[0] for ax in panels] == list(METRIC_COLUMNS)
    for ax, metric in zip(panels, METRIC_COLUMNS, strict=True):
        assert len(ax.containers) == 1 and len(ax.patches) == 40  # one histogram of 40 bins
        lines = [ln for ln in ax.get_lines() if ln.get_gid() == "threshold"]
        expected = 1 if metric in THRESHOLD_METRICS else 2 if metric == "l1" else 0
        assert len(lines) == expected, metric
        if metric in THRESHOLD_METRICS:
            assert lines[0].get_xdata()[0] == getattr(profile.region_thresholds, metric)
    assert "10 NaN/inf not shown" in panels[2].get_title() or "NaN/inf not shown" in panels[2].get_title()
    fig = plots.tradeoff_figure(data, profile)
    assert len(fig.axes) == len(THRESHOLD_METRICS)
    for ax, metric in zip(fig.axes, THRESHOLD_METRICS, strict=True):
        gids = sorted(ln.get_gid() for ln in ax.get_lines())
        assert gids == ["kept", "target", "threshold"], metric
        kept = next(ln for ln in ax.get_lines() if ln.get_gid() == "kept")
        assert len(kept.get_xdata()) == len(data.curves[metric]) > 10
        assert ax.get_xlabel() == f"min {metric}"


def test_pngs_decode_and_the_ui_copies_stay_within_the_budget(scored):
    _, con, relation = scored
    result = plots.threshold_plots(con, relation, get_profile("tiny"))
    names = {f"{m}_{k}.png" for m in plots.MODES for k in ("histograms", "tradeoff")}
    assert set(result.pngs) == set(result.thumbnails) == names
    for name in names:
        full = Image.open(io.BytesIO(result.pngs[name]))
        small = Image.open(io.BytesIO(result.thumbnails[name]))
        assert full.format == small.format == "PNG" and full.width > 1000 and 0 < small.width < full.width
        # not a blank canvas: a chart has ink
        assert len(set(np.asarray(small.convert("L")).ravel().tolist())) > 5
    md = plots.embedded_markdown(result.thumbnails)
    assert len(DATA_URL.findall(md)) == 4 and len(md) < plots.MAX_EMBEDDED_BYTES * 4 / 3 + 1000
    # past the budget an image is named, not embedded
    tight = plots.embedded_markdown(result.thumbnails, max_bytes=len(result.thumbnails["free_form_histograms.png"]))
    assert len(DATA_URL.findall(tight)) == 1 and tight.count("not embedded here") == 3


def test_threshold_plots_asset_writes_the_lake_and_shows_the_plots(scored):
    lake, con, _ = scored
    from ultraedit_dagster.analysis.assets import threshold_plots

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [threshold_plots],
            instance=inst,
            resources={"lake": LakeResource(root=lake.root), "pipeline": PipelineResource(profile_name="tiny")},
            selection=[threshold_plots],
        )
    assert result.success
    [mat] = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    assert meta["kept_at_profile_thresholds"].data == _released(con, lake)
    embedded = DATA_URL.findall(meta["plots"].value)
    assert len(embedded) == 4
    for _, b64 in embedded:
        assert Image.open(io.BytesIO(base64.b64decode(b64))).width > 0
    for name, path in meta["files"].data.items():
        assert Image.open(path).format == "PNG", name


def test_card_figures_are_inlined_for_the_ui(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "figures").mkdir()
    for name in ("clip_sim_dir", "ssim"):
        fig, ax = plt.subplots(figsize=(4, 2.6), dpi=80)
        ax.hist(np.random.default_rng(0).normal(size=200), bins=20)
        fig.savefig(tmp_path / "figures" / f"{name}.png")
        plt.close(fig)
    card = "---\nconfigs: []\n---\n# Release\n\n## Histograms\n\n![clip_sim_dir](figures/clip_sim_dir.png)\n"
    card += "![ssim](figures/ssim.png)\n![gone](figures/gone.png)\n\n## Files\n\n" + "x" * 30_000
    md = plots.card_markdown_for_ui(card, tmp_path)
    assert "configs:" not in md and "](figures/" not in md
    shown = DATA_URL.findall(md)
    assert [alt for alt, _ in shown] == ["clip_sim_dir", "ssim"]
    assert md.index("## Histograms") < md.index("data:image/png") < md.index("## Files")  # in place
    assert "gone: figures/gone.png is missing" in md
    assert "card cut here for the UI" in md and len(DATA_URL.sub("", md)) < plots.CARD_TEXT_LIMIT + 500
    for _, b64 in shown:
        assert Image.open(io.BytesIO(base64.b64decode(b64))).width > 0


def test_a_mode_without_scored_candidates_still_plots(tmp_path):
    """A lake with free-form candidates only (no region triplet yet): the region figures are drawn empty with n=0,
    nothing raises."""
    import pyarrow as pa

    from tests.analysis.scored_lake import scored_rows
    from ultraedit_dagster.scoring.rows import METRIC_SCORES_SCHEMA

    lake = Lake(str(tmp_path / "lake"))
    profile = get_profile("tiny")
    rows = [r for r in scored_rows("demo-00000", 10, seed=5, profile=profile) if r["mode"] == "free_form"]
    lake.write_table("metric_scores", "demo-00000", pa.Table.from_pylist(rows, schema=METRIC_SCORES_SCHEMA))
    con = duckdb.connect()
    relation = f"read_parquet('{lake.root}/metric_scores/*/*.parquet', union_by_name = true)"
    result = plots.threshold_plots(con, relation, profile)
    assert result.scored["region"] == 0 and result.kept_at_profile["region"] == 0
    assert result.scored["free_form"] > 0
    assert all(Image.open(io.BytesIO(png)).width > 0 for png in result.pngs.values())


def test_threshold_plots_over_an_s3_lake(moto_server):
    """The production setup: metric_scores on S3 (moto's server on 127.0.0.1), read by DuckDB with httpfs from its
    package; the plots go back to the lake on S3 and match the release there."""
    from ultraedit_dagster.analysis.assets import threshold_plots
    from ultraedit_dagster.lake.resources import S3Connection

    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    s3 = S3Connection(
        endpoint_url=moto_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    resource = LakeResource(root="s3://lake/prod", s3=s3)
    write_scored_lake(resource.lake)
    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [threshold_plots],
            instance=inst,
            resources={"lake": resource, "pipeline": PipelineResource(profile_name="tiny")},
        )
    assert result.success
    [mat] = result.get_asset_materialization_events()
    meta = mat.materialization.metadata
    released: dict[str, int] = {}
    for shard in resource.lake.list_shards("filtered_release"):
        for split in resource.lake.read_table("filtered_release", shard, columns=["split"])["split"].to_pylist():
            released[split] = released.get(split, 0) + 1
    assert meta["kept_at_profile_thresholds"].data == released
    assert sorted(meta["files"].data.values())[0].startswith("s3://lake/prod/threshold_plots/")
    png = client.get_object(Bucket="lake", Key="prod/threshold_plots/region_tradeoff.png")["Body"].read()
    assert Image.open(io.BytesIO(png)).format == "PNG"
