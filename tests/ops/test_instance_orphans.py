"""A killed run never blocks a later one: `ensure_instance` (every CLI command) marks the runs of dead processes
failed and frees their pool slots (issue 15 item 1)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

# The job the subprocesses run: one asset in the `gpu` pool that signals when it holds the slot, then sleeps. With
# WORKER_TAGS it uses the lake resource, whose set-up tags the run with its worker process as a daemon-launched run
# worker's does; without, nothing in it tags the run.
JOB = textwrap.dedent(
    """
    import os, sys, time
    import dagster as dg
    from ultraedit_dagster.lake.resources import LakeResource
    from ultraedit_dagster.ops.instance import ensure_instance, local_run_tags

    if os.environ.get("WORKER_TAGS"):
        @dg.asset(pool="gpu")
        def holds_gpu(lake: LakeResource):
            open(os.environ["MARKER"], "w").close()
            time.sleep(float(os.environ["HOLD_SECONDS"]))
            return 1
    else:
        @dg.asset(pool="gpu")
        def holds_gpu():
            open(os.environ["MARKER"], "w").close()
            time.sleep(float(os.environ["HOLD_SECONDS"]))
            return 1

    instance = ensure_instance()
    # TAGGED: run as `ultraedit materialize` does, with the host / boot / pid tags the reaper reads
    tags = local_run_tags() if os.environ.get("TAGGED") else None
    resources = {"lake": LakeResource(root=os.environ["MARKER"] + ".lake")} if os.environ.get("WORKER_TAGS") else {}
    result = dg.materialize([holds_gpu], instance=instance, raise_on_error=False, tags=tags, resources=resources)
    print("RESULT", result.success, flush=True)
    """
)


def _start(tmp_path, marker, hold: float, tagged: bool = False, worker_tags: bool = False) -> subprocess.Popen:
    env = {**os.environ, "MARKER": str(marker), "HOLD_SECONDS": str(hold), "CUDA_VISIBLE_DEVICES": "0"}
    if tagged:
        env["TAGGED"] = "1"
    if worker_tags:
        env["WORKER_TAGS"] = "1"
    script = tmp_path / "job.py"
    script.write_text(JOB)
    return subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(path, proc, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"job exited early: {proc.stdout.read()}")
        if time.time() > deadline:
            pytest.fail("the job never reached its step")
        time.sleep(0.2)


def test_sigkilled_run_holding_a_gpu_slot_is_failed_and_a_rerun_starts(tmp_path, monkeypatch):
    import dagster as dg

    from ultraedit_dagster.ops.instance import ensure_instance, run_pids

    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # gpu pool limit 1

    victim = _start(tmp_path, tmp_path / "holding", hold=600)
    try:
        _wait_for(tmp_path / "holding", victim, 120)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait(timeout=30)

    with dg.DagsterInstance.from_config(str(home)) as before:
        [run] = before.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # what a kill -9 leaves behind
        assert victim.pid in run_pids(before, run.run_id)
        assert before.event_log_storage.get_concurrency_info("gpu").claimed_slots  # the slot is still held

    instance = ensure_instance()  # what every CLI command does first
    try:
        run = instance.get_run_by_id(run.run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.slot_count == 1 and not info.claimed_slots and not info.pending_steps
        failure = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert "every process of this run is gone" in failure[0].event_log_entry.dagster_event.message
    finally:
        instance.dispose()

    rerun = _start(tmp_path, tmp_path / "rerun", hold=0)
    try:
        out, _ = rerun.communicate(timeout=240)  # before the fix this waited for the slot forever
    finally:
        rerun.kill()
    assert "RESULT True" in out, out


def test_the_dead_run_sensor_reaps_a_killed_run_with_no_cli_involved(tmp_path, monkeypatch):
    """With only the UI and the daemon running (no CLI command to reap on start), the daemon's `dead_run_sensor`
    marks a killed run failed and frees its slot, and a rerun starts."""
    import dagster as dg

    from ultraedit_dagster.ops.automation import dead_run_sensor

    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # gpu pool limit 1
    victim = _start(tmp_path, tmp_path / "holding", hold=600, worker_tags=True)
    try:
        _wait_for(tmp_path / "holding", victim, 120)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait(timeout=30)

    with dg.DagsterInstance.from_config(str(home)) as instance:  # not ensure_instance: that would reap
        [run] = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED
        first = dead_run_sensor(dg.build_sensor_context(instance=instance))
        assert "reaped 1 dead run" in first.skip_message
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert not info.claimed_slots and not info.pending_steps
        assert dead_run_sensor(dg.build_sensor_context(instance=instance)).skip_message == "no dead runs"

    rerun = _start(tmp_path, tmp_path / "rerun", hold=0)
    try:
        out, _ = rerun.communicate(timeout=240)
    finally:
        rerun.kill()
    assert "RESULT True" in out, out


def test_live_runs_and_reused_pids(tmp_path, monkeypatch):
    """A run whose process is alive is left alone; a live pid that started after the run (reused) counts as dead."""
    import dagster as dg
    from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData

    from ultraedit_dagster.ops import instance as inst_mod

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    instance = inst_mod.ensure_instance()
    try:
        run = instance.create_run_for_job(dg.GraphDefinition(name="g").to_job())
        start = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name)
        instance.report_dagster_event(start, run_id=run.run_id)
        instance.report_engine_event(
            f"Executing steps in process (pid: {os.getpid()})",
            run,
            engine_event_data=EngineEventData.in_process(os.getpid()),
        )
        assert inst_mod.reap_orphaned_runs(instance) == []  # this very process is alive
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

        # the same pid, but the process started after the run did: a reused pid, so the run's process is gone
        monkeypatch.setattr(inst_mod, "_process_state", lambda pid: (True, time.time() + 3600))
        assert inst_mod.reap_orphaned_runs(instance) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert inst_mod.reap_orphaned_runs(instance) == []  # once
    finally:
        instance.dispose()


def test_zombie_and_missing_processes_are_dead():
    from ultraedit_dagster.ops.instance import _process_state

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while _process_state(proc.pid)[0] and time.time() < deadline:  # exited but not waited for: a zombie
        time.sleep(0.05)
    assert _process_state(proc.pid) == (False, None)
    proc.wait()
    assert _process_state(proc.pid)[0] is False
    alive, started = _process_state(os.getpid())
    assert alive and started is not None and started <= time.time()


# -- a shared (Postgres) instance: only the runs this machine executed are judged by their pids ----------------------


def _pg_bin():
    import glob
    from pathlib import Path

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url(tmp_path):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's package; run as `postgres` when we are root)."""
    import shutil
    import tempfile

    from tests.conftest import free_port, require_system_package

    require_system_package(str(_pg_bin() or "/usr/lib/postgresql/<version>/bin/postgres"), "postgresql")
    folder, port, as_root = tempfile.mkdtemp(prefix="ultraedit-pg-"), free_port(), os.geteuid() == 0
    data = os.path.join(folder, "data")

    def pg(*cmd: str) -> None:
        full = [str(_pg_bin() / cmd[0]), *cmd[1:]]
        subprocess.run(["runuser", "-u", "postgres", "--", *full] if as_root else full, check=True, timeout=120)

    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    pg("initdb", "-D", data, "-U", "dagster", "--auth=trust", "-E", "UTF8", "--no-sync")
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg("pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(folder, "log"), "-w", "start")
    try:
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster")
        yield f"postgresql+psycopg2://dagster@127.0.0.1:{port}/dagster"
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_on_postgres_a_killed_run_worker_is_reaped_and_a_rerun_starts(tmp_path, monkeypatch, postgres_url):
    """Issue 15 item 1 on a production-style instance: before, `ensure_instance` reaped only SQLite instances, so a
    `kill -9` of a run holding the `gpu` slot on Postgres blocked every later run. The victim is not tagged by its
    launcher (as a run the daemon launched is not): its run worker tags the run when its resources are set up, with
    the same tags the CLI puts on its own runs. Runs another machine executed (their pids mean nothing here) and
    untagged runs are left to Dagster's run monitoring."""
    import dagster as dg
    from dagster._core.events import EngineEventData

    from ultraedit_dagster.ops import instance as inst_mod

    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f'storage:\n  postgres:\n    postgres_url: "{postgres_url}"\ntelemetry:\n  enabled: false\n'
    )
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # gpu pool limit 1

    victim = _start(tmp_path, tmp_path / "holding", hold=600, worker_tags=True)
    try:
        _wait_for(tmp_path / "holding", victim, 180)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait(timeout=30)

    with dg.DagsterInstance.from_config(str(home)) as shared:
        assert not inst_mod.is_local_instance(shared)
        [run] = shared.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED and inst_mod.launched_here(run)
        assert run.tags[inst_mod.PID_TAG] == str(victim.pid)
        assert shared.event_log_storage.get_concurrency_info("gpu").claimed_slots  # still held by the dead run
        # two runs the reaper must not judge: one executed on another machine, one with no tags at all
        job = dg.GraphDefinition(name="elsewhere").to_job()
        foreign = shared.create_run_for_job(job, tags={inst_mod.HOST_TAG: "another-machine", "ultraedit/pid": "1"})
        untagged = shared.create_run_for_job(job)
        for other in (foreign, untagged):
            start = dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_START.value, job_name=other.job_name)
            shared.report_dagster_event(start, run_id=other.run_id)
            shared.report_engine_event(
                f"Executing steps in process (pid: {_dead_pid()})",
                other,
                engine_event_data=EngineEventData.in_process(_dead_pid()),
            )

    instance = inst_mod.ensure_instance()  # what every CLI command does first
    try:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        info = instance.event_log_storage.get_concurrency_info("gpu")
        assert info.slot_count == 1 and not info.claimed_slots and not info.pending_steps
        for other in (foreign, untagged):
            assert instance.get_run_by_id(other.run_id).status == dg.DagsterRunStatus.STARTED
    finally:
        instance.dispose()

    rerun = _start(tmp_path, tmp_path / "rerun", hold=0, tagged=True)
    try:
        out, _ = rerun.communicate(timeout=240)  # before the fix this waited for the slot forever
    finally:
        rerun.kill()
    assert "RESULT True" in out, out
