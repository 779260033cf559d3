"""Code location for tests/ops/test_multirun.py: the project's real per-shard assets and resources, without sensors and
schedules (so only the backfills under test launch runs).

ULTRAEDIT_MULTIRUN_ASSETS (comma-separated, default `source_images`) picks which per-shard assets the location holds:
the full graph with tiny models takes minutes per shard on a 2-core CI box, so CI exercises the cheap stage; set it to
`all` on a bigger machine to run the whole pipeline in parallel.
"""

import os

import dagster as dg

import ultraedit_dagster.definitions as _project

_wanted = os.environ.get("ULTRAEDIT_MULTIRUN_ASSETS", "source_images")
_shard_assets = [
    a for a in _project.shard_assets if _wanted == "all" or any(k.path[-1] in _wanted.split(",") for k in a.keys)
]

defs = dg.Definitions(
    assets=_shard_assets if _wanted != "all" else list(_project.defs.assets or []),
    asset_checks=[] if _wanted != "all" else list(_project.defs.asset_checks or []),
    resources=dict(_project.defs.resources or {}),
    # Steps run inside their run's process: each run is still its own OS process launched by the daemon (3 in
    # flight), but a step does not pay a second interpreter start + import of torch on a 2-core CI box.
    executor=dg.in_process_executor,
)
