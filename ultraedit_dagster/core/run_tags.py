"""Which machine and process execute a run, as run tags, so a run whose processes died can be told apart from a live
one on a shared instance (ops/instance.py `reap_orphaned_runs`). No Dagster imports.

The CLI puts `local_run_tags()` on the runs it executes in its own process. A run launched by the daemon (the UI, a
sensor, a backfill) gets them from its own run worker: `tag_run_with_this_process` runs when the run's resources are
set up (LakeResource, PipelineResource), before any step claims a pool slot.
"""

import os
import socket
from typing import Any

HOST_TAG = "ultraedit/host"
BOOT_TAG = "ultraedit/boot_id"
PID_TAG = "ultraedit/pid"


def boot_id() -> str:
    """This boot of the machine (Linux); empty elsewhere."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def local_run_tags() -> dict[str, str]:
    """The tags that mark a run as executed by this process on this machine."""
    return {HOST_TAG: socket.gethostname(), BOOT_TAG: boot_id(), PID_TAG: str(os.getpid())}


def tag_run_with_this_process(instance: Any, run: Any) -> None:
    """Record this machine and process on `run` unless it already names them (the CLI tagged it, or another resource
    of the same run did). Resources are also set up outside runs (sensors, schedules): no run, nothing to tag."""
    if instance is None or run is None or HOST_TAG in (run.tags or {}):
        return
    instance.add_run_tags(run.run_id, local_run_tags())
