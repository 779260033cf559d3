"""The DuckDB warehouse: one view per lake asset over its Parquet files (the shard is a column of every row).

Only the warehouse refresh (and dbt) write the DuckDB file, one process at a time (pool `duckdb_writer`); analysts
open it read-only (`.venv/bin/duckdb -readonly .ultraedit/warehouse.duckdb`) whenever nothing is writing it.

Moving the lake: a view stores the absolute path of the lake it was made over, and the table `ultraedit_lake` records
that root. `lake_root_of(con)` reads it back; `ultraedit sql` and the warehouse refresh compare it with the configured
lake and re-point the views when the lake has moved (a moved or copied checkout never silently reads the old lake).
Every connection made here turns extension auto-install off: httpfs comes from its Python package.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from ultraedit_dagster.lake.store import SHARD_ASSETS, Lake, validate_asset_name

DEFAULT_WAREHOUSE_PATH = ".ultraedit/warehouse.duckdb"
LAKE_TABLE = "ultraedit_lake"
# No extension is ever downloaded at run time (httpfs comes from the duckdb-extension-httpfs package).
CONNECTION_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class WarehouseError(RuntimeError):
    pass


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled). Used only for DDL, where DuckDB cannot bind parameters."""
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise WarehouseError(f"refusing SQL identifier {name!r}")
    return f'"{name}"'


@contextlib.contextmanager
def connect_writer(path: str, retries: int = 20, wait_s: float = 0.25) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse for writing, waiting briefly if another process holds its lock."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            con = duckdb.connect(path, config=dict(CONNECTION_CONFIG))
            break
        except duckdb.Error as exc:
            locked = isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()
            if not locked:
                raise WarehouseError(cannot_open_message(path, exc)) from exc
            if attempt == retries - 1:
                raise WarehouseError(f"warehouse {path} is locked by another process: {exc}") from exc
            time.sleep(wait_s * (attempt + 1))
    try:
        yield con
    finally:
        con.close()


def cannot_open_message(path: str, exc: Exception) -> str:
    """Why the warehouse file does not open, and what to do (it holds only views and models: it can be rebuilt)."""
    text = str(exc)
    if "version" in text.lower() or "not a valid duckdb database" in text.lower() or "magic" in text.lower():
        return (
            f"cannot open the warehouse {path} with DuckDB {duckdb.__version__} (written by another DuckDB version, "
            f"or not a DuckDB file): delete it and run `ultraedit release` to rebuild it ({text})"
        )
    return f"cannot open the warehouse {path}: {text}"


def connect_reader(path: str) -> duckdb.DuckDBPyConnection:
    """Open the warehouse read-only (extension auto-install off); a clear error if the file does not exist or does
    not open."""
    if not Path(path).is_file():
        raise WarehouseError(f"no warehouse at {path}: build it with `ultraedit release` (or `make demo`)")
    try:
        return duckdb.connect(path, read_only=True, config=dict(CONNECTION_CONFIG))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise
        raise WarehouseError(cannot_open_message(path, exc)) from exc
    except duckdb.Error as exc:
        raise WarehouseError(cannot_open_message(path, exc)) from exc


def lake_root_of(con: duckdb.DuckDBPyConnection) -> str | None:
    """The lake root the views were last made over (None: no refresh has recorded one)."""
    try:
        row = con.execute(f"SELECT lake_root FROM {LAKE_TABLE}").fetchone()
    except duckdb.CatalogException:
        return None
    return row[0] if row else None


def lake_location(lake: Lake) -> str:
    """The lake's root as the views store it: s3:// as given, a local folder as an absolute path."""
    return lake.root.rstrip("/") if lake.is_s3 else str(Path(lake.root).expanduser().resolve())


def views_are_stale(con: duckdb.DuckDBPyConnection, lake: Lake) -> bool:
    """True when the views were made over another lake location than `lake` (it moved, or this is a copy)."""
    recorded = lake_root_of(con)
    return recorded is not None and recorded != lake_location(lake)


def httpfs_extension_path() -> Path:
    """The httpfs extension file shipped by the `duckdb-extension-httpfs` package for this DuckDB version."""
    from importlib import resources

    try:
        package = resources.files("duckdb_extension_httpfs")
    except ModuleNotFoundError as exc:
        raise WarehouseError(
            "the lake is on S3 but the duckdb-extension-httpfs package is not installed (`make setup` installs it)"
        ) from exc
    path = Path(str(package)) / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not path.is_file():
        raise WarehouseError(
            f"duckdb-extension-httpfs has no httpfs for DuckDB {duckdb.__version__} ({path} is missing): install the "
            "duckdb-extension-httpfs version equal to duckdb's (pinned together in pyproject.toml)"
        )
    return path


def load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """Load httpfs from its Python package (never downloaded: auto-install is off in every connection)."""
    path = httpfs_extension_path()
    try:
        con.execute(f"LOAD {sql_string(str(path))}")
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot load DuckDB's httpfs extension from {path}: {exc}") from exc


def configure_lake_access(con: duckdb.DuckDBPyConnection, lake: Lake, s3_settings: dict | None = None) -> None:
    """For an S3 lake, load httpfs and register the endpoint and credentials as a (session) secret."""
    if not lake.is_s3:
        return
    load_httpfs(con)
    s3 = s3_settings or {}
    endpoint = (s3.get("endpoint_url") or "").removeprefix("https://").removeprefix("http://")
    params = {
        "KEY_ID": s3.get("aws_access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "SECRET": s3.get("aws_secret_access_key") or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": s3.get("region_name") or os.environ.get("AWS_REGION", "us-east-1"),
    }
    if endpoint:
        params["ENDPOINT"] = endpoint
        params["URL_STYLE"] = "path"
        params["USE_SSL"] = "true" if (s3.get("endpoint_url") or "").startswith("https") else "false"
    body = ", ".join(f"{k} {sql_string(v) if k != 'USE_SSL' else v}" for k, v in params.items())
    con.execute(f"CREATE OR REPLACE SECRET ultraedit_lake (TYPE s3, {body})")


def refresh_views(
    con: duckdb.DuckDBPyConnection, lake: Lake, assets: tuple[str, ...] = SHARD_ASSETS
) -> dict[str, int | None]:
    """Create or replace one view per asset over its shard files (at the lake's current location, recorded in
    `ultraedit_lake`); returns rows per view (None: no shard yet)."""
    counts: dict[str, int | None] = {}
    con.execute(f"CREATE OR REPLACE TABLE {LAKE_TABLE} (lake_root VARCHAR, refreshed_at TIMESTAMP)")
    con.execute(f"INSERT INTO {LAKE_TABLE} VALUES (?, now())", [lake_location(lake)])
    for asset in assets:
        validate_asset_name(asset)
        view = _identifier(asset)
        if not lake.list_shards(asset):
            con.execute(f"DROP VIEW IF EXISTS {view}")
            counts[asset] = None
            continue
        source = f"read_parquet({sql_string(lake.asset_glob(asset))}, union_by_name = true)"
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {source}")
        counts[asset] = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
    return counts
