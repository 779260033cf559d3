"""The dbt-duckdb plugin named in dbt_quality/profiles.yml: dbt's DuckDB connection gets what every connection of
the project gets (lake/warehouse.py).

- extension auto-install and auto-load off (also set by the profile's `config_options`), so nothing is downloaded;
- for an S3 lake (ULTRAEDIT_LAKE=s3://...) when the profile made no S3 secret (a hand-run `dbt build`; the Dagster
  step generates its own S3 profile, lake/dbt_assets.py), httpfs loaded from the duckdb-extension-httpfs package and
  the endpoint and credentials from the AWS_* environment as a session secret;
- a warehouse that another process holds open fails with the same WarehouseLocked message as the views refresh,
  after the same bounded wait, instead of DuckDB's bare lock error.

Loaded by dbt-duckdb inside the dbt process (import of dbt's plugin base class only here).
"""

import os
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from ultraedit_dagster.lake.warehouse import CONNECTION_CONFIG, LOCK_WAIT_S, configure_lake_access, open_for_writing


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self.lock_wait_s = float(plugin_config.get("lock_wait_s", LOCK_WAIT_S))

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        config.update(CONNECTION_CONFIG)
        path = str(getattr(creds, "path", "") or "")
        if path and path != ":memory:" and not path.startswith(("md:", "motherduck:")):
            # Probe the write lock first: a clear, retryable error naming the holder rather than DuckDB's own.
            open_for_writing(path, self.lock_wait_s).close()

    def configure_connection(self, conn: Any) -> None:
        # The Dagster step's generated S3 profile (lake/dbt_assets.py) already loaded httpfs and made the lake's
        # secret from the run's S3 resource: keep that one; this covers a hand-run `dbt build` over an S3 lake.
        has_secret = conn.execute("SELECT count(*) FROM duckdb_secrets() WHERE type = 's3'").fetchone()[0]
        if not has_secret:
            configure_lake_access(conn, os.environ.get("ULTRAEDIT_LAKE", ""))
