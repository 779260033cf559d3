"""The warehouse refresh: DuckDB views over the lake, written by one process at a time (pool `duckdb_writer`)."""

import dagster as dg

from ultraedit_dagster.core.conditions import FOLLOWS_SHARDS
from ultraedit_dagster.core.retries import TRANSIENT_RETRY_POLICY, retry_transient_only
from ultraedit_dagster.lake.resources import LakeResource, WarehouseResource
from ultraedit_dagster.lake.warehouse import (
    LAKE_VIEWS,
    SINGLE_FILE_ASSETS,
    configure_lake_access,
    connect_writer,
    refresh_views,
    write_init_script,
)


def build_warehouse_views(lake_assets: list[str]) -> dg.AssetsDefinition:
    """The `warehouse_views` asset over whichever lake assets the definitions hold (plus the single-file ones, such
    as `seed_triplets`: every lake asset gets a view)."""
    deps = [*(a for a in SINGLE_FILE_ASSETS if a not in lake_assets), *lake_assets]

    @dg.asset(
        deps=deps,
        group_name="warehouse",
        kinds={"duckdb"},
        pool="duckdb_writer",
        # an analyst holding the file open makes the refresh fail with WarehouseLocked, a transient error
        retry_policy=TRANSIENT_RETRY_POLICY,
        automation_condition=FOLLOWS_SHARDS,  # every shard, even while others are missing (core/conditions.py)
    )
    @retry_transient_only
    def warehouse_views(
        context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """One DuckDB view per lake asset (`SELECT * FROM source_images WHERE shard = ...`), over the Parquet files
        of every shard, so analysts query the whole lake from one file; `<warehouse>_init.sql` beside it is the
        DuckDB shell's `-init` script (httpfs and credentials for an S3 lake)."""
        with connect_writer(warehouse.path, warehouse.lock_wait_s) as con:
            configure_lake_access(con, lake.lake, lake.s3_settings())
            counts = refresh_views(con, lake.lake, tuple(a for a in LAKE_VIEWS if a in deps))
        init = write_init_script(warehouse.path, lake.lake)
        return dg.MaterializeResult(
            metadata={
                "warehouse": dg.MetadataValue.path(warehouse.path),
                "shell_init_script": dg.MetadataValue.path(str(init)),
                **{f"rows_{a}": (n if n is not None else "not materialized yet") for a, n in counts.items()},
            }
        )

    return warehouse_views
