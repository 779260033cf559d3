"""Manifests and names against hostile and clumsy input (issue 15 items 5, 9, 10, 11, 15): atomic registration per
name (local and S3), clear errors instead of tracebacks, valid JSONL / CSV accepted and nothing silently cut."""

import errno
import json
import threading

import pytest

from ultraedit_dagster.core.partitions import InvalidShardKey, validate_manifest_name, validate_shard_key
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.sources.manifests import (
    ManifestError,
    default_manifest_name,
    read_manifest,
    read_shard_manifest,
    register_manifest,
)


def _jsonl(path, rows, **dump):
    path.write_text("\n".join(json.dumps(r, **dump) for r in rows) + "\n", encoding="utf-8")
    return str(path)


# -- item 10: valid input accepted, nothing cut silently ------------------------------------------------------------


def test_jsonl_with_unicode_line_separators_inside_strings_is_accepted(lake, tmp_path):
    caption = "line\u2028separator, next\u0085line, para\u2029graph \x1c\x1d\x1e and\u000bvt\u000cff"
    path = _jsonl(tmp_path / "m.jsonl", [{"image": "/a.png", "caption": caption}], ensure_ascii=False)
    rows = read_manifest(path)
    assert len(rows) == 1 and rows[0]["caption"] == caption
    key = register_manifest(lake, path, name="seps").shard_keys[0]
    assert read_shard_manifest(lake, key).column("caption").to_pylist() == [caption]
    # Windows line ends still work
    (tmp_path / "crlf.jsonl").write_bytes(
        b'{"image": "/a.png", "caption": "x"}\r\n{"image": "/b.png", "caption": "y"}\r\n'
    )
    assert [r["caption"] for r in read_manifest(str(tmp_path / "crlf.jsonl"))] == ["x", "y"]


def test_csv_row_with_extra_or_missing_fields_is_refused_with_the_row(tmp_path):
    (tmp_path / "extra.csv").write_text("image,caption\n/a.png,a cat\n/b.png,a dog, running fast\n")
    with pytest.raises(ManifestError, match=r"line 3: 3 fields but the header has 2.*a dog, running fast"):
        read_manifest(str(tmp_path / "extra.csv"))
    (tmp_path / "short.csv").write_text("image,caption,id\n/a.png,a cat\n")
    with pytest.raises(ManifestError, match="line 2: 2 fields but the header has 3"):
        read_manifest(str(tmp_path / "short.csv"))
    (tmp_path / "quoted.csv").write_text('image,caption\n/b.png,"a dog, running fast"\n/c.png,"two\nlines"\n')
    assert [r["caption"] for r in read_manifest(str(tmp_path / "quoted.csv"))] == ["a dog, running fast", "two\nlines"]


# -- item 9: errors, not tracebacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"image": "/a.png", "caption": "bad \\ud800 surrogate"}', "lone surrogate"),
        ('{"image": "/a.png", "caption": "x", "id": "\\udfff"}', "lone surrogate"),
        ('{"image": "/a\\ud800.png", "caption": "x"}', "lone surrogate"),
        ('{"image": "/a.png", "caption": "x", "source": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"image": "/a.png", "caption": "x", "id": true}', "`id` must be a string or integer"),
    ],
)
def test_hostile_jsonl_is_refused_with_a_reason(lake, tmp_path, line, fragment):
    (tmp_path / "m.jsonl").write_text(line + "\n")
    with pytest.raises(ManifestError, match=fragment):
        register_manifest(lake, str(tmp_path / "m.jsonl"), name="hostile")


def test_nul_byte_in_a_relative_path_is_kept_for_a_failed_row(lake, tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"image": "imgs/a\u0000b.png", "caption": "x"}])
    key = register_manifest(lake, path, name="nul").shard_keys[0]
    [image] = read_shard_manifest(lake, key).column("image").to_pylist()
    assert image == str(tmp_path / "imgs" / "a\x00b.png")  # source_images fails it with "NUL byte"


def _cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ULTRAEDIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster"))
    monkeypatch.setenv("ULTRAEDIT_LAKE", str(tmp_path / "home" / "lake"))


def test_cli_add_manifest_prints_errors_not_tracebacks(tmp_path, monkeypatch, capsys):
    from ultraedit_dagster import cli

    _cli_env(tmp_path, monkeypatch)
    cases = {
        "surrogate.jsonl": '{"image": "/a.png", "caption": "\\ud800"}\n',
        "deep.jsonl": '{"image": "/a.png", "caption": "x", "source": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
        "extra.csv": "image,caption\n/a.png,a, b\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert cli.main(["add-manifest", str(tmp_path / name), "--name", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
    for bad_name in ("ok\n", "x\u0663", "Bad/Name"):
        assert cli.main(["add-manifest", str(tmp_path / "extra.csv"), "--name", bad_name]) == 2
        assert "error: manifest name" in capsys.readouterr().err


def test_cli_add_manifest_on_a_full_disk_says_so_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from ultraedit_dagster import cli

    _cli_env(tmp_path, monkeypatch)
    path = _jsonl(tmp_path / "m.jsonl", [{"image": "/a.png", "caption": "x"}])
    real_write = Path.write_bytes

    def full(self, data):
        real_write(self, data[: len(data) // 2])  # part of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    assert cli.main(["add-manifest", path, "--name", "full"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "home" / "lake").rglob("*.tmp")]
    # the space is back: the same registration completes
    _cli_env(tmp_path, monkeypatch)
    assert cli.main(["add-manifest", path, "--name", "full"]) == 0


# -- item 11: names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["demo-00000\n", "demo\n-00000", "demo-0000\u0663", "demo-\uff10\uff10\uff10\uff10\uff10"]
)
def test_shard_keys_with_newlines_or_non_ascii_digits_are_refused(key):
    with pytest.raises(InvalidShardKey):
        validate_shard_key(key)


@pytest.mark.parametrize("name", ["coco\n", "co\u0663co", "\u0661\u0662"])
def test_manifest_names_with_newlines_or_non_ascii_digits_are_refused(name):
    with pytest.raises(InvalidShardKey):
        validate_manifest_name(name)


def test_default_names_are_ascii():
    assert default_manifest_name("/x/data\u0663set.jsonl") == "data-set"
    assert default_manifest_name("/x/\u0661\u0662.jsonl") == "manifest"


# -- item 5 (and 15): registration is atomic per name ---------------------------------------------------------------


def _race(lake_factory, paths, name):
    barrier = threading.Barrier(len(paths))
    outcomes: list = [None] * len(paths)

    def one(i):
        lake = lake_factory()
        barrier.wait()
        try:
            outcomes[i] = register_manifest(lake, paths[i], name=name, shard_size=2)
        except ManifestError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _check_race(lake, outcomes, paths, name):
    won = [i for i, o in enumerate(outcomes) if not isinstance(o, Exception)]
    assert len(won) == 1, outcomes  # exactly one accepted
    assert all("a different manifest is already registered" in str(o) for o in outcomes if isinstance(o, Exception))
    winner = read_manifest(paths[won[0]])
    got = [c for k in outcomes[won[0]].shard_keys for c in read_shard_manifest(lake, k).column("caption").to_pylist()]
    assert got == [r["caption"] for r in winner]  # the lake holds the winner's data, not a mix


def _contenders(tmp_path, n=4):
    return [
        _jsonl(tmp_path / f"m{j}.jsonl", [{"image": f"/{j}/{i}.png", "caption": f"m{j} c{i}"} for i in range(5)])
        for j in range(n)
    ]


def test_concurrent_registrations_of_one_name_local(tmp_path):
    paths = _contenders(tmp_path)
    for attempt in range(12):
        lake = Lake(str(tmp_path / "lake"))
        _check_race(lake, _race(lambda: Lake(str(tmp_path / "lake")), paths, f"race{attempt}"), paths, f"race{attempt}")


def test_concurrent_registrations_of_one_name_s3(tmp_path, moto_server):
    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    paths = _contenders(tmp_path)
    for attempt in range(3):
        outcomes = _race(lambda: Lake("s3://lake/root", s3_client=moto_server.client()), paths, f"race{attempt}")
        _check_race(Lake("s3://lake/root", s3_client=client), outcomes, paths, f"race{attempt}")
    # a conditional create reports an existing object
    lake = Lake("s3://lake/root", s3_client=client)
    assert lake.create_bytes("x/once.json", b"1") is True
    assert lake.create_bytes("x/once.json", b"2") is False
    assert lake.read_bytes("x/once.json") == b"1"


def test_same_data_twice_at_once_and_an_interrupted_registration(lake, tmp_path, monkeypatch):
    [path] = _contenders(tmp_path, 1)
    outcomes = _race(lambda: lake, [path, path, path], "same")
    assert all(not isinstance(o, Exception) for o in outcomes)
    assert len({tuple(o.shard_keys) for o in outcomes}) == 1

    # killed after claiming the name but before the shards were written: the same data registers again
    real = Lake.write_bytes

    def crash(self, relpath, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(Lake, "write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        register_manifest(lake, path, name="crashed", shard_size=2)
    monkeypatch.setattr(Lake, "write_bytes", real)
    reg = register_manifest(lake, path, name="crashed", shard_size=2)
    assert len(reg.shard_keys) == 3 and read_shard_manifest(lake, reg.shard_keys[-1]).num_rows == 1
    assert json.loads(lake.read_bytes("manifests/crashed/_registration.json"))["state"] == "complete"


def test_another_shard_size_gets_its_own_message(lake, tmp_path):
    [path] = _contenders(tmp_path, 1)
    register_manifest(lake, path, name="sized", shard_size=2)
    with pytest.raises(ManifestError, match=r"already registered as 'sized' with shard size 2 \(not 3\)"):
        register_manifest(lake, path, name="sized", shard_size=3)
