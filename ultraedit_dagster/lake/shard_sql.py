"""What every shard check needs: the shard's Parquet as a table `t` in an in-memory DuckDB."""

import duckdb

from ultraedit_dagster.lake.resources import LakeResource
from ultraedit_dagster.lake.store import LakeError
from ultraedit_dagster.lake.warehouse import CONNECTION_CONFIG, sql_string


def shard_connection(
    lake: LakeResource, asset: str, shard: str, columns: list[str] | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the shard as `t`.

    On a local lake `t` is a view over the Parquet file, so a check reads only the columns its SQL touches (image
    columns stay on disk); on S3 the shard comes through Arrow, limited to `columns`. Values are always bound by the
    callers; the only literal here is a lake path built from validated asset and shard names.
    """
    the_lake = lake.lake
    con = duckdb.connect(config=dict(CONNECTION_CONFIG))
    if the_lake.is_s3:
        con.register("t", the_lake.read_table(asset, shard, columns=columns))
        return con
    if not the_lake.exists(asset, shard):
        raise LakeError(f"{asset} has no data for shard {shard!r}: materialize it first")
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet({sql_string(the_lake.shard_uri(asset, shard))})")
    return con
