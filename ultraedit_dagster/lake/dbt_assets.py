"""dbt_quality (dbt-duckdb) as Dagster assets: models over the lake's metric_scores / filtered_release Parquet,
written into the DuckDB warehouse; dbt tests appear as asset checks; runs in the `duckdb_writer` pool."""

import json
import os
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR, MANIFEST, dbt_env, dbt_executable, selection_vars

# Nothing runs at import: the manifest is made by `make setup` / `make ui` / the Dockerfile
# (`python -m ultraedit_dagster.lake.dbt_project`), never while the definitions load.
if not MANIFEST.exists():
    raise FileNotFoundError(
        f"{MANIFEST} is missing: run `python -m ultraedit_dagster.lake.dbt_project` (or `make setup`) "
        "to parse dbt_quality"
    )
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


# The warehouse follows the shards: rebuild whenever a shard upstream is materialized again, even while other shards
# are missing or failed (a failed shard is a row in shard_quality, not a reason to stop refreshing the warehouse).
WAREHOUSE_AUTOMATION = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


class UltraEditDbtTranslator(DagsterDbtTranslator):
    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        return WAREHOUSE_AUTOMATION if dbt_resource_props["resource_type"] == "model" else None

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return (
            "warehouse"
            if dbt_resource_props["resource_type"] == "model"
            else super().get_group_name(dbt_resource_props)
        )


@dbt_assets(
    manifest=MANIFEST,
    project=dbt_project,
    pool="duckdb_writer",
    dagster_dbt_translator=UltraEditDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)),
)
def dbt_quality_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, pipeline: PipelineResource):
    """dbt build of dbt_quality: shard_quality, edit_type_quality, metric_summary, threshold_sweep (and their tests).
    threshold_sweep applies the active profile's selection rule (its top k and region minimum), so its row for the
    profile's thresholds reproduces the release (docs/method.md §5)."""
    os.environ.update(dbt_env(os.environ.get("ULTRAEDIT_LAKE"), os.environ.get("ULTRAEDIT_WAREHOUSE")))
    dbt_vars = json.dumps(selection_vars(pipeline.profile.selection))
    yield from dbt.cli(["build", "--vars", dbt_vars], context=context).stream()


def dbt_resource() -> DbtCliResource:
    """The `dbt` resource for definitions.py."""
    return DbtCliResource(project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable())


assets = [dbt_quality_models]
