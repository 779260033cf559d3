"""The warehouse refresh: DuckDB views over the lake, written by one process at a time (pool `duckdb_writer`)."""

import dagster as dg

from ultraedit_dagster.lake.resources import LakeResource, WarehouseResource
from ultraedit_dagster.lake.store import SHARD_ASSETS
from ultraedit_dagster.lake.warehouse import configure_lake_access, connect_writer, refresh_views


def build_warehouse_views(lake_assets: list[str]) -> dg.AssetsDefinition:
    """The `warehouse_views` asset over whichever lake assets the definitions hold."""

    @dg.asset(
        deps=lake_assets,
        group_name="warehouse",
        kinds={"duckdb"},
        pool="duckdb_writer",
        # follows every shard, even while other shards are missing (see dbt_assets.WAREHOUSE_AUTOMATION)
        automation_condition=dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing()),
    )
    def warehouse_views(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """One DuckDB view per lake asset (`SELECT * FROM source_images WHERE shard = ...`), over the Parquet files
        of every shard, so analysts query the whole lake from one file."""
        with connect_writer(warehouse.path) as con:
            configure_lake_access(con, lake.lake, lake.s3_settings())
            counts = refresh_views(con, lake.lake, tuple(a for a in SHARD_ASSETS if a in lake_assets))
        return dg.MaterializeResult(
            metadata={
                "warehouse": dg.MetadataValue.path(warehouse.path),
                **{f"rows_{a}": (n if n is not None else "not materialized yet") for a, n in counts.items()},
            }
        )

    return warehouse_views
