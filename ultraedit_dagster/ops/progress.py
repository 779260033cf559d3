"""Progress a person can follow while `ultraedit materialize` / `ultraedit demo` run a shard in this process.

`RunProgress` watches one run's event log from a background thread (the run executes in the foreground, in process)
and prints one line per event that matters: a stage starting, a stage done (its rows, seconds, rows/s), a failure,
and the progress lines that long steps log (`progress_message`), with the rate and the time left.

`progress_message(shard, done, total, elapsed_s)` is the one format of those log lines: a stage calls
`context.log.info(progress_message(...))` every few batches, the run log in the UI shows it, and this watcher turns
it into a CLI line. No Dagster imports at module level (the CLI's --help must not import Dagster).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from typing import TextIO

_PROGRESS = re.compile(r"^progress (?P<shard>[a-z0-9-]+): (?P<unit>[a-z]+) (?P<done>\d+)/(?P<total>\d+)")


def rate_and_eta(done: int, total: int, elapsed_s: float) -> tuple[float, float | None]:
    """(rows per second, seconds left or None when unknown)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = (total - done) / rate if rate > 0 and total >= done else None
    return rate, left


def progress_message(shard: str, done: int, total: int, elapsed_s: float, unit: str = "rows") -> str:
    """`progress <shard>: <unit> <done>/<total>, <rate> <unit>/s, ~<eta> s left` (what long steps log; the unit is
    `rows`, or `triplets` for the generate-and-score step)."""
    rate, left = rate_and_eta(done, total, elapsed_s)
    eta = f", ~{left:.0f} s left" if left is not None else ""
    return f"progress {shard}: {unit} {done}/{total}, {rate:.2f} {unit}/s{eta}"


def _step_stage(step_key: str) -> str:
    """The name to show for a step: an asset check's step `<asset>_<check>` shows as `<check>` when the check's name
    already starts with the asset's (`captions_captions_complete` -> `captions_complete`)."""
    name = step_key.split(".")[-1]
    for i, char in enumerate(name):
        if char == "_" and name[i + 1 :].startswith(name[:i] + "_"):
            return name[i + 1 :]
    return name


class RunProgress:
    """Print a run's progress while it executes (`with RunProgress(instance, run_id, shard, stages): job.execute...`).

    `stages` is the number of steps expected (for "stage i/n"); events are polled every `interval_s`."""

    def __init__(self, instance, run_id: str, shard: str, stages: int, out: TextIO | None = None, interval_s=0.5):
        self.instance = instance
        self.run_id = run_id
        self.shard = shard
        self.stages = stages
        self.out = out or sys.stdout
        self.interval_s = interval_s
        self._cursor: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: dict[str, float] = {}
        self._done = 0
        self._t0 = time.monotonic()

    def __enter__(self) -> RunProgress:
        self._thread = threading.Thread(target=self._loop, name="ultraedit-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.poll()  # whatever arrived after the last tick

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the run not being stored yet, a locked SQLite file: try again
                pass

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def poll(self) -> None:
        """Read the events stored since the last poll and print their lines."""
        while True:
            conn = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, limit=500)
            for record in conn.records:
                self.handle(record.event_log_entry)
            self._cursor = conn.cursor
            if not conn.has_more:
                return

    def handle(self, entry) -> None:
        from dagster import DagsterEventType

        now = time.monotonic()
        event = entry.dagster_event
        step = entry.step_key
        if event is None:
            m = _PROGRESS.match(entry.user_message or "")
            if m and step:
                elapsed = now - self._started.get(step, now)
                msg = progress_message(m["shard"], int(m["done"]), int(m["total"]), elapsed, m["unit"])
                self._print(f"    {_step_stage(step)} {msg.removeprefix('progress ')}")
            return
        kind = event.event_type
        if kind == DagsterEventType.STEP_START and step:
            self._started[step] = now
            self._print(f"  [{self._done + 1}/{self.stages}] {_step_stage(step)}  {self.shard}  started")
        elif kind == DagsterEventType.ASSET_MATERIALIZATION and step:
            mat = event.event_specific_data.materialization
            rows = mat.metadata.get("rows")
            rows_n = getattr(rows, "value", rows)
            elapsed = now - self._started.get(step, now)
            rate = f", {rows_n / elapsed:.2f} rows/s" if isinstance(rows_n, int) and elapsed > 0 else ""
            count = f"{rows_n} rows" if isinstance(rows_n, int) else "done"
            asset = mat.asset_key.to_user_string()
            self._print(f"        {asset}  {mat.partition or ''}: {count} in {elapsed:.1f} s{rate}")
        elif kind == DagsterEventType.STEP_SUCCESS and step:
            self._done += 1
            total_elapsed = now - self._t0
            _, left = rate_and_eta(self._done, self.stages, total_elapsed)
            eta = f", ~{left:.0f} s left for this shard" if left is not None and self._done < self.stages else ""
            steps = f"{self._done}/{self.stages} steps"
            self._print(f"        {_step_stage(step)} ok ({steps}, {total_elapsed:.0f} s{eta})")
        elif kind == DagsterEventType.STEP_FAILURE and step:
            self._done += 1
            error = event.step_failure_data.error
            message = (error.message if error else "").strip().splitlines()
            self._print(f"        {_step_stage(step)} FAILED: {message[0] if message else 'see the run log'}")
