"""The `shards` partitions and the rules for shard keys.

A shard key is `<manifest-name>-<nnnnn>`: lowercase `[a-z0-9-]`, at most 64 characters. Keys become folder names in
the lake (`shard=<key>`), so anything else is refused before it can reach a path.
"""

from __future__ import annotations

import re

import dagster as dg

SHARDS_PARTITIONS_NAME = "shards"
MAX_SHARD_KEY_LENGTH = 64
SHARD_INDEX_DIGITS = 5

shards = dg.DynamicPartitionsDefinition(name=SHARDS_PARTITIONS_NAME)

_MANIFEST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_SHARD_KEY = re.compile(r"^([a-z0-9](?:[a-z0-9-]*[a-z0-9])?)-(\d{5})$")


class InvalidShardKey(ValueError):
    """A shard key or manifest name that breaks the naming rules."""


def validate_manifest_name(name: str) -> str:
    max_name = MAX_SHARD_KEY_LENGTH - SHARD_INDEX_DIGITS - 1
    if not isinstance(name, str) or not name:
        raise InvalidShardKey("manifest name is empty")
    if len(name) > max_name:
        raise InvalidShardKey(f"manifest name {name[:80]!r} is longer than {max_name} characters")
    if not _MANIFEST_NAME.match(name):
        raise InvalidShardKey(
            f"manifest name {name[:80]!r} must be lowercase letters, digits and '-' "
            "(no leading/trailing '-', no '/', '.', '..' or spaces)"
        )
    return name


def shard_key(manifest_name: str, index: int) -> str:
    validate_manifest_name(manifest_name)
    if not 0 <= index < 10**SHARD_INDEX_DIGITS:
        raise InvalidShardKey(f"shard index {index} out of range 0..{10**SHARD_INDEX_DIGITS - 1}")
    return f"{manifest_name}-{index:0{SHARD_INDEX_DIGITS}d}"


def validate_shard_key(key: str) -> str:
    """Return `key` if it is a valid shard key, else raise InvalidShardKey saying why."""
    if not isinstance(key, str) or not key:
        raise InvalidShardKey("shard key is empty")
    if len(key) > MAX_SHARD_KEY_LENGTH:
        raise InvalidShardKey(f"shard key {key[:80]!r}... is longer than {MAX_SHARD_KEY_LENGTH} characters")
    if not _SHARD_KEY.match(key):
        raise InvalidShardKey(
            f"shard key {key!r} must look like '<manifest-name>-<nnnnn>' using only lowercase [a-z0-9-]"
        )
    return key


def manifest_name_of(key: str) -> str:
    m = _SHARD_KEY.match(validate_shard_key(key))
    assert m is not None
    return m.group(1)
