"""The DuckDB warehouse: one view per lake asset over its Parquet files (the shard is a column of every row).

Only the warehouse refresh (and dbt) write the DuckDB file, one process at a time (pool `duckdb_writer`); analysts
open it read-only (`.venv/bin/duckdb -readonly .ultraedit/warehouse.duckdb`) whenever nothing is writing it.

Moving the lake: a view stores the absolute path of the lake it was made over, and the table `ultraedit_lake` records
that root. `lake_root_of(con)` reads it back; `ultraedit sql` and the warehouse refresh compare it with the configured
lake and re-point the views when the lake has moved (a moved or copied checkout never silently reads the old lake).
Every connection made here turns extension auto-install off: httpfs comes from its Python package.

An S3 lake: the views read s3:// objects, so whoever queries them needs httpfs and the endpoint's credentials in
their own session. `ultraedit sql` and `connect_analyst` (Python) set both up; for the DuckDB shell the refresh writes
`<warehouse>_init.sql` beside the file (`duckdb -init`), which loads httpfs from the installed package and reads the
credentials from the analyst's own AWS_* environment with `getenv` (no secret is ever written to disk).

The write lock: DuckDB lets one process open the file for writing, and any open session (read-only too) keeps the
writer out. The refresh waits a few seconds, then fails with `WarehouseLocked`, naming the process that holds the
file (DuckDB's error gives its PID); the step's retry policy classifies that as transient (core/retries.py) and tries
again a bounded number of times, so an analyst who closes the shell unblocks the next attempt.
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
# Lake assets stored as one file, not per shard (text/assets.py SEED_RELPATH; tests check they agree).
SINGLE_FILE_ASSETS = {"seed_triplets": "seed_triplets/data.parquet"}
# One warehouse view per lake asset.
LAKE_VIEWS = (*SINGLE_FILE_ASSETS, *SHARD_ASSETS)
# How long a refresh (or dbt) waits for the write lock before failing; the step's retry policy then tries again later.
LOCK_WAIT_S = float(os.environ.get("ULTRAEDIT_WAREHOUSE_LOCK_WAIT_S") or 8.0)
# No extension is ever downloaded at run time (httpfs comes from the duckdb-extension-httpfs package).
CONNECTION_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


class WarehouseError(RuntimeError):
    pass


class WarehouseLocked(WarehouseError):
    """Another process holds the warehouse file open. Transient: core/retries.py retries it (the holder may close)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


_LOCK_HOLDER = re.compile(r"held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _command_line(pid: int) -> str | None:
    """The holder's command line (Linux /proc), so the message says which shell or notebook it is."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return text[:200] or None


def locked_message(path: str, exc: BaseException, waited_s: float) -> tuple[str, int | None]:
    """What to tell the user when the warehouse is locked: which process holds it and what to do."""
    text = str(exc)
    match = _LOCK_HOLDER.search(text)
    pid = int(match["pid"]) if match else None
    if pid is None:
        holder = "another process"
    else:
        holder = f"process {pid} ({_command_line(pid) or match['exe']})"
    return (
        f"the warehouse {path} is locked: {holder} has it open, and DuckDB lets no one write a file that any other "
        f"process has open (read-only sessions too). Waited {waited_s:.0f} s; close that DuckDB shell / Python "
        f"session (or stop the process) and the refresh will go through on its next attempt. DuckDB said: {text}",
        pid,
    )


def sql_string(value: str) -> str:
    """A SQL string literal (quotes doubled). Used only for DDL, where DuckDB cannot bind parameters."""
    return "'" + value.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise WarehouseError(f"refusing SQL identifier {name!r}")
    return f'"{name}"'


def open_for_writing(path: str, lock_wait_s: float = LOCK_WAIT_S, poll_s: float = 0.25) -> duckdb.DuckDBPyConnection:
    """Open the warehouse for writing, waiting up to `lock_wait_s` while another process holds it; then
    `WarehouseLocked` (retryable) naming the holder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    while True:
        try:
            return duckdb.connect(path, config=dict(CONNECTION_CONFIG))
        except duckdb.Error as exc:
            if not is_lock_error(exc):
                raise WarehouseError(cannot_open_message(path, exc)) from exc
            waited = time.monotonic() - started
            if waited >= lock_wait_s:
                message, pid = locked_message(path, exc, waited)
                raise WarehouseLocked(message, pid) from exc
            time.sleep(min(poll_s, max(lock_wait_s - waited, 0.01)))


@contextlib.contextmanager
def connect_writer(path: str, lock_wait_s: float = LOCK_WAIT_S) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse open for writing (see `open_for_writing`), closed at the end of the block."""
    con = open_for_writing(path, lock_wait_s)
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


def configure_lake_access(con: duckdb.DuckDBPyConnection, lake: Lake | str, s3_settings: dict | None = None) -> None:
    """For an S3 lake (a Lake or its root), load httpfs and register the endpoint and credentials as a session secret
    (never persisted); settings not given come from the AWS_* environment, as for the lake's own S3 client."""
    root = lake.root if isinstance(lake, Lake) else str(lake)
    if not root.startswith("s3://"):
        return
    load_httpfs(con)
    s3 = {k: v for k, v in (s3_settings or {}).items() if v}
    s3.setdefault("endpoint_url", os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    endpoint = (s3.get("endpoint_url") or "").removeprefix("https://").removeprefix("http://")
    params = {
        "KEY_ID": s3.get("aws_access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "SECRET": s3.get("aws_secret_access_key") or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": s3.get("region_name")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
    }
    if os.environ.get("AWS_SESSION_TOKEN") and not s3.get("aws_access_key_id"):
        params["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    if endpoint:
        params["ENDPOINT"] = endpoint
        params["URL_STYLE"] = "path"
        params["USE_SSL"] = "true" if (s3.get("endpoint_url") or "").startswith("https") else "false"
    body = ", ".join(f"{k} {sql_string(v) if k != 'USE_SSL' else v}" for k, v in params.items())
    con.execute(f"CREATE OR REPLACE SECRET ultraedit_lake (TYPE s3, {body})")


def lake_connection(lake: Lake | str, s3_settings: dict | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can read the lake's Parquet (httpfs and credentials for an S3 lake; auto-install
    off, so nothing is ever downloaded)."""
    con = duckdb.connect(config=dict(CONNECTION_CONFIG))
    try:
        configure_lake_access(con, lake, s3_settings)
    except BaseException:
        con.close()
        raise
    return con


def connect_analyst(path: str = DEFAULT_WAREHOUSE_PATH) -> duckdb.DuckDBPyConnection:
    """The warehouse read-only, ready to query its views over an S3 lake too (httpfs from the package, credentials
    from the AWS_* environment): `connect_analyst(".ultraedit/warehouse.duckdb").sql("FROM metric_scores")`."""
    con = connect_reader(path)
    try:
        configure_lake_access(con, lake_root_of(con) or "")
    except BaseException:
        con.close()
        raise
    return con


def init_script_path(warehouse_path: str) -> Path:
    """`<warehouse>_init.sql` beside the warehouse file: the DuckDB shell's `-init` script for it."""
    path = Path(warehouse_path)
    return path.with_name(f"{path.stem}_init.sql")


def analyst_init_sql(lake: Lake | str) -> str:
    """The DuckDB shell's `-init` script for a warehouse over `lake`: extension auto-install off; for an S3 lake,
    httpfs loaded from the installed package and a session secret built from the analyst's own AWS_* variables
    (`getenv`, a shell-only function), so no credential is written into the file."""
    root = lake.root if isinstance(lake, Lake) else str(lake)
    lines = [
        "-- Written by the warehouse refresh (ultraedit_dagster/lake/warehouse.py): nothing is ever downloaded.",
        "SET autoinstall_known_extensions = false;",
        "SET autoload_known_extensions = false;",
    ]
    if root.startswith("s3://"):
        endpoint = "regexp_replace(coalesce(getenv('AWS_ENDPOINT_URL'), ''), '^https?://', '')"
        custom = "coalesce(getenv('AWS_ENDPOINT_URL'), '') <> ''"
        lines += [
            ".output /dev/null",  # no "Success" table from the secret at every start (errors still show)
            f"LOAD {sql_string(str(httpfs_extension_path()))};",
            "CREATE OR REPLACE SECRET ultraedit_lake (TYPE s3, "
            "KEY_ID getenv('AWS_ACCESS_KEY_ID'), SECRET getenv('AWS_SECRET_ACCESS_KEY'), "
            "REGION coalesce(nullif(getenv('AWS_REGION'), ''), nullif(getenv('AWS_DEFAULT_REGION'), ''), 'us-east-1'), "
            f"ENDPOINT CASE WHEN {custom} THEN {endpoint} ELSE 's3.amazonaws.com' END, "
            f"URL_STYLE CASE WHEN {custom} THEN 'path' ELSE 'vhost' END, "
            "USE_SSL NOT starts_with(coalesce(getenv('AWS_ENDPOINT_URL'), ''), 'http://'));",
            ".output",
        ]
    return "\n".join(lines) + "\n"


def write_init_script(warehouse_path: str, lake: Lake | str) -> Path:
    """Write the shell's `-init` script beside the warehouse (replaced atomically); returns its path."""
    path = init_script_path(warehouse_path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(analyst_init_sql(lake))
    os.replace(tmp, path)
    return path


def _view_source(lake: Lake, asset: str) -> str | None:
    """The read_parquet over an asset's files, or None while it has none."""
    if asset in SINGLE_FILE_ASSETS:
        relpath = SINGLE_FILE_ASSETS[asset]
        return f"read_parquet({sql_string(f'{lake.root}/{relpath}')})" if lake.has_bytes(relpath) else None
    if not lake.list_shards(asset):
        return None
    return f"read_parquet({sql_string(lake.asset_glob(asset))}, union_by_name = true)"


def refresh_views(
    con: duckdb.DuckDBPyConnection, lake: Lake, assets: tuple[str, ...] = LAKE_VIEWS
) -> dict[str, int | None]:
    """Create or replace one view per asset over its files (at the lake's current location, recorded in
    `ultraedit_lake`); returns rows per view (None: nothing materialized yet)."""
    counts: dict[str, int | None] = {}
    con.execute(f"CREATE OR REPLACE TABLE {LAKE_TABLE} (lake_root VARCHAR, refreshed_at TIMESTAMP)")
    con.execute(f"INSERT INTO {LAKE_TABLE} VALUES (?, now())", [lake_location(lake)])
    for asset in assets:
        validate_asset_name(asset)
        view = _identifier(asset)
        source = _view_source(lake, asset)
        if source is None:
            con.execute(f"DROP VIEW IF EXISTS {view}")
            counts[asset] = None
            continue
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {source}")
        counts[asset] = con.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
    return counts
