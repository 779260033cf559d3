"""The `ultraedit` command: register manifests, run the demo, backfill failed shards."""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources as importlib_resources

from ultraedit_dagster.core import settings
from ultraedit_dagster.ops.instance import ensure_instance, pool_limits

DEMO_MANIFEST = "demo"
DEMO_SHARD_SIZE = 8
# The CLI prints warnings and errors; the full DEBUG event stream is in the instance (see `make ui`).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def cmd_add_manifest(args: argparse.Namespace) -> int:
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME, InvalidShardKey
    from ultraedit_dagster.lake.store import LakeError
    from ultraedit_dagster.sources.manifests import ManifestError, register_manifest

    instance = ensure_instance()
    lake = _lake()
    existing = set(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    try:
        reg = register_manifest(lake, args.path, name=args.name, shard_size=args.shard_size, existing_keys=existing)
    except (ManifestError, InvalidShardKey) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (LakeError, OSError) as exc:  # a full disk, a read-only or unreachable lake: say so, no traceback
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"error: cannot write the manifest's shards to the lake {lake.root}: {what}", file=sys.stderr)
        return 1
    if reg.new_shard_keys:
        instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, reg.new_shard_keys)
    print(
        f"manifest {reg.name!r}: {reg.rows} rows in {len(reg.shard_keys)} shard(s); "
        f"{len(reg.new_shard_keys)} new partition(s) added"
    )
    for key in reg.shard_keys:
        print(f"  {key}{'  (new)' if key in reg.new_shard_keys else ''}")
    return 0


def _lake():
    """The lake as configured by the environment."""
    from ultraedit_dagster.lake.resources import lake_resource_from_env

    return lake_resource_from_env(for_definitions=False).lake


def materialize_shards(instance, shard_keys: list[str]) -> dict[str, bool]:
    """Run the whole per-shard graph for each shard, then the unpartitioned release assets."""
    from ultraedit_dagster.definitions import defs

    outcome = {}
    print("materializing the seed pool ...", flush=True)
    outcome["seed_pool"] = (
        defs.resolve_job_def("seed_pool")
        .execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)
        .success
    )
    job = defs.resolve_job_def("shard_pipeline")
    for key in shard_keys:
        print(f"materializing shard {key} ...", flush=True)
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET)
        outcome[key] = result.success
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure:
                    print(f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip()}")
    print("materializing release assets ...", flush=True)
    result = defs.resolve_job_def("release").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    outcome["release"] = result.success
    return outcome


def cmd_materialize(args: argparse.Namespace) -> int:
    import dagster as dg

    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.definitions import defs

    instance = ensure_instance()
    known = set(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    missing = [k for k in args.shard if k not in known]
    if missing:
        print(f"error: unknown shard(s) {', '.join(missing)}; register a manifest first", file=sys.stderr)
        return 2
    job = defs.resolve_job_def("shard_pipeline")
    selection = [dg.AssetKey(a) for a in args.asset] if args.asset else None
    ok = True
    for key in args.shard:
        result = job.execute_in_process(
            partition_key=key, instance=instance, asset_selection=selection, run_config=QUIET, raise_on_error=False
        )
        print(f"{key}: {'success' if result.success else 'FAILED'}")
        ok &= result.success
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.sources.manifests import register_manifest

    instance = ensure_instance()
    lake = _lake()
    manifest = importlib_resources.files("ultraedit_dagster") / "demo_data" / "manifest.jsonl"
    existing = set(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    reg = register_manifest(lake, str(manifest), name=DEMO_MANIFEST, shard_size=args.shard_size, existing_keys=existing)
    if reg.new_shard_keys:
        instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, reg.new_shard_keys)
    print(f"demo manifest: {reg.rows} images in shards {', '.join(reg.shard_keys)}")
    outcome = materialize_shards(instance, reg.shard_keys)
    print_summary(lake)
    failed = [k for k, ok in outcome.items() if not ok]
    if failed:
        print(f"\nFAILED runs: {', '.join(failed)} (see `make ui` for the logs)")
        return 1
    return 0


def print_summary(lake) -> None:
    import duckdb

    from ultraedit_dagster.lake.store import SHARD_ASSETS

    print("\n== ultraedit demo summary ==")
    print(f"{'asset':<20}{'shards':>8}{'rows':>8}{'ok':>8}{'failed':>8}")
    con = duckdb.connect()
    for asset in SHARD_ASSETS:
        shards = lake.list_shards(asset)
        if not shards:
            print(f"{asset:<20}{'-':>8}{'not in graph yet':>24}")
            continue
        rows, failed = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'failed') FROM read_parquet(?, union_by_name=true)",
            [lake.asset_glob(asset)],
        ).fetchone()
        print(f"{asset:<20}{len(shards):>8}{rows:>8}{rows - failed:>8}{failed:>8}")
    wh = settings.warehouse_path()
    print(f"\nlake:      {lake.root}")
    print(f"warehouse: {wh}")
    print(f"dagster:   {settings.dagster_home()}  (make ui, then open http://127.0.0.1:3000)")
    print(f'\nThree queries to paste into `duckdb -readonly {wh}` (or `.venv/bin/ultraedit sql "..."`):')
    for query in ANALYST_QUERIES:
        print(f"  {query}")


# Shown by `make demo`; the README's analyst guide has more.
ANALYST_QUERIES = (
    "SELECT shard, candidates, failed, pass_rate, kept FROM shard_quality ORDER BY pass_rate;",
    "SELECT edit_type, mode, candidates, round(pass_rate, 3) AS pass_rate, round(mean_clip_sim_dir, 3) AS dir, kept "
    "FROM edit_type_quality ORDER BY kept DESC;",
    "SELECT mode, min_clip_sim_image, min_clip_sim_dir, kept_samples FROM threshold_sweep "
    "WHERE min_clip_sim_caption = 0.20 AND min_dinov2_sim = 0.40 ORDER BY mode, kept_samples DESC LIMIT 10;",
)


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    try:
        con = duckdb.connect(settings.warehouse_path(), read_only=True)
    except duckdb.Error as exc:
        print(f"error: cannot open the warehouse read-only ({exc}); is a writer running?", file=sys.stderr)
        return 2
    try:
        result = con.sql(args.query)
    except duckdb.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        result.show(max_rows=args.max_rows, max_width=200)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    instance = ensure_instance()
    print(f"Dagster instance at {os.environ['DAGSTER_HOME']}; pool limits: {pool_limits()}")
    instance.dispose()
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print_summary(_lake())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ultraedit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("add-manifest", help="split a manifest into shards and register them as partitions")
    p.add_argument("path", help="JSONL, CSV or Parquet with columns image, caption [, id, source, license]")
    p.add_argument("--name", help="manifest name: lowercase [a-z0-9-] (default: from the file name)")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per shard (default 1000)")
    p.set_defaults(func=cmd_add_manifest)

    p = sub.add_parser("demo", help="register the embedded demo images and materialize the whole graph")
    p.add_argument("--shard-size", type=int, default=DEMO_SHARD_SIZE)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("materialize", help="run the per-shard graph (or some assets of it) for the given shards")
    p.add_argument("--shard", action="append", required=True, help="shard key (repeatable)")
    p.add_argument("--asset", action="append", help="only these assets (repeatable; default: the whole shard graph)")
    p.set_defaults(func=cmd_materialize)

    from ultraedit_dagster.ops import backfill

    backfill.add_arguments(sub.add_parser("backfill", help="backfill only the shards that failed or are missing"))

    p = sub.add_parser("init", help="create the local Dagster instance and set the pool limits")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("sql", help="run a read-only SQL query against the warehouse")
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=40)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("summary", help="rows and failures per asset in the lake")
    p.set_defaults(func=cmd_summary)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
