"""Security properties that are checked over the code base itself."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ultraedit_dagster"


def _calls(name: str):
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                dotted = (
                    f"{func.value.id}.{func.attr}"
                    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    else getattr(func, "id", None)
                )
                if dotted == name:
                    yield path, node


def test_every_torch_load_is_weights_only():
    """A checkpoint is data: torch.load must never unpickle arbitrary objects."""
    found = list(_calls("torch.load"))
    assert found, "the SAM checkpoint path uses torch.load; this test must see it"
    for path, node in found:
        kwargs = {k.arg: k.value for k in node.keywords}
        assert "weights_only" in kwargs and getattr(kwargs["weights_only"], "value", None) is True, (
            f"{path}:{node.lineno} calls torch.load without weights_only=True"
        )


@pytest.mark.parametrize("name", ["pickle.load", "pickle.loads", "dill.load", "joblib.load"])
def test_nothing_unpickles(name):
    assert not list(_calls(name)), f"{name} found in the package"


def test_ui_binds_to_loopback():
    makefile = (PACKAGE.parent / "Makefile").read_text()
    ui = [line for line in makefile.splitlines() if "dagster dev" in line]
    assert ui and all("-h 127.0.0.1" in line for line in ui)


def test_planted_secrets_never_reach_logs_metadata_lake_or_cache(tmp_path, moto_server):
    """Run real stages (S3 lake, the openai instruction writer) with planted keys in the environment, then scan
    the Dagster event log and storage, the lake objects, the LLM cache and the warehouse for them."""
    import os
    import subprocess
    import sys

    from tests.openai_test_server import OpenAITestServer

    llm_key, aws_secret = "sk-PLANTED-llm-key-5d1c", "PLANTED-aws-secret-9f3e"
    client = moto_server.client()
    client.create_bucket(Bucket="lake")
    home = tmp_path / "home"
    manifest = PACKAGE / "demo_data" / "manifest.jsonl"
    with OpenAITestServer() as server:
        env = {
            **os.environ,
            "ULTRAEDIT_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster"),
            "ULTRAEDIT_LAKE": "s3://lake/ue",
            "AWS_ENDPOINT_URL": moto_server.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": aws_secret,
            "ULTRAEDIT_PROFILE": "ultraedit",
            "OPENAI_API_KEY": llm_key,
            "OPENAI_BASE_URL": server.base_url,
            "ULTRAEDIT_LLM_MODEL": "test-model",
        }

        def cli(*args, module=("-m", "ultraedit_dagster.cli")):
            out = subprocess.run(
                [sys.executable, *module, *args],
                env=env,
                cwd=PACKAGE.parent,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            return out.stdout + out.stderr

        logs = cli("add-manifest", str(manifest), "--name", "sec", "--shard-size", "4")
        logs += cli(
            module=(
                "-c",
                "import dagster as dg; from ultraedit_dagster.definitions import defs; "
                "assert defs.resolve_job_def('seed_pool').execute_in_process("
                "instance=dg.DagsterInstance.get()).success",
            )
        )
        logs += cli(
            "materialize",
            "--shard",
            "sec-00000",
            "--asset",
            "source_images",
            "--asset",
            "captions",
            "--asset",
            "edit_instructions",
        )
        # 4 images: 2 recaption requests each (the ultraedit profile's openai captioner) + 1 instruction request each
        assert server.count("/chat/completions") == 12, "the LLM stage really ran with the planted key"
    assert llm_key not in logs and aws_secret not in logs
    scanned = 0
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            assert llm_key.encode() not in data and aws_secret.encode() not in data, path
    assert scanned > 0
    objects = client.list_objects_v2(Bucket="lake")["Contents"]
    assert any("source_images/shard=sec-00000" in o["Key"] for o in objects)
    for o in objects:
        body = client.get_object(Bucket="lake", Key=o["Key"])["Body"].read()
        assert llm_key.encode() not in body and aws_secret.encode() not in body, o["Key"]


def test_sql_identifiers_from_outside_are_refused(tmp_path):
    """Names that reach DDL (asset names, shard keys) are validated; values are bound, never interpolated."""
    import pyarrow as pa

    from ultraedit_dagster.lake.store import Lake, LakeError
    from ultraedit_dagster.lake.warehouse import WarehouseError, connect_writer, refresh_views

    lake = Lake(str(tmp_path / "lake"))
    lake.write_table("source_images", "s-00000", pa.table({"uid": ["a"], "shard": ["s-00000"], "status": ["ok"]}))
    with connect_writer(str(tmp_path / "wh.duckdb")) as con:
        for evil in ['x"; DROP TABLE t; --', "source_images; DROP VIEW source_images", "Robert'); --"]:
            with pytest.raises((LakeError, WarehouseError)):
                refresh_views(con, lake, (evil,))
        assert refresh_views(con, lake, ("source_images",))["source_images"] == 1
    with pytest.raises(ValueError):
        lake.write_table("source_images", "s-00000'; DROP", pa.table({"uid": ["a"]}))


# -- the test session's network guard (tests/conftest.py): nothing leaves 127.0.0.1 --------------------------------


@pytest.fixture
def guard_log():
    """The guard's violations log; what a test plants there on purpose is removed afterwards."""
    from tests.conftest import NET_GUARD_LOG

    before = NET_GUARD_LOG.read_text(encoding="utf-8") if NET_GUARD_LOG.exists() else ""
    yield NET_GUARD_LOG
    NET_GUARD_LOG.write_text(before, encoding="utf-8")


def _new_lines(log, before: str) -> list[str]:
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    return text[len(before) :].strip().splitlines()


def test_the_guard_refuses_outbound_connections_in_the_test_process(guard_log):
    import socket

    before = guard_log.read_text(encoding="utf-8") if guard_log.exists() else ""
    with pytest.raises(ConnectionRefusedError, match="outbound network access refused"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1, never routable
    with pytest.raises(ConnectionRefusedError, match="name lookup of 'api.openai.com'"):
        socket.getaddrinfo("api.openai.com", 443)
    with pytest.raises(ConnectionRefusedError):
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53))
    assert len(_new_lines(guard_log, before)) == 3  # recorded even where a caller would swallow the error

    # loopback works as before
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
        with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5):
            pass


def test_the_guard_covers_python_subprocesses(guard_log):
    import os
    import subprocess
    import sys

    before = guard_log.read_text(encoding="utf-8") if guard_log.exists() else ""
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=1)\n"
        "except Exception as exc:\n"  # swallowed, as library code may: the log still has it
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert "ConnectionRefusedError outbound network access refused" in out.stdout, out.stdout + out.stderr
    [line] = _new_lines(guard_log, before)
    assert "192.0.2.1" in line and "pid" in line
