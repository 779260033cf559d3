"""The lake (one Parquet file per asset and shard), the DuckDB warehouse, the dbt project location and their assets."""
