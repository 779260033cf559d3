"""dbt_quality's assets are built from the manifest JSON without dagster-dbt (lake/dbt_manifest.py): the specs must be
the ones dagster-dbt's `@dbt_assets` would make (keys, deps, groups, automation, checks), on the shipped manifest and
on a synthetic one with the cases the shipped project lacks; a subset run builds only what was selected."""

import copy
import json
import os

import dagster as dg
import duckdb
import pytest

from tests.quality_fixtures import write_synthetic_scores_and_release
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake import dbt_manifest
from ultraedit_dagster.lake.dbt_project import MANIFEST
from ultraedit_dagster.lake.store import Lake

# dagster-dbt's own bookkeeping objects, which our specs do not carry (nothing of ours reads them)
DBT_OBJECTS = {"dagster_dbt/manifest", "dagster_dbt/dagster_dbt_translator", "dagster_dbt/project"}


def _reference_assets():
    """What `@dbt_assets` made before (the translator of the former lake/dbt_assets.py)."""
    from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

    from ultraedit_dagster.core.conditions import FOLLOWS_WAREHOUSE

    class Translator(DagsterDbtTranslator):
        def get_automation_condition(self, props):
            return FOLLOWS_WAREHOUSE if props["resource_type"] == "model" else None

        def get_group_name(self, props):
            return "warehouse" if props["resource_type"] == "model" else super().get_group_name(props)

    @dbt_assets(
        manifest=MANIFEST,
        pool="duckdb_writer",
        dagster_dbt_translator=Translator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)),
    )
    def dbt_quality_models(context):
        yield from ()

    return dbt_quality_models


def _spec_fields(spec: dg.AssetSpec) -> dict:
    return {
        "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
        "group": spec.group_name,
        "automation": spec.automation_condition,
        "code_version": spec.code_version,
        "description": spec.description,
        "kinds": set(spec.kinds),
        "tags": dict(spec.tags),
        "owners": list(spec.owners),
        "skippable": spec.skippable,
        "metadata": {k: v for k, v in spec.metadata.items() if k not in DBT_OBJECTS},
    }


def _check_fields(spec: dg.AssetCheckSpec) -> tuple:
    deps = tuple(sorted(d.asset_key.to_user_string() for d in spec.additional_deps))
    return spec.key, spec.blocking, spec.description, deps, tuple(sorted((spec.metadata or {}).items()))


def test_specs_match_what_dagster_dbt_built_from_the_shipped_manifest():
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models

    ours, ref = dbt_quality_models, _reference_assets()
    assert set(ours.keys) == set(ref.keys) and len(ours.keys) >= 5
    for key in ref.keys:
        assert _spec_fields(ours.get_asset_spec(key)) == _spec_fields(ref.get_asset_spec(key)), key
    assert sorted(map(_check_fields, ours.check_specs), key=str) == sorted(map(_check_fields, ref.check_specs), key=str)
    assert ours.keys_by_output_name == ref.keys_by_output_name
    assert set(ours.check_specs_by_output_name) == set(ref.check_specs_by_output_name)
    assert ours.op.pool == ref.op.pool == "duckdb_writer"
    assert ours.can_subset and ours.required_resource_keys >= {"dbt", "pipeline"}


def _synthetic_manifest() -> dict:
    """The shipped manifest plus what dbt_quality does not have yet: an ephemeral model between a source and a model,
    a model with a configured schema, a model keyed by `meta.dagster.asset_key`, a `warn` test (not blocking), a
    relationships test reading two models, and a singular test with two parents (no check)."""
    m = copy.deepcopy(json.loads(MANIFEST.read_text()))
    base = next(n for n in m["nodes"].values() if n["resource_type"] == "model")
    source_id = next(iter(m["sources"]))

    def model(name, depends, **config):
        node = copy.deepcopy(base)
        uid = f"model.{base['package_name']}.{name}"
        node.update(unique_id=uid, name=name, alias=name, fqn=[base["package_name"], name], columns={})
        node.update(raw_code=f"select 1 as {name}", description="", meta={})
        node["depends_on"] = {"nodes": depends, "macros": []}
        node["config"] = {**node["config"], "meta": {}, **config}
        m["nodes"][uid] = node
        m["parent_map"][uid] = depends
        m["child_map"][uid] = []
        for parent in depends:
            m["child_map"].setdefault(parent, []).append(uid)
        return uid

    def test(name, depends, attached, severity="ERROR"):
        uid = f"test.{base['package_name']}.{name}.0000000000"
        m["nodes"][uid] = {
            "unique_id": uid,
            "name": name,
            "resource_type": "test",
            "package_name": base["package_name"],
            "fqn": [base["package_name"], name],
            "depends_on": {"nodes": depends, "macros": []},
            "attached_node": attached,
            "config": {"severity": severity, "meta": {}},
            "meta": {},
        }
        m["parent_map"][uid] = depends
        for parent in depends:
            m["child_map"].setdefault(parent, []).append(uid)

    eph = model("staged", [source_id], materialized="ephemeral")
    over_eph = model("over_staged", [eph])
    schema = model("in_schema", [over_eph], schema="analytics")
    keyed = model("keyed", [schema], meta={"dagster": {"asset_key": ["custom", "keyed"]}})
    test("warn_on_keyed", [keyed], keyed, severity="warn")
    test("relationships_keyed_in_schema", [keyed, schema], keyed)
    test("singular_two_parents", [keyed, over_eph], None)
    return m


def test_synthetic_manifest_keys_deps_and_checks_match_dagster_dbt():
    from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings
    from dagster_dbt.asset_utils import default_asset_check_fn

    manifest = _synthetic_manifest()
    parsed = dbt_manifest.parse(manifest)
    translator = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
    for model in parsed.models:
        ref = translator.get_asset_spec(manifest, model.unique_id, None)
        assert dg.AssetKey(list(model.key)) == ref.key
        assert {dg.AssetKey(list(d)) for d in model.deps} == {d.asset_key for d in ref.deps}, model.name
        assert model.description == ref.description and model.code_version == ref.code_version
        expected = set()
        for child in manifest["child_map"][model.unique_id]:
            if child.startswith("test"):
                check = default_asset_check_fn(manifest, translator, ref.key, child, None)
                if check is not None:
                    expected.add(_check_fields(check))
        ours = {
            _check_fields(
                dg.AssetCheckSpec(
                    name=t.name,
                    asset=dg.AssetKey(list(model.key)),
                    description=t.description,
                    additional_deps=[dg.AssetKey(list(d)) for d in t.additional_deps],
                    metadata={"dagster_dbt/unique_id": t.unique_id},
                    blocking=t.blocking,
                )
            )
            for t in model.tests
        }
        assert ours == expected, model.name
    by_name = {m.name: m for m in parsed.models}
    assert "staged" not in by_name  # ephemeral: not an asset, looked through
    assert by_name["over_staged"].deps == (("metric_scores",),)
    assert by_name["in_schema"].key == ("analytics", "in_schema")
    keyed = by_name["keyed"]
    assert keyed.key == ("custom", "keyed") and keyed.deps == (("analytics", "in_schema"),)
    tests = {t.name: t for t in keyed.tests}
    assert set(tests) == {"warn_on_keyed", "relationships_keyed_in_schema"}
    assert tests["warn_on_keyed"].blocking is False
    assert tests["relationships_keyed_in_schema"].additional_deps == (("analytics", "in_schema"),)


def test_two_resources_with_one_key_are_refused():
    manifest = _synthetic_manifest()
    node = manifest["nodes"]["model.ultraedit_quality.keyed"]
    node["config"]["meta"] = {"dagster": {"asset_key": ["shard_quality"]}}
    with pytest.raises(ValueError, match="same asset key"):
        dbt_manifest.parse(manifest)


def test_selection_args_build_exactly_the_selection():
    parsed = dbt_manifest.load(MANIFEST)
    every_key = {m.key for m in parsed.models}
    every_check = {(m.key, t.name) for m in parsed.models for t in m.tests}
    assert dbt_manifest.selection_args(parsed, every_key, every_check) == []
    shard_quality = next(m for m in parsed.models if m.name == "shard_quality")
    one_check = (shard_quality.key, shard_quality.tests[0].name)
    args = dbt_manifest.selection_args(parsed, {shard_quality.key}, {one_check})
    assert args[0] == "--select" and args[-2:] == ["--indirect-selection", "empty"]
    assert args[1].split() == [".".join(shard_quality.fqn), ".".join(shard_quality.tests[0].fqn)]


def test_a_subset_run_builds_only_the_selected_model_and_its_checks(tmp_path, monkeypatch):
    """Materializing shard_quality alone (the UI, or automation after one shard) runs dbt on that model and its
    tests only: one materialization, its checks evaluated, no other model written to the warehouse."""
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models, dbt_resource

    lake = Lake(str(tmp_path / "lake"))
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=2, seed=0)
    monkeypatch.setenv("ULTRAEDIT_LAKE", str(tmp_path / "lake"))
    monkeypatch.setenv("ULTRAEDIT_WAREHOUSE", str(tmp_path / "w.duckdb"))
    key = dg.AssetKey("shard_quality")
    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [dbt_quality_models],
            selection=[key],
            instance=inst,
            resources={"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="tiny")},
        )
    assert result.success
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {key}
    evals = result.get_asset_check_evaluations()
    assert {e.asset_key for e in evals} == {key}
    assert {e.check_name for e in evals} == {k.name for k in dbt_quality_models.check_keys if k.asset_key == key}
    assert all(e.passed for e in evals)
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    assert "shard_quality" in tables and "threshold_sweep" not in tables


def test_dbt_builds_the_warehouse_from_a_lake_on_s3(tmp_path, monkeypatch, moto_server):
    """A lake on S3 (moto here): the dbt step loads httpfs from its Python package and registers the lake's endpoint
    and credentials as a DuckDB secret through a temporary profile; the models hold the shard's rows and every dbt
    test passes. Before, dbt read only a local lake (no S3 settings in its profile)."""
    from ultraedit_dagster.lake.dbt_assets import S3_ENV, dbt_quality_models, dbt_resource

    moto_server.client().create_bucket(Bucket="lake")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("ULTRAEDIT_LAKE", "s3://lake/prefix")
    monkeypatch.setenv("ULTRAEDIT_WAREHOUSE", str(tmp_path / "w.duckdb"))
    lake = Lake("s3://lake/prefix", s3_client=moto_server.client())
    write_synthetic_scores_and_release(lake, "demo-00000", n_triplets=3, seed=0)
    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [dbt_quality_models],
            instance=inst,
            resources={"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="tiny")},
            raise_on_error=False,
        )
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert evals and all(e.passed for e in evals)
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    assert con.execute("select shard, candidates from shard_quality").fetchall() == [("demo-00000", 12)]
    assert not any(name in os.environ for name in S3_ENV.values())  # set only around the dbt run
