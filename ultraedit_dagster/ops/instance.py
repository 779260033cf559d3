"""The local Dagster instance: DAGSTER_HOME, its dagster.yaml, and the concurrency pools `gpu` and `duckdb_writer`."""

import glob
import os
import shutil
from importlib import resources as importlib_resources

from ultraedit_dagster.core import settings

# Which machine, boot and process executed a run (core/run_tags.py): the CLI tags its runs, a daemon-launched run
# worker tags its own. local_run_tags is re-exported for the CLI.
from ultraedit_dagster.core.run_tags import BOOT_TAG, HOST_TAG, PID_TAG, local_run_tags  # noqa: F401
from ultraedit_dagster.core.run_tags import boot_id as _boot_id

# Concurrency pools: one GPU-bound step per GPU, one writer of the DuckDB file.
DEFAULT_POOL_LIMITS = {"duckdb_writer": 1}


def gpu_pool_limit() -> int:
    """The number of GPUs, counted without importing torch (every CLI command calls this): the devices that
    CUDA_VISIBLE_DEVICES names, else the /dev/nvidiaN device files; at least 1."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return max(1, len(glob.glob("/dev/nvidia[0-9]*")))


def pool_limits() -> dict[str, int]:
    return {**DEFAULT_POOL_LIMITS, "gpu": gpu_pool_limit()}


def ensure_instance():
    """The local Dagster instance under DAGSTER_HOME (default .ultraedit/dagster), with the pools configured and the
    runs of killed processes marked failed, their pool slots freed (`reap_orphaned_runs`)."""
    import dagster as dg

    home = settings.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    template = importlib_resources.files("ultraedit_dagster") / "data" / "dagster.local.yaml"
    if not config.exists():
        shutil.copyfile(str(template), config)
    else:
        add_code_server_timeout(config, template.read_text())
    instance = dg.DagsterInstance.get()
    for pool, limit in pool_limits().items():
        if instance.event_log_storage.get_concurrency_info(pool).slot_count != limit:
            instance.event_log_storage.set_concurrency_slots(pool, limit)
    reap_orphaned_runs(instance)
    return instance


def add_code_server_timeout(config, template_text: str) -> bool:
    """Give an instance made before the template had it the code-server start-up timeout (`dagster dev` otherwise
    gives up after 180 s, too short for a cold start on a busy machine). Appended as text so the file keeps its
    comments. Only files copied from the template are touched (same first line); one that sets `code_servers` itself,
    or any other instance's file (Postgres, production), is left as it is. True if the file was changed."""
    import yaml

    text = config.read_text()
    if text.partition("\n")[0] != template_text.partition("\n")[0] or "code_servers" in (yaml.safe_load(text) or {}):
        return False
    timeout = yaml.safe_load(template_text)["code_servers"]["local_startup_timeout"]
    with open(config, "a", encoding="utf-8") as fh:
        fh.write("\n# added by ultraedit (how long dagster dev waits for the code server to start)\n")
        fh.write(f"code_servers:\n  local_startup_timeout: {timeout}\n")
    return True


# -- runs orphaned by a killed process ----------------------------------------------------------------------------

ORPHAN_MESSAGE = (
    "marked failed by ultraedit: every process of this run is gone (killed or crashed) while the run was {status}; "
    "its pool slots were freed so later runs can start"
)


def _process_state(pid: int) -> tuple[bool, float | None]:
    """(alive, start time as epoch seconds or None where unknown) of process `pid`. A zombie counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, None
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False, None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return True, None  # no /proc (not Linux): alive as far as we can tell
    if fields[0] in ("Z", "X"):
        return False, None
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        started = None
    return True, started


def run_pids(instance, run_id: str) -> list[int]:
    """The pids Dagster recorded for a run: its engine events ('Executing steps in process (pid: N)', the run
    worker's and the multiprocess executor's processes) carry a `pid` metadata entry."""
    import dagster as dg

    pids: list[int] = []
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = getattr(event, "event_specific_data", None) if event else None
        value = (getattr(data, "metadata", None) or {}).get("pid")
        text = getattr(value, "value", value)
        if isinstance(text, (str, int)) and str(text).isascii() and str(text).isdigit() and int(text) not in pids:
            pids.append(int(text))
    return pids


def launched_here(run) -> bool:
    """True when the run's tags say it was executed on this machine (same host name)."""
    import socket

    return run.tags.get(HOST_TAG) == socket.gethostname()


def is_local_instance(instance) -> bool:
    """True where every run of the instance ran on this machine (SQLite storage under DAGSTER_HOME), so a recorded
    pid names a process here. A shared instance (Postgres, several machines) relies on Dagster's run monitoring."""
    from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

    storage = getattr(instance, "run_storage", None)
    storage = getattr(storage, "_storage", storage)  # legacy wrappers
    return isinstance(storage, SqliteRunStorage)


def reap_orphaned_runs(instance, *, only_local: bool = True) -> list[str]:
    """Mark failed every STARTING / STARTED run whose recorded processes are all dead, and free the concurrency-pool
    slots it held or waited for; returns their run ids.

    A `kill -9` of `ultraedit materialize` (or of a run worker) leaves its run STARTED with its `gpu` /
    `duckdb_writer` slot claimed, and every later run of that step would wait forever. A pid that is alive but was
    started after the run (the pid was reused) counts as dead. Runs with no recorded pid yet are left alone (they
    claim no slot before their steps start).

    Which runs are judged: on a local (SQLite) instance every run, since they all ran here; on a shared instance
    (Postgres) only the runs tagged as executed on this machine (`local_run_tags`, which the CLI puts on its runs):
    a pid recorded by another machine means nothing here. A tagged run from an earlier boot of this machine is dead.
    Runs that the daemon launched on other machines are Dagster's run monitoring's (deploy/dagster.yaml), which also
    frees the slots of runs that ended. `only_local=False` judges every run by its pids, wherever it ran.
    """
    import dagster as dg

    local = is_local_instance(instance)
    reaped = []
    statuses = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=statuses)):
        run = record.dagster_run
        if only_local and not local and not launched_here(run):
            continue
        if run.tags.get(BOOT_TAG) and _boot_id() and run.tags[BOOT_TAG] != _boot_id():
            pids = []  # the machine rebooted since: none of the run's processes survived
        else:
            tagged = run.tags.get(PID_TAG, "")
            pids = run_pids(instance, run.run_id) + ([int(tagged)] if tagged.isascii() and tagged.isdigit() else [])
            if not pids:
                continue
        run_started = record.start_time or (record.create_timestamp.timestamp() if record.create_timestamp else None)
        alive = False
        for pid in pids:
            is_alive, proc_started = _process_state(pid)
            reused = proc_started is not None and run_started is not None and proc_started > run_started + 1.0
            if is_alive and not reused:
                alive = True
                break
        if alive:
            continue
        instance.report_run_failed(run, ORPHAN_MESSAGE.format(status=run.status.value))
        reaped.append(run.run_id)
    for run_id in set(reaped) | _runs_holding_slots_that_ended(instance):
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return reaped


def _runs_holding_slots_that_ended(instance) -> set[str]:
    """Runs that hold or wait for a pool slot but are already finished (failed, canceled, success, or deleted)."""
    import dagster as dg

    holders = instance.event_log_storage.get_concurrency_run_ids()
    if not holders:
        return set()
    live = {
        r.run_id
        for r in instance.get_runs(
            filters=dg.RunsFilter(
                run_ids=list(holders),
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                    dg.DagsterRunStatus.CANCELING,
                ],
            )
        )
    }
    return set(holders) - live
