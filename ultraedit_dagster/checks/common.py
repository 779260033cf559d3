"""What every shard check needs: the shard's Parquet as a table `t` in an in-memory DuckDB."""


import duckdb

from ..resources.storage import LakeResource


def shard_connection(lake: LakeResource, asset: str, shard: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the shard registered as `t` (through Arrow, so local and S3 lakes work alike).

    Values are always bound as parameters by the callers; nothing untrusted is interpolated into SQL.
    """
    con = duckdb.connect()
    con.register("t", lake.lake.read_table(asset, shard))
    return con
