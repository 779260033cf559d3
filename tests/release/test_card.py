"""The dataset card and the static HTML gallery (opened in headless Chromium: images load, screenshot made)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import require_system_package
from tests.quality_fixtures import write_synthetic_scores_and_release
from ultraedit_dagster.core.profiles import TINY, ULTRAEDIT
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.release.card import build_release, sha256_file

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    lake = Lake(str(root / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=3, seed=0)
    write_synthetic_scores_and_release(lake, "demo-00001", n_triplets=4, seed=1)
    out = root / "lake" / "release"  # where release_card publishes it: beside the shard files it references
    thresholds = {"free_form": ULTRAEDIT.free_form_thresholds, "region": ULTRAEDIT.region_thresholds}
    summary = build_release(lake, out, thresholds=thresholds, gallery_size=6, profile_note="synthetic test data")
    return out, summary, lake


def test_card_counts_thresholds_and_files(release):
    out, summary, lake = release
    total = sum(lake.num_rows("filtered_release", s) for s in ("demo-00000", "demo-00001"))
    assert summary.rows == total > 0
    assert sum(f["rows"] for f in summary.files) == total
    # the data files are the shards' filtered_release files, referenced from the card, never copied
    assert [f["path"] for f in summary.files] == [
        "../filtered_release/shard=demo-00000/data.parquet",
        "../filtered_release/shard=demo-00001/data.parquet",
    ]
    assert not (out / "data").exists()
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "    - ../filtered_release/shard=demo-00001/data.parquet\n" in card
    assert "| clip_sim_image | ≥ 0.75 | ≥ 0.7 |" in card  # the thresholds of each split
    for f in summary.files:
        by = f["rows_by_split"]
        assert f"| {f['path']} | {by.get('free_form', 0)} | {by.get('region', 0)} |" in card and f["sha256"] in card
        assert f["sha256"] == sha256_file(out / f["path"]) and f["bytes"] == (out / f["path"]).stat().st_size
    assert "| CC0 |" in card and "transformers:tiny/random-seed0" in card
    assert summary.by_split["free_form"] + summary.by_split["region"] == total
    assert summary.duplicate_idx == 0


def test_gallery_escapes_text_and_links_existing_images(release):
    out, summary, _ = release
    html = (out / "gallery" / "index.html").read_text()
    assert "edit &lt;0&gt; &amp; go" in html and "<0>" not in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 2 * summary.gallery_rows
    assert all((out / "gallery" / s).is_file() for s in srcs)
    assert "no mask (free-form)" in html


def test_gallery_opens_in_headless_chromium(release, tmp_path):
    require_system_package(CHROMIUM, "chromium")
    out, summary, _ = release
    page = (out / "gallery" / "index.html").as_uri()
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--allow-file-access-from-files",
    ]
    dom = subprocess.run(
        common + [f"--user-data-dir={tmp_path / 'profile1'}", "--virtual-time-budget=5000", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    total = int(re.search(r'data-images-total="(\d+)"', dom.stdout).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom.stdout).group(1))
    assert total >= 2 * summary.gallery_rows and loaded == total
    shot = tmp_path / "gallery.png"
    run = subprocess.run(
        common + [f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,900", f"--screenshot={shot}", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        assert len(set(im.convert("RGB").resize((64, 64)).getdata())) > 20  # not a blank page


def test_gallery_detects_a_broken_image(release, tmp_path):
    """The page's own load probe reports missing images (so the Chromium test above can fail)."""
    require_system_package(CHROMIUM, "chromium")
    out, _, _ = release
    copy = tmp_path / "release"
    shutil.copytree(out / "gallery", copy)
    victim = sorted((copy / "images").iterdir())[0]
    victim.unlink()
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'p'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (copy / "index.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    total = int(re.search(r'data-images-total="(\d+)"', dom.stdout).group(1))
    loaded = int(re.search(r'data-images-loaded="(\d+)"', dom.stdout).group(1))
    assert loaded == total - 1


def test_tiny_profile_card_says_the_weights_are_random(tmp_path):
    """The card of a tiny-profile release says what its thresholds are: calibrated to random weights."""
    lake = Lake(str(tmp_path / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=2)
    thresholds = {"free_form": TINY.free_form_thresholds, "region": TINY.region_thresholds}
    build_release(lake, tmp_path / "rel", thresholds=thresholds, profile_note=TINY.free_form_thresholds.note)
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "tiny profile: random weights, thresholds calibrated" in card
