"""Shard key and manifest name rules."""

import pytest

from ultraedit_dagster.core.partitions import InvalidShardKey, shard_key, validate_manifest_name, validate_shard_key


@pytest.mark.parametrize("key", ["demo-00000", "coco-train-2017-00042", "a-99999"])
def test_valid_shard_keys(key):
    assert validate_shard_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "Demo-00000",
        "demo_00000",
        "demo-0000",
        "../etc-00000",
        "a/b-00000",
        "/abs-00000",
        "demo-00000/..",
        "demo -00000",
        "-demo-00000",
        "x" * 60 + "-00000",
        "démo-00000",
    ],
)
def test_invalid_shard_keys_are_refused(key):
    with pytest.raises(InvalidShardKey):
        validate_shard_key(key)


def test_shard_key_format_and_limits():
    assert shard_key("coco", 7) == "coco-00007"
    with pytest.raises(InvalidShardKey, match="longer"):
        validate_manifest_name("x" * 59)
    with pytest.raises(InvalidShardKey, match="lowercase"):
        validate_manifest_name("../up")
    with pytest.raises(InvalidShardKey, match="out of range"):
        shard_key("coco", 100000)
