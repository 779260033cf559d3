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
