"""What the Dagster definitions need from dbt_quality's `target/manifest.json` (the quality models of
docs/method.md §7), read as plain JSON: the models, their upstream keys and the dbt tests attached to each. No
Dagster, dagster-dbt or dbt imports here.

Why not dagster-dbt's `@dbt_assets` at load time: importing dagster_dbt imports dbt-core (about 5 s on the
development machine), which every code-server start, sensor tick and run paid before anything ran. The rules below
reproduce dagster-dbt 0.29's defaults (`default_asset_key_fn`, `get_upstream_unique_ids`, `default_asset_check_fn`,
`default_description_fn`, `default_code_version_fn`) so the asset keys, deps and check keys are the ones
`@dbt_assets` produced; tests/lake/test_dbt_manifest.py compares both on the shipped manifest. dbt itself, and
dagster-dbt to turn its events into Dagster events, are imported only when the dbt step runs (lake/dbt_assets.py).
"""

import hashlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# dagster_dbt.utils.ASSET_RESOURCE_TYPES: the dbt resources that are assets (sources are upstream keys only)
ASSET_RESOURCE_TYPES = ("model", "seed", "snapshot")
_NON_ASSET_TYPES = ("metric", "semantic_model", "saved_query", "function")


@dataclass(frozen=True)
class DbtColumn:
    name: str
    data_type: str
    description: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class DbtTest:
    """A dbt test attached to one model: an asset check on that model's key."""

    unique_id: str
    name: str
    fqn: tuple[str, ...]
    blocking: bool  # severity error (dbt's default) blocks; warn does not
    description: str | None
    additional_deps: tuple[tuple[str, ...], ...]  # other assets the test reads (relationships tests)


@dataclass(frozen=True)
class DbtModel:
    unique_id: str
    name: str
    resource_type: str
    fqn: tuple[str, ...]
    key: tuple[str, ...]
    deps: tuple[tuple[str, ...], ...]
    description: str
    code_version: str | None
    materialized: str | None
    relation_name: str | None
    columns: tuple[DbtColumn, ...]
    tags: tuple[str, ...]
    owners: tuple[str, ...]
    tests: tuple[DbtTest, ...]


@dataclass(frozen=True)
class DbtManifest:
    project_name: str
    project_id: str | None
    adapter_type: str | None
    models: tuple[DbtModel, ...]

    def model_by_key(self) -> dict[tuple[str, ...], DbtModel]:
        return {m.key: m for m in self.models}


def load(path: Path | str) -> DbtManifest:
    """Read a manifest.json into the models and tests the definitions are built from."""
    return parse(json.loads(Path(path).read_text()))


def _node(manifest: Mapping[str, Any], unique_id: str) -> Mapping[str, Any]:
    for section in ("nodes", "sources", "exposures", "metrics", "semantic_models", "saved_queries", "unit_tests"):
        found = (manifest.get(section) or {}).get(unique_id)
        if found is not None:
            return found
    raise KeyError(f"{unique_id} is not in the dbt manifest")


def _meta(props: Mapping[str, Any]) -> Mapping[str, Any]:
    return (props.get("config") or {}).get("meta") or props.get("meta") or {}


def asset_key(props: Mapping[str, Any]) -> tuple[str, ...]:
    """dagster-dbt's default key: `meta.dagster.asset_key` if set; a source is [source name, table]; a versioned
    model its alias; otherwise [configured schema,] name."""
    configured = _meta(props).get("dagster", {}).get("asset_key")
    if configured:
        return tuple(configured)
    if props["resource_type"] == "source":
        return (props["source_name"], props["name"])
    if props.get("version"):
        return (props["alias"],)
    schema = (props.get("config") or {}).get("schema")
    return (schema, props["name"]) if schema is not None else (props["name"],)


def _is_non_asset(props: Mapping[str, Any]) -> bool:
    kind = props["resource_type"]
    ephemeral = kind == "model" and (props.get("config") or {}).get("materialized") == "ephemeral"
    return kind in _NON_ASSET_TYPES or ephemeral


def _is_valid_upstream(props: Mapping[str, Any]) -> bool:
    return props["resource_type"] in (*ASSET_RESOURCE_TYPES, "source")


def upstream_ids(manifest: Mapping[str, Any], props: Mapping[str, Any]) -> set[str]:
    """The asset or source nodes a node depends on; ephemeral models and metrics are looked through."""
    found: set[str] = set()
    for parent_id in props.get("depends_on", {}).get("nodes", []):
        parent = _node(manifest, parent_id)
        if not _is_non_asset(parent):
            if _is_valid_upstream(parent):
                found.add(parent_id)
            continue
        queue, seen = list(parent.get("depends_on", {}).get("nodes", [])), set()
        while queue:
            candidate_id = queue.pop()
            if candidate_id in seen:
                continue
            seen.add(candidate_id)
            candidate = _node(manifest, candidate_id)
            if _is_non_asset(candidate):
                queue.extend(candidate.get("depends_on", {}).get("nodes", []))
            elif _is_valid_upstream(candidate):
                found.add(candidate_id)
    return found


def _attached_node(manifest: Mapping[str, Any], test: Mapping[str, Any]) -> str | None:
    """The node a test checks: a generic test's attached node, a singular test's only parent, or the model named by
    `meta.dagster.ref` (dagster-dbt's get_asset_check_key_for_test)."""
    attached = test.get("attached_node")
    parents = set(test["depends_on"]["nodes"])
    if len(parents) == 1:
        [attached] = parents
    ref = _meta(test).get("dagster", {}).get("ref", {})
    if ref:
        wanted = (ref["name"], ref.get("package") or manifest.get("metadata", {})["project_name"], ref.get("version"))
        attached = next(
            (uid for uid, n in manifest["nodes"].items() if (n["name"], n["package_name"], n.get("version")) == wanted),
            None,
        )
    return attached


def description(props: Mapping[str, Any]) -> str:
    """The model's dbt description (or `dbt model <name>`) followed by its raw SQL, as dagster-dbt shows it."""
    code = textwrap.indent(props.get("raw_sql") or props.get("raw_code", ""), "    ")
    head = props.get("description") or f"dbt {props['resource_type']} {props['name']}"
    return "\n\n".join(filter(None, [head, f"#### Raw SQL:\n```sql\n{code}\n```"]))


def code_version(props: Mapping[str, Any]) -> str | None:
    code = props.get("raw_sql") or props.get("raw_code")
    if code:
        return hashlib.sha1(code.encode("utf-8")).hexdigest()
    return (props.get("checksum") or {}).get("checksum")


def _relation_name(props: Mapping[str, Any]) -> str | None:
    parts = [props.get("database"), props.get("schema"), props.get("alias")]
    if props.get("resource_type") == "source":
        parts.append(props.get("name"))
    return ".".join(p for p in parts if p) or None


def _child_map(manifest: Mapping[str, Any]) -> Mapping[str, Sequence[str]]:
    if manifest.get("child_map"):
        return manifest["child_map"]
    children: dict[str, list[str]] = {}  # older manifests (early dbt Fusion) have no child map
    for uid, node in manifest["nodes"].items():
        for parent in upstream_ids(manifest, node):
            children.setdefault(parent, []).append(uid)
    return children


def _owners(props: Mapping[str, Any]) -> tuple[str, ...]:
    configured = props.get("meta", {}).get("dagster", {}).get("owners")
    return tuple(configured or ())


def parse(manifest: Mapping[str, Any]) -> DbtManifest:
    """Every asset node (non-ephemeral models, seeds, snapshots) with its deps and attached tests, in manifest
    order. A test whose attached node is not the model (or that has none) is not a check, as in dagster-dbt."""
    children = _child_map(manifest)
    models = []
    for uid, props in manifest["nodes"].items():
        if props["resource_type"] not in ASSET_RESOURCE_TYPES or _is_non_asset(props):
            continue
        key = asset_key(props)
        deps = sorted({asset_key(_node(manifest, up)) for up in upstream_ids(manifest, props)})
        tests = []
        for child_id in sorted(children.get(uid, [])):
            if not child_id.startswith("test"):
                continue
            test = _node(manifest, child_id)
            attached = _attached_node(manifest, test)
            if not attached or asset_key(_node(manifest, attached)) != key:
                continue
            others = {asset_key(_node(manifest, p)) for p in manifest.get("parent_map", {}).get(child_id, [])}
            others.discard(key)
            severity = (test.get("config") or {}).get("severity") or "error"
            tests.append(
                DbtTest(
                    unique_id=child_id,
                    name=test["name"],
                    fqn=tuple(test.get("fqn", ())),
                    blocking=severity.lower() == "error",
                    description=(test.get("meta") or {}).get("description"),
                    additional_deps=tuple(sorted(others)),
                )
            )
        columns = tuple(
            DbtColumn(
                name=name,
                data_type=info.get("data_type") or "?",
                description=info.get("description") or "",
                tags=tuple(info.get("tags", ())),
            )
            for name, info in (props.get("columns") or {}).items()
        )
        models.append(
            DbtModel(
                unique_id=uid,
                name=props["name"],
                resource_type=props["resource_type"],
                fqn=tuple(props.get("fqn", ())),
                key=key,
                deps=tuple(deps),
                description=description(props),
                code_version=code_version(props),
                materialized=(props.get("config") or {}).get("materialized"),
                relation_name=_relation_name(props),
                columns=columns,
                tags=tuple(props.get("tags", ())),
                owners=_owners(props),
                tests=tuple(tests),
            )
        )
    keys = [m.key for m in models]
    clashes = sorted({k for k in keys if keys.count(k) > 1})
    if clashes:
        raise ValueError(f"several dbt resources have the same asset key: {clashes}")
    meta = manifest.get("metadata", {})
    return DbtManifest(
        project_name=meta.get("project_name", ""),
        project_id=meta.get("project_id"),
        adapter_type=meta.get("adapter_type"),
        models=tuple(models),
    )


def selection_args(
    manifest: DbtManifest, keys: set[tuple[str, ...]], check_names: set[tuple[tuple[str, ...], str]]
) -> list[str]:
    """dbt arguments that build exactly the selected models and run exactly the selected tests (a subset chosen in
    the UI or by automation): models and tests by fully qualified name, with indirect selection off so a selected
    model does not drag in its deselected tests. Empty when everything is selected: plain `dbt build`."""
    every_key = {m.key for m in manifest.models}
    every_check = {(m.key, t.name) for m in manifest.models for t in m.tests}
    if keys >= every_key and check_names >= every_check:
        return []
    picked = [".".join(m.fqn) for m in manifest.models if m.key in keys]
    picked += [".".join(t.fqn) for m in manifest.models for t in m.tests if (m.key, t.name) in check_names]
    if not picked:  # nothing of ours selected: select nothing rather than everything
        return ["--select", "fqn:__nothing_selected__", "--indirect-selection", "empty"]
    return ["--select", " ".join(picked), "--indirect-selection", "empty"]
