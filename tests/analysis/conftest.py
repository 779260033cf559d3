"""Shared by the analysis tests: a scored lake and the warehouse the Dagster dbt asset builds over it."""

import dagster as dg
import pytest

from tests.analysis.scored_lake import write_scored_lake
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake.store import Lake
from ultraedit_dagster.lake.warehouse import connect_writer, refresh_views


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The scored lake and a warehouse that the Dagster dbt asset built over it with the tiny profile."""
    root = tmp_path_factory.mktemp("sweep")
    lake = Lake(str(root / "lake"))
    scores = write_scored_lake(lake)
    warehouse = root / "warehouse.duckdb"
    mp = pytest.MonkeyPatch()
    mp.setenv("ULTRAEDIT_LAKE", str(root / "lake"))
    mp.setenv("ULTRAEDIT_WAREHOUSE", str(warehouse))
    from ultraedit_dagster.lake.dbt_assets import dbt_quality_models, dbt_resource

    try:
        with dg.DagsterInstance.ephemeral() as inst:
            resources = {"dbt": dbt_resource(), "pipeline": PipelineResource(profile_name="tiny")}
            result = dg.materialize([dbt_quality_models], instance=inst, resources=resources, raise_on_error=False)
    finally:
        mp.undo()
    # the lake views analysts query next to the models (the warehouse_views asset makes them in a real run)
    with connect_writer(str(warehouse)) as con:
        refresh_views(con, lake)
    return result, root, lake, warehouse, scores
