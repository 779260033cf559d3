"""`ultraedit backfill --failed` end to end through the CLI: only the shard that failed is targeted."""

import importlib

import dagster as dg


def test_cli_backfill_targets_only_the_failed_shard(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("ULTRAEDIT_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    import ultraedit_dagster.definitions as definitions

    importlib.reload(definitions)
    from ultraedit_dagster import cli
    from ultraedit_dagster.sources.manifests import shard_manifest_relpath

    manifest = tmp_path / "m.jsonl"
    from importlib import resources

    demo = (resources.files("ultraedit_dagster") / "demo_data" / "manifest.jsonl").read_text().splitlines()[:4]
    base = resources.files("ultraedit_dagster") / "demo_data"
    manifest.write_text("\n".join(line.replace('"images/', f'"{base}/images/') for line in demo) + "\n")
    assert cli.main(["add-manifest", str(manifest), "--name", "bf", "--shard-size", "2"]) == 0
    # shard 0 succeeds; shard 1's manifest is corrupted so its source_images run fails
    assert cli.main(["materialize", "--shard", "bf-00000", "--asset", "source_images"]) == 0
    lake = cli._lake()
    lake.write_bytes(shard_manifest_relpath("bf-00001"), b"PAR1 corrupt")
    assert cli.main(["materialize", "--shard", "bf-00001", "--asset", "source_images"]) == 1
    capsys.readouterr()

    assert cli.main(["backfill", "--failed", "--asset", "source_images", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bf-00001: source_images" in out and "bf-00000" not in out
    assert cli.main(["backfill", "--failed", "--asset", "source_images"]) == 0
    assert "backfill" in capsys.readouterr().out
    instance = dg.DagsterInstance.get()
    (backfill,) = instance.get_backfills()
    targeted = backfill.asset_backfill_data.target_subset
    parts = {(key.to_user_string(), pk) for key, pk in targeted.iterate_asset_partitions()}
    assert {pk for _, pk in parts} == {"bf-00001"} and ("source_images", "bf-00001") in parts
    assert cli.main(["backfill", "--failed", "--asset", "not_an_asset"]) == 2
    instance.dispose()
    monkeypatch.undo()
    importlib.reload(definitions)


def test_cli_backfill_picks_up_shards_with_rows_marked_retryable(tmp_path, monkeypatch, capsys, moto_server):
    """Issue 13 / 15 item 8: an S3 outage while `source_images` runs leaves a shard that *materialized* but holds
    rows marked retryable; `ultraedit backfill --failed` redoes that shard (and only that one) from the stage that
    marked its rows, once the store is back."""
    import json
    from importlib import resources

    home = tmp_path / "home"
    monkeypatch.setenv("ULTRAEDIT_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv("ULTRAEDIT_LAKE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: ours are counted
    import ultraedit_dagster.definitions as definitions

    importlib.reload(definitions)
    from ultraedit_dagster import cli
    from ultraedit_dagster.sources.rows import shards_with_retryable_rows

    s3 = moto_server.client()
    s3.create_bucket(Bucket="imgs")
    base = resources.files("ultraedit_dagster") / "demo_data"
    demo = [json.loads(line) for line in (base / "manifest.jsonl").read_text().splitlines()[:4]]
    for row in demo:
        s3.put_object(Bucket="imgs", Key=row["image"], Body=(base / row["image"]).read_bytes())
        row["image"] = f"s3://imgs/{row['image']}"
    manifest = tmp_path / "rt.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in demo))
    assert cli.main(["add-manifest", str(manifest), "--name", "rt", "--shard-size", "2"]) == 0
    assert cli.main(["materialize", "--shard", "rt-00000", "--asset", "source_images"]) == 0
    moto_server.stop()  # the image store goes down: the step still succeeds, its rows say why they failed
    assert cli.main(["materialize", "--shard", "rt-00001", "--asset", "source_images"]) == 0
    lake = cli._lake()
    assert shards_with_retryable_rows(lake) == ["rt-00001"]
    capsys.readouterr()

    assert cli.main(["backfill", "--failed", "--asset", "source_images", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "rt-00001: source_images, captions" in out and "(rows marked retryable)" in out, out
    assert "rt-00000" not in out  # its source_images rows are fine
    assert cli.main(["backfill", "--failed", "--dry-run"]) == 0
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines() if ": " in line}
    assert lines["rt-00001"].split(": ", 1)[1].startswith("source_images, captions")  # redone from the marked stage
    assert not lines["rt-00000"].split(": ", 1)[1].startswith("source_images")  # only its missing stages

    assert cli.main(["backfill", "--failed", "--asset", "source_images"]) == 0
    instance = dg.DagsterInstance.get()
    (backfill,) = instance.get_backfills()
    parts = {
        (key.to_user_string(), pk) for key, pk in backfill.asset_backfill_data.target_subset.iterate_asset_partitions()
    }
    assert {pk for _, pk in parts} == {"rt-00001"} and ("source_images", "rt-00001") in parts
    instance.dispose()
    monkeypatch.undo()
    importlib.reload(definitions)
