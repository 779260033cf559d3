"""dbt_quality (dbt-duckdb) as Dagster assets: models over the lake's metric_scores / filtered_release Parquet,
written into the DuckDB warehouse; dbt tests appear as asset checks; runs in the `duckdb_writer` pool.

The asset and check specs are built from the manifest JSON (lake/dbt_manifest.py), with the keys, deps, groups and
automation that dagster-dbt's `@dbt_assets` gave them. dagster-dbt and dbt-core (about 5 s of imports) are imported
only inside the step, where `dbt build` runs and its events become Dagster materializations and check results: a
code server, a sensor tick or a run that does not touch the warehouse never pays for them.
"""

import json
import os
import re
import uuid
from pathlib import Path

import dagster as dg

from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake import dbt_manifest
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR, MANIFEST, dbt_env, dbt_executable, selection_vars

# Nothing runs at import: the manifest is made by `make setup` / `make ui` / the Dockerfile
# (`python -m ultraedit_dagster.lake.dbt_project`), never while the definitions load.
if not MANIFEST.exists():
    raise FileNotFoundError(
        f"{MANIFEST} is missing: run `python -m ultraedit_dagster.lake.dbt_project` (or `make setup`) "
        "to parse dbt_quality"
    )
MODELS = dbt_manifest.load(MANIFEST)
UNIQUE_ID_METADATA_KEY = "dagster_dbt/unique_id"  # the key dagster-dbt uses, so its tooling still recognises ours
_TAG_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")


# The warehouse follows the shards: rebuild whenever a shard upstream is materialized again, even while other shards
# are missing or failed (a failed shard is a row in shard_quality, not a reason to stop refreshing the warehouse).
WAREHOUSE_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def _key(path: tuple[str, ...]) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def _asset_spec(model: dbt_manifest.DbtModel) -> dg.AssetSpec:
    is_model = model.resource_type == "model"
    columns = [
        dg.TableColumn(name=c.name, type=c.data_type, description=c.description, tags={t: "" for t in c.tags})
        for c in model.columns
    ]
    metadata = {
        "dagster-dbt/materialization_type": model.materialized,
        **({"dagster/column_schema": dg.TableSchema(columns=columns)} if columns else {}),
        **({"dagster/table_name": model.relation_name} if model.relation_name else {}),
        **({"dagster/storage_kind": MODELS.adapter_type} if MODELS.adapter_type else {}),
        UNIQUE_ID_METADATA_KEY: model.unique_id,
        **({"dagster_dbt/project_id": dg.MetadataValue.text(MODELS.project_id)} if MODELS.project_id else {}),
    }
    return dg.AssetSpec(
        key=_key(model.key),
        deps=[_key(d) for d in model.deps],
        description=model.description,
        metadata={k: v for k, v in metadata.items() if v is not None},
        skippable=True,
        group_name="warehouse" if is_model else None,
        code_version=model.code_version,
        automation_condition=WAREHOUSE_AUTOMATION if is_model else None,
        owners=list(model.owners) or None,
        tags={t: "" for t in model.tags if _TAG_KEY.match(t)},
        kinds={"dbt", MODELS.adapter_type or "dbt"},
    )


def _check_specs(model: dbt_manifest.DbtModel) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name=test.name,
            asset=_key(model.key),
            description=test.description,
            additional_deps=[_key(d) for d in test.additional_deps],
            metadata={UNIQUE_ID_METADATA_KEY: test.unique_id},
            blocking=test.blocking,
        )
        for test in model.tests
    ]


class DbtResource(dg.ConfigurableResource):
    """How to run dbt on dbt_quality: the project and profiles folders and the dbt executable. It makes dagster-dbt's
    `DbtCliResource` only when a step runs dbt, so loading the definitions imports neither dagster-dbt nor dbt."""

    project_dir: str
    profiles_dir: str
    dbt_executable: str = "dbt"

    def cli_resource(self):
        from dagster_dbt import DbtCliResource

        return DbtCliResource(
            project_dir=self.project_dir, profiles_dir=self.profiles_dir, dbt_executable=self.dbt_executable
        )

    def stream(self, context: dg.AssetExecutionContext, args: list[str]):
        """Run `dbt <args>` and yield its results as this step's outputs and check results (dagster-dbt's event
        translation, with its default translator: the same keys as the specs above)."""
        from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

        translator = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
        manifest = json.loads(MANIFEST.read_text())
        # one target folder per invocation, named as dagster-dbt names them (op, run, random suffix)
        op_name = context.op_execution_context.op.name
        target = Path("target") / f"{op_name}-{context.run.run_id[:7]}-{uuid.uuid4().hex[:7]}"
        invocation = self.cli_resource().cli(
            args, manifest=manifest, dagster_dbt_translator=translator, target_path=target
        )
        for event in invocation.stream_raw_events():
            yield from event.to_default_asset_events(
                manifest=manifest,
                dagster_dbt_translator=translator,
                context=context,
                target_path=invocation.target_path,
            )


@dg.multi_asset(
    name="dbt_quality_models",
    specs=[_asset_spec(m) for m in MODELS.models],
    check_specs=[c for m in MODELS.models for c in _check_specs(m)],
    can_subset=True,
    pool="duckdb_writer",
)
def dbt_quality_models(context: dg.AssetExecutionContext, dbt: DbtResource, pipeline: PipelineResource):
    """dbt build of dbt_quality: shard_quality, edit_type_quality, metric_summary, threshold_sweep,
    cost_per_kept_sample (and their tests). threshold_sweep applies the active profile's selection rule (its top k and
    region minimum), so its row for the profile's thresholds reproduces the release (docs/method.md §5)."""
    os.environ.update(dbt_env(os.environ.get("ULTRAEDIT_LAKE"), os.environ.get("ULTRAEDIT_WAREHOUSE")))
    dbt_vars = json.dumps(selection_vars(pipeline.profile.selection))
    selection = dbt_manifest.selection_args(
        MODELS,
        {tuple(k.path) for k in context.selected_asset_keys},
        {(tuple(k.asset_key.path), k.name) for k in context.selected_asset_check_keys},
    )
    yield from dbt.stream(context, ["build", "--vars", dbt_vars, *selection])


def dbt_resource() -> DbtResource:
    """The `dbt` resource for definitions.py."""
    return DbtResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


assets = [dbt_quality_models]
