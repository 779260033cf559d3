"""Manifest registration (idempotency, bad manifests) and `ultraedit add-manifest`."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ultraedit_dagster.sources.manifests import ManifestError, read_shard_manifest, register_manifest


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _rows(n, tmp_path):
    return [{"id": f"r{i}", "image": str(tmp_path / f"img{i}.png"), "caption": f"photo number {i}"} for i in range(n)]


def test_register_splits_into_shards_and_is_idempotent(lake, tmp_path):
    path = _write_jsonl(tmp_path / "set.jsonl", _rows(10, tmp_path))
    first = register_manifest(lake, path, name="set", shard_size=4)
    assert first.shard_keys == ["set-00000", "set-00001", "set-00002"]
    assert first.new_shard_keys == first.shard_keys
    sizes = [read_shard_manifest(lake, k).num_rows for k in first.shard_keys]
    assert sizes == [4, 4, 2]
    uids = [u for k in first.shard_keys for u in read_shard_manifest(lake, k).column("uid").to_pylist()]
    assert len(set(uids)) == 10

    second = register_manifest(lake, path, name="set", shard_size=4, existing_keys=set(first.shard_keys))
    assert second.shard_keys == first.shard_keys
    assert second.new_shard_keys == []
    # the shard manifests were not rewritten with different uids
    assert [u for k in second.shard_keys for u in read_shard_manifest(lake, k).column("uid").to_pylist()] == uids


def test_same_name_with_different_content_is_refused(lake, tmp_path):
    register_manifest(lake, _write_jsonl(tmp_path / "a.jsonl", _rows(3, tmp_path)), name="set", shard_size=2)
    with pytest.raises(ManifestError, match="already registered"):
        register_manifest(lake, _write_jsonl(tmp_path / "b.jsonl", _rows(4, tmp_path)), name="set", shard_size=2)


def test_csv_and_parquet_manifests_and_relative_paths(lake, tmp_path):
    (tmp_path / "csv.csv").write_text("image,caption,license\nimgs/a.png,a red car,CC0\nimgs/b.png,a blue bus,CC0\n")
    reg = register_manifest(lake, str(tmp_path / "csv.csv"), shard_size=10)
    assert reg.name == "csv"
    table = read_shard_manifest(lake, reg.shard_keys[0])
    assert table.column("image").to_pylist() == [str(tmp_path / "imgs/a.png"), str(tmp_path / "imgs/b.png")]
    assert table.column("license").to_pylist() == ["CC0", "CC0"]
    pq.write_table(pa.table({"image": ["s3://b/x.jpg"], "caption": ["x"], "id": ["1"]}), tmp_path / "pq.parquet")
    reg = register_manifest(lake, str(tmp_path / "pq.parquet"), name="pq", shard_size=10)
    assert read_shard_manifest(lake, reg.shard_keys[0]).column("image").to_pylist() == ["s3://b/x.jpg"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"caption": "no image"}\n', "missing required column\\(s\\) image"),
        ('{"image": "a.png"}\n', "missing required column\\(s\\) caption"),
        (
            '{"id": 1, "image": "a.png", "caption": "x"}\n{"id": 1, "image": "b.png", "caption": "y"}\n',
            "duplicate id 1 ",
        ),
        ('{"image": "a.png", "caption": "x"}\n{"image": "a.png", "caption": "x"}\n', "duplicate image\\+caption"),
        ('{"image": "a.png", "caption": "x"}\n{"image": "b.png", "caption": \n', "line 2: malformed JSON"),
        ('{"image": 5, "caption": "x"}\n', "`image` must be a non-empty string"),
        ('{"image": "a.png", "caption": ["x"]}\n', "`caption` must be a string"),
        ('["a.png", "x"]\n', "expected a JSON object"),
        ("", "has no rows"),
    ],
)
def test_bad_manifests_are_refused_with_the_reason(lake, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ManifestError, match=message):
        register_manifest(lake, str(path), shard_size=10)


def test_unreadable_and_non_utf8_manifests(lake, tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        register_manifest(lake, str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"image": "a.png", "caption": "caf\xe9"}\n')
    with pytest.raises(ManifestError, match="not valid UTF-8"):
        register_manifest(lake, str(bad))
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="not a readable Parquet"):
        register_manifest(lake, str(garbage))
    with pytest.raises(ManifestError, match="unsupported format"):
        (tmp_path / "m.txt").write_text("x")
        register_manifest(lake, str(tmp_path / "m.txt"))


def test_cli_add_manifest_registers_partitions_once(tmp_path, monkeypatch, capsys):
    import dagster as dg

    from ultraedit_dagster import cli

    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.setenv("ULTRAEDIT_LAKE", str(tmp_path / "home" / "lake"))
    import importlib

    import ultraedit_dagster.definitions as definitions

    importlib.reload(definitions)
    path = _write_jsonl(tmp_path / "cli.jsonl", _rows(5, tmp_path))
    assert cli.main(["add-manifest", path, "--name", "cli", "--shard-size", "2"]) == 0
    assert "3 new partition(s)" in capsys.readouterr().out
    assert cli.main(["add-manifest", path, "--name", "cli", "--shard-size", "2"]) == 0
    assert "0 new partition(s)" in capsys.readouterr().out
    inst = dg.DagsterInstance.get()
    assert inst.get_dynamic_partitions("shards") == ["cli-00000", "cli-00001", "cli-00002"]
    assert cli.main(["add-manifest", path, "--name", "Bad/Name"]) == 2
    assert "lowercase" in capsys.readouterr().err
    inst.dispose()
    monkeypatch.undo()
    importlib.reload(definitions)
