"""The definitions load without any model library, and the CLI answers --help and argument errors without Dagster
(issue 13: a code server that imported torch timed out on start; `ultraedit --help` took 9.5 s)."""

import subprocess
import sys

import yaml

from tests.conftest import REPO

MODEL_LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "open_clip", "segment_anything")
HEAVY_INTEGRATIONS = ("dagster_aws", "boto3", "dagster_dbt", "dbt")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_definitions_load_without_model_libraries_dagster_aws_or_dbt():
    """dagster-dbt imports dbt-core (about 5 s): the dbt assets are built from the manifest JSON and import it only
    when the dbt step runs."""
    proc = _python(
        "import sys, json\n"
        "import ultraedit_dagster.definitions as d\n"
        "assert d.defs.resolve_job_def('shard_pipeline') is not None\n"
        "assert d.defs.resolve_job_def('release') is not None\n"
        f"print(json.dumps([m for m in {MODEL_LIBRARIES + HEAVY_INTEGRATIONS!r} if m in sys.modules]))\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_editor_tiny_constants_match_the_models_module():
    from ultraedit_dagster.editing import resources
    from ultraedit_dagster.models import editor

    assert resources.TINY_EDITORS == (editor.TINY_EDITOR, editor.TINY_SD15)
    assert resources.TINY_WORKING_SIZE == editor.TINY_WORKING_SIZE


def test_cli_help_and_argument_errors_import_neither_dagster_nor_torch():
    code = (
        "import sys\n"
        "from ultraedit_dagster import cli\n"
        "for argv in (['--help'], ['materialize', '--help'], ['materialize'], ['nope']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit as exc:\n"
        "        print('exit', exc.code)\n"
        "print('rc', cli.main(['materialize', '--shard', 'demo-00000', '--asset', 'nope']))\n"
        "print('loaded', [m for m in ('dagster', 'torch', 'pyarrow', 'duckdb') if m in sys.modules])\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "loaded []", proc.stdout
    assert lines[-2] == "rc 2"
    assert "exit 0" in lines and "exit 2" in lines
    assert "unknown asset(s) 'nope'; choose from: source_images, captions" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_runs_execute_in_one_process_whoever_launches_them():
    """The shard job and every implicit asset job (sensor, backfill, UI) use the in-process executor."""
    import dagster as dg

    from ultraedit_dagster.definitions import defs

    assert defs.resolve_job_def("shard_pipeline").executor_def is dg.in_process_executor
    assert defs.executor is dg.in_process_executor
    assert defs.resolve_implicit_global_asset_job_def().executor_def is dg.in_process_executor


def test_local_instance_gives_the_code_server_time_to_start():
    config = yaml.safe_load((REPO / "ultraedit_dagster" / "data" / "dagster.local.yaml").read_text())
    assert config["code_servers"]["local_startup_timeout"] >= 300


def test_an_existing_local_instance_gets_the_code_server_timeout(tmp_path, monkeypatch):
    """An instance made before the template had the timeout (its dagster.yaml is copied only once) gets it on the
    next CLI command, keeping its own settings and comments; a Postgres instance's file is not touched."""
    from ultraedit_dagster.ops.instance import add_code_server_timeout, ensure_instance

    template = (REPO / "ultraedit_dagster" / "data" / "dagster.local.yaml").read_text()
    old = template.split("# `dagster dev` waits")[0] + "concurrency:\n  runs:\n    max_concurrent_runs: 3  # mine\n"
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(old)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ensure_instance()
    text = (home / "dagster.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["code_servers"]["local_startup_timeout"] >= 300
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 3 and "# mine" in text
    ensure_instance()  # once only
    assert (home / "dagster.yaml").read_text() == text
    postgres = tmp_path / "pg.yaml"
    postgres.write_text("storage:\n  postgres:\n    postgres_url: postgresql://x\n")
    assert add_code_server_timeout(postgres, template) is False
    assert "code_servers" not in postgres.read_text()
