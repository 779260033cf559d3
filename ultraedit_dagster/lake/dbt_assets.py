"""dbt_quality (dbt-duckdb) as Dagster assets: models over the lake's metric_scores / filtered_release Parquet,
written into the DuckDB warehouse; dbt tests appear as asset checks; runs in the `duckdb_writer` pool.

The asset and check specs are built from the manifest JSON (lake/dbt_manifest.py), with the keys, deps, groups and
automation that dagster-dbt's `@dbt_assets` gave them. dagster-dbt and dbt-core (about 5 s of imports) are imported
only inside the step, where `dbt build` runs and its events become Dagster materializations and check results: a
code server, a sensor tick or a run that does not touch the warehouse never pays for them.
"""

import functools
import importlib.metadata
import json
import os
import re
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import dagster as dg

from ultraedit_dagster.core.conditions import FOLLOWS_WAREHOUSE
from ultraedit_dagster.core.resources import PipelineResource
from ultraedit_dagster.lake import dbt_manifest
from ultraedit_dagster.lake.dbt_project import DBT_PROJECT_DIR, MANIFEST, dbt_env, dbt_executable, selection_vars
from ultraedit_dagster.lake.resources import S3Connection

# Nothing runs at import: the manifest is made by `make setup` / `make ui` / the Dockerfile
# (`python -m ultraedit_dagster.lake.dbt_project`), never while the definitions load.
if not MANIFEST.exists():
    raise FileNotFoundError(
        f"{MANIFEST} is missing: run `python -m ultraedit_dagster.lake.dbt_project` (or `make setup`) "
        "to parse dbt_quality"
    )
MODELS = dbt_manifest.load(MANIFEST)
UNIQUE_ID_METADATA_KEY = "dagster_dbt/unique_id"  # the key dagster-dbt uses, so its tooling still recognises ours
_TAG_KEY = re.compile(r"^([A-Za-z0-9_.-]{1,63}/)?[A-Za-z0-9_.-]{1,63}$")


def _key(path: tuple[str, ...]) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def _asset_spec(model: dbt_manifest.DbtModel) -> dg.AssetSpec:
    is_model = model.resource_type == "model"
    columns = [
        dg.TableColumn(name=c.name, type=c.data_type, description=c.description, tags={t: "" for t in c.tags})
        for c in model.columns
    ]
    metadata = {
        "dagster-dbt/materialization_type": model.materialized,
        **({"dagster/column_schema": dg.TableSchema(columns=columns)} if columns else {}),
        **({"dagster/table_name": model.relation_name} if model.relation_name else {}),
        **({"dagster/storage_kind": MODELS.adapter_type} if MODELS.adapter_type else {}),
        UNIQUE_ID_METADATA_KEY: model.unique_id,
        **({"dagster_dbt/project_id": dg.MetadataValue.text(MODELS.project_id)} if MODELS.project_id else {}),
    }
    return dg.AssetSpec(
        key=_key(model.key),
        deps=[_key(d) for d in model.deps],
        description=model.description,
        metadata={k: v for k, v in metadata.items() if v is not None},
        skippable=True,
        group_name="warehouse" if is_model else None,
        code_version=model.code_version,
        # rebuilt whenever a shard upstream lands, even while others are missing or failed (a failed shard is a row
        # in shard_quality, not a reason to stop refreshing the warehouse)
        automation_condition=FOLLOWS_WAREHOUSE if is_model else None,
        owners=list(model.owners) or None,
        tags={t: "" for t in model.tags if _TAG_KEY.match(t)},
        kinds={"dbt", MODELS.adapter_type or "dbt"},
    )


def _check_specs(model: dbt_manifest.DbtModel) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name=test.name,
            asset=_key(model.key),
            description=test.description,
            additional_deps=[_key(d) for d in test.additional_deps],
            metadata={UNIQUE_ID_METADATA_KEY: test.unique_id},
            blocking=test.blocking,
        )
        for test in model.tests
    ]


# Environment variables that carry the lake's S3 endpoint and credentials to the dbt process (set only around it); the
# generated profile reads them with env_var(), so no secret is written to disk.
S3_ENV = {
    "endpoint": "ULTRAEDIT_DBT_S3_ENDPOINT",
    "key_id": "ULTRAEDIT_DBT_S3_KEY_ID",
    "secret": "ULTRAEDIT_DBT_S3_SECRET",
    "region": "ULTRAEDIT_DBT_S3_REGION",
}


def s3_profile(profile: dict, httpfs_path: str, extension_dir: str, use_ssl: bool) -> dict:
    """dbt_quality's profile for a lake on S3: DuckDB loads httpfs from its Python package (extension auto-install
    off: nothing is downloaded) and registers the lake's endpoint and credentials as an S3 secret."""
    profile = json.loads(json.dumps(profile))
    for output in profile["ultraedit_quality"]["outputs"].values():
        output["extensions"] = [httpfs_path]
        options = output.setdefault("config_options", {})
        options.update(autoinstall_known_extensions=False, extension_directory=extension_dir)
        output["secrets"] = [
            {
                "type": "s3",
                "name": "ultraedit_lake",
                "key_id": "{{ env_var('%s', '') }}" % S3_ENV["key_id"],
                "secret": "{{ env_var('%s', '') }}" % S3_ENV["secret"],
                "region": "{{ env_var('%s', 'us-east-1') }}" % S3_ENV["region"],
                "endpoint": "{{ env_var('%s', 's3.amazonaws.com') }}" % S3_ENV["endpoint"],
                "url_style": "path",
                "use_ssl": "true" if use_ssl else "false",
            }
        ]
    return profile


@functools.cache
def offline_dbt_cli_resource() -> type:
    """dagster-dbt's `DbtCliResource`, except that it learns the dbt version without running `dbt --version`, which
    asks pypi.org for the latest release on every run (an outbound connection nobody configured). The version comes
    from the dbt-core installed here when the executable is this environment's dbt; any other executable is asked."""
    from dagster_dbt import DbtCliResource
    from packaging import version

    class OfflineDbtCliResource(DbtCliResource):
        @functools.cached_property
        def _cli_version(self):
            if Path(self.dbt_executable).resolve() == Path(dbt_executable()).resolve():
                return version.parse(importlib.metadata.version("dbt-core"))
            return super()._cli_version

    return OfflineDbtCliResource


class DbtResource(dg.ConfigurableResource):
    """How to run dbt on dbt_quality: the project and profiles folders, the dbt executable, and the lake's S3
    endpoint and credentials (used when the lake is on S3). It makes dagster-dbt's `DbtCliResource` only when a step
    runs dbt, so loading the definitions imports neither dagster-dbt nor dbt."""

    project_dir: str
    profiles_dir: str
    dbt_executable: str = "dbt"
    s3: Optional[S3Connection] = None

    def cli_resource(self, profiles_dir: str | None = None):
        return offline_dbt_cli_resource()(
            project_dir=self.project_dir,
            profiles_dir=profiles_dir or self.profiles_dir,
            dbt_executable=self.dbt_executable,
        )

    @contextmanager
    def profiles_for(self, lake_root: str):
        """The profiles folder for a dbt run over `lake_root`: the project's own for a local lake; for an S3 lake, a
        temporary one (`s3_profile`) with the endpoint and credentials in the process environment meanwhile."""
        if not lake_root.startswith("s3://"):
            yield self.profiles_dir
            return
        import yaml

        from ultraedit_dagster.lake.warehouse import httpfs_extension_path

        s3 = self.s3 or S3Connection()
        endpoint = s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or ""
        values = {
            "endpoint": endpoint.removeprefix("https://").removeprefix("http://"),
            "key_id": s3.aws_access_key_id or os.environ.get("AWS_ACCESS_KEY_ID", ""),
            "secret": s3.aws_secret_access_key or os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            "region": s3.region_name or os.environ.get("AWS_REGION", "us-east-1"),
        }
        base = yaml.safe_load((Path(self.profiles_dir) / "profiles.yml").read_text())
        saved = {name: os.environ.get(name) for name in S3_ENV.values()}
        with tempfile.TemporaryDirectory(prefix="ultraedit-dbt-s3-") as tmp:
            profile = s3_profile(base, str(httpfs_extension_path()), tmp, use_ssl=not endpoint.startswith("http://"))
            (Path(tmp) / "profiles.yml").write_text(yaml.safe_dump(profile))
            try:
                os.environ.update({S3_ENV[k]: v for k, v in values.items() if v})
                yield tmp
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def stream(self, context: dg.AssetExecutionContext, args: list[str]):
        """Run `dbt <args>` and yield its results as this step's outputs and check results (dagster-dbt's event
        translation, with its default translator: the same keys as the specs above)."""
        from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings

        translator = DagsterDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
        manifest = json.loads(MANIFEST.read_text())
        # one target folder per invocation, named as dagster-dbt names them (op, run, random suffix)
        op_name = context.op_execution_context.op.name
        target = Path("target") / f"{op_name}-{context.run.run_id[:7]}-{uuid.uuid4().hex[:7]}"
        with self.profiles_for(os.environ.get("ULTRAEDIT_LAKE", "")) as profiles_dir:
            invocation = self.cli_resource(profiles_dir).cli(
                args, manifest=manifest, dagster_dbt_translator=translator, target_path=target
            )
            yield from self._events(context, invocation, manifest, translator)

    @staticmethod
    def _events(context, invocation, manifest, translator):
        for event in invocation.stream_raw_events():
            yield from event.to_default_asset_events(
                manifest=manifest,
                dagster_dbt_translator=translator,
                context=context,
                target_path=invocation.target_path,
            )


@dg.multi_asset(
    name="dbt_quality_models",
    specs=[_asset_spec(m) for m in MODELS.models],
    check_specs=[c for m in MODELS.models for c in _check_specs(m)],
    can_subset=True,
    pool="duckdb_writer",
)
def dbt_quality_models(context: dg.AssetExecutionContext, dbt: DbtResource, pipeline: PipelineResource):
    """dbt build of dbt_quality: shard_quality, edit_type_quality, metric_summary, threshold_sweep,
    cost_per_kept_sample (and their tests). threshold_sweep applies the active profile's selection rule (its top k and
    region minimum), so its row for the profile's thresholds reproduces the release (docs/method.md §5)."""
    os.environ.update(dbt_env(os.environ.get("ULTRAEDIT_LAKE"), os.environ.get("ULTRAEDIT_WAREHOUSE")))
    dbt_vars = json.dumps(selection_vars(pipeline.profile.selection))
    selection = dbt_manifest.selection_args(
        MODELS,
        {tuple(k.path) for k in context.selected_asset_keys},
        {(tuple(k.asset_key.path), k.name) for k in context.selected_asset_check_keys},
    )
    yield from dbt.stream(context, ["build", "--vars", dbt_vars, *selection])


def dbt_resource() -> DbtResource:
    """The `dbt` resource for definitions.py: the lake's S3 endpoint and credentials as the lake resource has them
    (dg.EnvVar, resolved inside the run)."""
    from ultraedit_dagster.lake.resources import lake_resource_from_env

    return DbtResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        dbt_executable=dbt_executable(),
        s3=lake_resource_from_env().s3,
    )


assets = [dbt_quality_models]
