"""The `ultraedit` command: register manifests, run the demo, materialize shards, build the release, backfill failed
shards, query the warehouse.

Only the standard library is imported here at start-up: `ultraedit --help` and argument errors answer at once, and
each command imports Dagster (and, when it runs a model, torch) when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from importlib import resources as importlib_resources

from ultraedit_dagster.core import settings
from ultraedit_dagster.ops.instance import ensure_instance, local_run_tags, pool_limits

DEMO_MANIFEST = "demo"
DEMO_SHARD_SIZE = 8
# The demo also runs its first few captions through the other recipe (docs/method.md §12) and prints the comparison.
DEMO_COMPARISON_IMAGES = 4
# The CLI prints warnings and errors; the full DEBUG event stream is in the instance (see `make ui`).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The per-shard assets in graph order (lake.store.SHARD_ASSETS, repeated so --help need not import pyarrow;
# tests/test_cli.py checks they agree).
SHARD_ASSET_NAMES = (
    "source_images",
    "captions",
    "edit_instructions",
    "region_masks",
    "edit_candidates",
    "metric_scores",
    "filtered_release",
)


def cmd_add_manifest(args: argparse.Namespace) -> int:
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME, InvalidShardKey
    from ultraedit_dagster.lake.store import LakeError
    from ultraedit_dagster.sources.manifests import ManifestError, register_manifest

    instance = ensure_instance()
    lake = _lake()
    existing = set(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    try:
        reg = register_manifest(
            lake, args.path, name=args.name, shard_size=args.shard_size, existing_keys=existing, recipe=args.recipe
        )
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


def _step_count(job, asset_selection) -> int:
    """Steps of one shard's run (for "stage i/n" in the progress lines)."""
    from dagster._core.execution.api import create_execution_plan

    sub = job.get_subset(asset_selection=set(asset_selection)) if asset_selection else job
    return max(1, len(create_execution_plan(sub).step_keys_to_execute))


def run_shard(instance, job, shard: str, asset_selection=None, out=None) -> bool:
    """Run the per-shard graph (or `asset_selection`) for one shard in this process, printing progress."""
    from ultraedit_dagster.ops.progress import RunProgress

    run_id = str(uuid.uuid4())
    started = time.monotonic()
    print(f"shard {shard}: running (run {run_id[:8]})", flush=True, file=out or sys.stdout)
    with RunProgress(instance, run_id, shard, _step_count(job, asset_selection), out=out):
        result = job.execute_in_process(
            partition_key=shard,
            instance=instance,
            asset_selection=asset_selection,
            run_config=QUIET,
            raise_on_error=False,
            run_id=run_id,
            tags=local_run_tags(),
        )
    state = "success" if result.success else "FAILED"
    print(f"shard {shard}: {state} in {time.monotonic() - started:.0f} s", flush=True, file=out or sys.stdout)
    return result.success


def _run_release(instance) -> bool:
    from ultraedit_dagster.definitions import defs

    started = time.monotonic()
    print("release: warehouse views, dbt models and tests, release card ...", flush=True)
    result = defs.resolve_job_def("release").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags=local_run_tags()
    )
    for event in result.all_events:
        if event.is_step_failure:
            print(f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip()}")
    print(f"release: {'success' if result.success else 'FAILED'} in {time.monotonic() - started:.0f} s", flush=True)
    return result.success


def materialize_shards(instance, shard_keys: list[str]) -> dict[str, bool]:
    """Run the whole per-shard graph for each shard, then the unpartitioned release assets."""
    from ultraedit_dagster.definitions import defs

    outcome = {}
    print("materializing the seed pool ...", flush=True)
    outcome["seed_pool"] = (
        defs.resolve_job_def("seed_pool")
        .execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET, tags=local_run_tags())
        .success
    )
    job = defs.resolve_job_def("shard_pipeline")
    for i, key in enumerate(shard_keys, 1):
        print(f"\n== shard {i}/{len(shard_keys)} ==", flush=True)
        outcome[key] = run_shard(instance, job, key)
    outcome["release"] = _run_release(instance)
    return outcome


def _check_assets(names: list[str] | None) -> str | None:
    """An error message for asset names that are not per-shard assets (None when all are)."""
    unknown = [a for a in names or [] if a not in SHARD_ASSET_NAMES]
    if unknown:
        return f"unknown asset(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(SHARD_ASSET_NAMES)}"
    return None


def cmd_materialize(args: argparse.Namespace) -> int:
    error = _check_assets(args.asset)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
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
        ok &= run_shard(instance, job, key, selection)
    return 0 if ok else 1


def cmd_release(args: argparse.Namespace) -> int:
    """Build the release: warehouse views, the dbt models and tests, the release card (over every shard's
    filtered_release whose blocking checks passed)."""
    lake = _lake()
    missing = [a for a in ("metric_scores", "filtered_release") if not lake.list_shards(a)]
    if missing:
        print(
            f"error: no shard of {' or '.join(missing)} in the lake ({lake.root}) yet: materialize shards first "
            "(`ultraedit materialize --shard KEY`, or `ultraedit demo`)",
            file=sys.stderr,
        )
        return 2
    instance = ensure_instance()
    ok = _run_release(instance)
    if ok:
        print(f"warehouse: {settings.warehouse_path()}")
        print("release card: the `release_card` asset (its metadata lists the files and checksums; see `make ui`)")
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from ultraedit_dagster.core.partitions import SHARDS_PARTITIONS_NAME
    from ultraedit_dagster.core.profiles import get_profile, profile_for_recipe
    from ultraedit_dagster.sources.manifests import register_manifest

    instance = ensure_instance()
    lake = _lake()
    manifest = importlib_resources.files("ultraedit_dagster") / "demo_data" / "manifest.jsonl"
    existing = set(instance.get_dynamic_partitions(SHARDS_PARTITIONS_NAME))
    reg = register_manifest(lake, str(manifest), name=DEMO_MANIFEST, shard_size=args.shard_size, existing_keys=existing)
    print(f"demo manifest: {reg.rows} images in shards {', '.join(reg.shard_keys)}")
    new_keys, shard_keys = list(reg.new_shard_keys), list(reg.shard_keys)
    # the same captions (the first few) through the other recipe, side by side in the same lake
    profile = get_profile()
    other = "ip2p" if profile.recipe == "ultraedit" else "ultraedit"
    try:
        profile_for_recipe(profile, other)
    except ValueError:
        other = None
    if other and args.compare:
        subset = settings.home() / f"demo-{other}.jsonl"
        subset.parent.mkdir(parents=True, exist_ok=True)
        subset.write_text(demo_subset(str(manifest), DEMO_COMPARISON_IMAGES), encoding="utf-8")
        cmp_reg = register_manifest(
            lake, str(subset), name=f"{DEMO_MANIFEST}-{other}", existing_keys=existing, recipe=other
        )
        print(f"demo manifest for recipe {other}: {cmp_reg.rows} of the same images in {', '.join(cmp_reg.shard_keys)}")
        new_keys += cmp_reg.new_shard_keys
        shard_keys += cmp_reg.shard_keys
    if new_keys:
        instance.add_dynamic_partitions(SHARDS_PARTITIONS_NAME, new_keys)
    outcome = materialize_shards(instance, shard_keys)
    print_summary(lake, title="demo summary")
    if other and args.compare and outcome.get("release"):
        print_recipe_comparison(lake)
    failed = [k for k, ok in outcome.items() if not ok]
    if failed:
        print(f"\nFAILED runs: {', '.join(failed)} (see `make ui` for the logs)")
        return 1
    return 0


def demo_subset(manifest_path: str, n: int) -> str:
    """The first `n` lines of the embedded demo manifest with absolute image paths (the copy lives elsewhere)."""
    from pathlib import Path

    folder = Path(manifest_path).parent
    lines = []
    for line in Path(manifest_path).read_text(encoding="utf-8").splitlines()[:n]:
        record = json.loads(line)
        record["image"] = str((folder / record["image"]).resolve())
        lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


# What `make demo` prints from the dbt model recipe_comparison (docs/method.md §12).
RECIPE_COMPARISON_QUERY = (
    "SELECT recipe, mode, candidates_generated AS generated, kept, round(pass_rate_all, 3) AS pass_rate, "
    "round(mean_clip_sim_dir, 3) AS clip_dir, round(candidates_per_kept_sample, 1) AS cand_per_kept, "
    "round(unet_row_steps_per_kept_sample) AS unet_per_kept "
    "FROM recipe_comparison WHERE edit_type = 'all' ORDER BY recipe, mode;"
)


def print_recipe_comparison(lake) -> None:
    """The recipes side by side (recipe_comparison, every edit type together): pass rates under each recipe's own
    thresholds, metric means and what a kept sample cost; then the measured model seconds per kept sample of each
    recipe's shards, from the release card."""
    from ultraedit_dagster.lake.warehouse import connect_reader

    print("\n== recipes side by side (recipe_comparison; per edit type: ultraedit sql, docs/method.md §12) ==")
    con = connect_reader(settings.warehouse_path())
    try:
        run_sql(con, RECIPE_COMPARISON_QUERY)
    finally:
        con.close()
    if lake.has_bytes("release/release.json"):
        by_profile = (json.loads(lake.read_bytes("release/release.json")).get("cost") or {}).get("by_profile") or {}
        for name, figures in sorted(by_profile.items()):
            seconds = figures.get("model_seconds_per_kept_sample") or {}
            shown = ", ".join(f"{k} {v}" for k, v in seconds.items()) or "not measured"
            print(f"model seconds per kept sample, {name} shards ({figures.get('kept_samples')} kept): {shown}")


def print_summary(lake, title: str = "lake summary", queries: bool = True) -> None:
    """Rows, ok and failed rows per per-shard asset in `lake`; with `queries`, where to query the warehouse."""
    from ultraedit_dagster.lake.store import SHARD_ASSETS

    print(f"\n== ultraedit {title} ==")
    print(f"{'asset':<20}{'shards':>8}{'rows':>8}{'ok':>8}{'failed':>8}")
    from ultraedit_dagster.lake.warehouse import init_script_path, lake_connection

    # httpfs from its package for an S3 lake; auto-install off (no outbound request)
    con = lake_connection(lake)
    for asset in SHARD_ASSETS:
        shards = lake.list_shards(asset)
        if not shards:
            print(f"{asset:<20}{'-':>8}{'not materialized yet':>24}")
            continue
        rows, failed = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 'failed') FROM read_parquet(?, union_by_name=true)",
            [lake.asset_glob(asset)],
        ).fetchone()
        print(f"{asset:<20}{len(shards):>8}{rows:>8}{rows - failed:>8}{failed:>8}")
    print_yield(con, lake)
    wh = settings.warehouse_path()
    print(f"\nlake:      {lake.root}")
    print(f"warehouse: {wh}")
    print(f"dagster:   {settings.dagster_home()}  (make ui, then open http://127.0.0.1:3000)")
    if queries:
        shell = f"-init {init_script_path(wh)} " if lake.is_s3 else ""
        print(f'\nQueries to paste into `.venv/bin/duckdb -readonly {shell}{wh}` (or `.venv/bin/ultraedit sql "..."`):')
        for query in ANALYST_QUERIES:
            print(f"  {query}")


def print_yield(con, lake) -> None:
    """What the candidates came to (docs/method.md §8): outcomes, triplets that stopped early, region triplets
    dropped for too few passing candidates; and the shards the release gate left out, with the reason."""
    from ultraedit_dagster.core.profiles import get_profile

    if lake.list_shards("metric_scores"):
        profile = get_profile()
        glob = lake.asset_glob("metric_scores")
        outcomes = dict(
            con.execute(
                "SELECT CASE WHEN outcome LIKE 'below_%' THEN 'failed a threshold' "
                "WHEN status <> 'ok' THEN 'failed' ELSE outcome END, count(*) "
                "FROM read_parquet(?, union_by_name=true) GROUP BY 1 ORDER BY 2 DESC",
                [glob],
            ).fetchall()
        )
        per_triplet = con.execute(
            "SELECT mode, count(*) AS made, NOT bool_or(outcome = 'selected') AS dropped "
            "FROM read_parquet(?, union_by_name=true) GROUP BY instruction_uid, mode",
            [lake.asset_glob("edit_candidates")],
        ).fetchall()
        full = {"free_form": profile.free_form.candidates_per_triplet, "region": profile.region.candidates_per_triplet}
        early = sum(1 for mode, made, _ in per_triplet if made < full.get(mode, made))
        dropped = sum(1 for mode, _, nothing_kept in per_triplet if mode == "region" and nothing_kept)
        print(f"\ncandidates: {sum(outcomes.values())} ({', '.join(f'{k}: {v}' for k, v in outcomes.items())})")
        print(
            f"triplets:   {len(per_triplet)}, {early} stopped early, {dropped} region triplets kept nothing "
            f"(fewer than {profile.selection.region_min_passing} passing, or failed upstream)"
        )
    if lake.has_bytes("release/release.json"):  # a local or an S3 lake
        cost = json.loads(lake.read_bytes("release/release.json")).get("cost") or {}
        if cost.get("kept_samples"):
            seconds = ", ".join(f"{k} {v}" for k, v in (cost.get("model_seconds_per_kept_sample") or {}).items())
            print(
                f"cost:       per kept sample ({cost['kept_samples']} kept): "
                f"{cost['candidates_per_kept_sample']} candidates, {cost['unet_row_steps_per_kept_sample']} UNet "
                f"row-steps, {cost['lake_bytes_per_kept_sample'] / 1e6:.2f} MB of lake, model seconds: {seconds or '-'}"
            )
    gate = lake.root.rstrip("/") + "/release/release_gate.parquet"
    if lake.has_bytes("release/release_gate.parquet"):
        left_out = con.execute(
            "SELECT shard, string_agg(DISTINCT \"check\" || ': ' || detail, '; ') FROM read_parquet(?) "
            "WHERE NOT included AND NOT passed GROUP BY shard ORDER BY shard",
            [gate],
        ).fetchall()
        print(f"release:    {'every shard passed its gates' if not left_out else 'left out by the release gate:'}")
        for shard, why in left_out:
            print(f"  {shard}: {why}")


# Shown by `make demo` and `ultraedit summary`; the README's analyst guide has more.
ANALYST_QUERIES = (
    "SELECT shard, candidates, failed, pass_rate, kept FROM shard_quality ORDER BY pass_rate;",
    "SELECT edit_type, mode, candidates, round(pass_rate, 3) AS pass_rate, round(mean_clip_sim_dir, 3) AS dir, kept "
    "FROM edit_type_quality ORDER BY kept DESC;",
    # what-if: image / directional thresholds moving, caption and DINOv2 minimums at the active profile's values
    "SELECT mode, min_clip_sim_image, min_clip_sim_dir, kept_samples, profile_thresholds FROM threshold_sweep "
    "JOIN (SELECT mode, min_clip_sim_caption, min_dinov2_sim FROM threshold_sweep WHERE profile_thresholds) "
    "USING (mode, min_clip_sim_caption, min_dinov2_sim) ORDER BY mode, kept_samples DESC LIMIT 10;",
)


def run_sql(con, query: str, max_rows: int = 40, out=None) -> None:
    """Run every statement of `query` (comments and trailing semicolons allowed) and show the last one's result
    (its first `max_rows` rows; a note says when there are more)."""
    import duckdb
    import pyarrow as pa

    statements = con.extract_statements(query)
    if not statements:
        raise ValueError("the query holds no SQL statement (only comments or whitespace)")
    for statement in statements[:-1]:
        con.execute(statement)
    cursor = con.execute(statements[-1])
    if cursor.description is None:
        return
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchmany(max_rows + 1)
    shown = rows[:max_rows]
    columns = list(zip(*shown, strict=True)) if shown else [[] for _ in names]
    table = pa.Table.from_arrays([pa.array(list(c)) for c in columns], names=names)
    text = str(duckdb.connect(config={"autoinstall_known_extensions": False}).from_arrow(table))
    if len(rows) > max_rows:
        text += f"(first {max_rows} rows shown; --max-rows N shows more)\n"
    print(text, file=out or sys.stdout, end="")


def _open_warehouse_for_reading():
    """The warehouse read-only, its views re-pointed first if the lake has moved since they were made."""
    from ultraedit_dagster.lake.resources import lake_resource_from_env
    from ultraedit_dagster.lake.warehouse import (
        LAKE_VIEWS,
        configure_lake_access,
        connect_reader,
        connect_writer,
        lake_location,
        lake_root_of,
        refresh_views,
        views_are_stale,
        write_init_script,
    )

    path = settings.warehouse_path()
    con = connect_reader(path)
    resource = lake_resource_from_env(for_definitions=False)
    if not views_are_stale(con, resource.lake):
        # views over an S3 lake need httpfs and the credentials in this session too
        configure_lake_access(con, resource.lake, resource.s3_settings())
        return con
    old = lake_root_of(con)
    con.close()
    with connect_writer(path) as writer:
        configure_lake_access(writer, resource.lake, resource.s3_settings())
        refresh_views(writer, resource.lake, LAKE_VIEWS)
    write_init_script(path, resource.lake)
    print(f"note: the lake moved ({old} -> {lake_location(resource.lake)}); views re-pointed", file=sys.stderr)
    con = connect_reader(path)
    configure_lake_access(con, resource.lake, resource.s3_settings())
    return con


def cmd_sql(args: argparse.Namespace) -> int:
    import duckdb

    from ultraedit_dagster.lake.warehouse import WarehouseError

    try:
        con = _open_warehouse_for_reading()
    except (duckdb.Error, WarehouseError) as exc:
        print(f"error: cannot open the warehouse read-only: {exc}", file=sys.stderr)
        return 2
    try:
        run_sql(con, args.query, args.max_rows)
    except (duckdb.Error, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    return 0


def ensure_seed_pool(instance) -> bool:
    """Materialize the seed pool (`seed_triplets`, unpartitioned, seconds) when the lake has none: every shard's
    edit_instructions needs it, and automation never materializes it, so a manifest dropped into the inbox of a fresh
    `make ui` would fail there. Returns whether it had to be built."""
    from ultraedit_dagster.text.assets import SEED_RELPATH

    if _lake().has_bytes(SEED_RELPATH):
        return False
    from ultraedit_dagster.definitions import defs

    result = defs.resolve_job_def("seed_pool").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET, tags=local_run_tags()
    )
    if not result.success:
        raise RuntimeError("materializing the seed pool failed; see `make ui` (Runs) for the log")
    return True


def cmd_init(args: argparse.Namespace) -> int:
    instance = ensure_instance()
    print(f"Dagster instance at {os.environ['DAGSTER_HOME']}; pool limits: {pool_limits()}")
    if not args.no_seed_pool:
        try:
            built = ensure_seed_pool(instance)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print("seed pool: materialized" if built else "seed pool: already in the lake")
    instance.dispose()
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    print_summary(_lake(), queries=not args.no_queries)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from ultraedit_dagster.ops import backfill

    return backfill.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ultraedit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("add-manifest", help="split a manifest into shards and register them as partitions")
    p.add_argument("path", help="JSONL, CSV or Parquet with columns image, caption [, id, source, license]")
    p.add_argument("--name", help="manifest name: lowercase [a-z0-9-] (default: from the file name)")
    p.add_argument("--shard-size", type=int, default=1000, help="rows per shard (default 1000)")
    p.add_argument(
        "--recipe",
        choices=["ultraedit", "ip2p"],
        default=None,
        help="generation recipe of this manifest's shards (default: the profile's; docs/method.md §12)",
    )
    p.set_defaults(func=cmd_add_manifest)

    p = sub.add_parser("demo", help="register the embedded demo images and materialize the whole graph")
    p.add_argument("--shard-size", type=int, default=DEMO_SHARD_SIZE)
    p.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help=f"skip running the first {DEMO_COMPARISON_IMAGES} captions through the other recipe (docs/method.md §12)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("materialize", help="run the per-shard graph (or some assets of it) for the given shards")
    p.add_argument("--shard", action="append", required=True, help="shard key (repeatable)")
    p.add_argument(
        "--asset",
        action="append",
        help=f"only these assets (repeatable; default: the whole shard graph): {', '.join(SHARD_ASSET_NAMES)}",
    )
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("release", help="build the release: warehouse views, dbt models and tests, the release card")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("backfill", help="backfill only the shards that failed or are missing (run by the daemon)")
    p.add_argument(
        "--failed",
        action="store_true",
        required=True,
        help="backfill the shards whose latest run failed or that are missing",
    )
    p.add_argument("--asset", help="only shards where this asset failed or is missing (plus its downstream)")
    p.add_argument("--dry-run", action="store_true", help="list what would be backfilled, launch nothing")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser(
        "init", help="create the local Dagster instance, set the pool limits, materialize the seed pool if missing"
    )
    p.add_argument("--no-seed-pool", action="store_true", help="only the instance and its pools")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("sql", help="run read-only SQL against the warehouse (several statements; the last is shown)")
    p.add_argument("query")
    p.add_argument("--max-rows", type=int, default=40)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("summary", help="rows and failures per asset in the lake")
    p.add_argument("--no-queries", action="store_true", help="leave out the example warehouse queries")
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
