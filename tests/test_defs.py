"""Guards for moves and refactors, without materializing anything: the exact names the Definitions expose, and the
shape of the package's import graph (nothing imports the CLI; no import cycles).

The expected names are written out on purpose: a rename or a lost asset/check/job must change this file."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO

PACKAGE_DIR = REPO / "ultraedit_dagster"
PACKAGE = "ultraedit_dagster"
CLI = f"{PACKAGE}.cli"

SHARD_ASSETS = {
    "source_images",
    "captions",
    "edit_instructions",
    "region_masks",
    "edit_candidates",
    "metric_scores",
    "filtered_release",
}
DBT_MODELS = {
    "shard_quality",
    "edit_type_quality",
    "metric_summary",
    "threshold_sweep",
    "cost_per_kept_sample",
    "release_reconciliation",
    "recipe_comparison",
}
UNPARTITIONED_ASSETS = {"seed_triplets", "release_card", "warehouse_views", "threshold_plots", *DBT_MODELS}

# (asset, check name); the dbt ones are the tests in dbt_quality/models/schema.yml, named by dagster-dbt.
ASSET_CHECKS = {
    ("source_images", "source_images_failed_fraction"),
    ("source_images", "source_images_unique_uids"),
    ("captions", "captions_complete"),
    ("edit_instructions", "edit_instructions_failure_rates"),
    ("edit_instructions", "edit_instructions_valid"),
    ("region_masks", "region_masks_ok_rows_have_masks"),
    ("region_masks", "region_masks_qc_failure_rate"),
    ("region_masks", "region_masks_no_full_mask_for_local_edits"),
    ("region_masks", "region_masks_valid_masks"),
    ("edit_candidates", "edit_candidates_failure_rate"),
    ("edit_candidates", "edit_candidates_integrity"),
    ("metric_scores", "metric_scores_expectations"),
    ("metric_scores", "metric_scores_pass_rate"),
    ("metric_scores", "metric_scores_valid_ranges"),
    ("filtered_release", "filtered_release_images_decode"),
    ("filtered_release", "filtered_release_meets_thresholds"),
    ("filtered_release", "filtered_release_region_masks"),
    ("filtered_release", "filtered_release_unique_ids"),
    ("filtered_release", "filtered_release_valid_ranges"),
    ("shard_quality", "accepted_range_shard_quality_candidates__0"),
    ("shard_quality", "accepted_range_shard_quality_failed_fraction__1__0"),
    ("shard_quality", "accepted_range_shard_quality_kept__0"),
    ("shard_quality", "accepted_range_shard_quality_pass_rate__1__0"),
    ("shard_quality", "not_null_shard_quality_candidates"),
    ("shard_quality", "not_null_shard_quality_failed_fraction"),
    ("shard_quality", "not_null_shard_quality_kept"),
    ("shard_quality", "not_null_shard_quality_pass_rate"),
    ("shard_quality", "not_null_shard_quality_shard"),
    ("shard_quality", "unique_shard_quality_shard"),
    ("edit_type_quality", "accepted_range_edit_type_quality_mean_clip_sim_image__1___1"),
    ("edit_type_quality", "accepted_range_edit_type_quality_mean_ssim__1___1"),
    ("edit_type_quality", "accepted_range_edit_type_quality_pass_rate__1__0"),
    ("edit_type_quality", "accepted_values_edit_type_quality_mode__free_form__region__unassigned"),
    ("edit_type_quality", "not_null_edit_type_quality_edit_type_mode"),
    ("edit_type_quality", "not_null_edit_type_quality_mode"),
    ("edit_type_quality", "not_null_edit_type_quality_pass_rate"),
    ("edit_type_quality", "unique_edit_type_quality_edit_type_mode"),
    ("metric_summary", "accepted_range_metric_summary_mean__1___1"),
    ("metric_summary", "not_null_metric_summary_n"),
    ("metric_summary", "not_null_metric_summary_summary_key"),
    ("metric_summary", "unique_metric_summary_summary_key"),
    ("recipe_comparison", "accepted_range_recipe_comparison_pass_rate_all__1__0"),
    ("recipe_comparison", "not_null_recipe_comparison_recipe_mode_edit_type"),
    ("recipe_comparison", "unique_recipe_comparison_recipe_mode_edit_type"),
    ("threshold_sweep", "accepted_range_threshold_sweep_kept_samples__0"),
    ("threshold_sweep", "not_null_threshold_sweep_combo"),
    ("threshold_sweep", "not_null_threshold_sweep_kept_samples"),
    ("threshold_sweep", "unique_threshold_sweep_combo"),
    ("threshold_sweep", "not_null_threshold_sweep_profile_thresholds"),
    ("release_reconciliation", "unique_release_reconciliation_uid"),
    ("release_reconciliation", "not_null_release_reconciliation_uid"),
    ("release_reconciliation", "release_rows_meet_their_thresholds"),
    ("release_reconciliation", "release_triplets_respect_top_k"),
    ("release_reconciliation", "release_region_triplets_have_min_passing"),
    ("release_reconciliation", "release_rows_match_their_scores"),
}
JOBS = {
    "seed_pool": {"seed_triplets"},
    "shard_pipeline": SHARD_ASSETS,
    "release": {"warehouse_views", "release_card", "threshold_plots", *DBT_MODELS},
}
SENSORS = {"manifest_inbox_sensor", "ultraedit_automation_sensor", "dead_run_sensor"}
SCHEDULES = {"nightly_incremental_rebuild"}
RESOURCES = {
    "lake",
    "pipeline",
    "warehouse",
    "captioner",
    "instruction_writer",
    "tagger",
    "object_selector",
    "grounder",
    "segmenter",
    "editor",
    "scorer",
    "dbt",
}


# -- the Definitions --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    from ultraedit_dagster.definitions import defs  # imported here: other tests reload the module with their env

    return defs


@pytest.fixture(scope="module")
def graph(defs):
    return defs.resolve_asset_graph()


def test_asset_keys(graph):
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert keys == SHARD_ASSETS | UNPARTITIONED_ASSETS
    assert {key.to_user_string() for key in graph.materializable_asset_keys} == keys


def test_asset_checks(graph):
    assert {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys} == ASSET_CHECKS


def test_jobs_and_what_they_select(defs, graph):
    assert {job.name for job in defs.jobs or []} == set(JOBS)
    for name, assets in JOBS.items():
        job = defs.resolve_job_def(name)
        selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
        assert selected == assets, name
    assert defs.resolve_job_def("shard_pipeline").partitions_def == _shards()


def test_sensors_schedules_and_resources(defs):
    assert {sensor.name for sensor in defs.sensors or []} == SENSORS
    assert {schedule.name for schedule in defs.schedules or []} == SCHEDULES
    assert set(defs.resources or {}) == RESOURCES


def test_every_per_shard_asset_uses_the_shards_partitions(graph):
    shards = _shards()
    assert isinstance(shards, dg.DynamicPartitionsDefinition) and shards.name == "shards"
    for key in graph.get_all_asset_keys():
        name, partitions = key.to_user_string(), graph.get(key).partitions_def
        if name in SHARD_ASSETS:
            assert partitions == shards, f"{name}: {partitions}"
        else:
            assert partitions is None, f"{name} should be unpartitioned, has {partitions}"


def _shards():
    from ultraedit_dagster.core.partitions import shards

    return shards


# -- the import graph --------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST):
    """Every node, top level and inside functions/classes, except `if TYPE_CHECKING:` bodies (never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that `name` imports (absolute, relative, and importlib.import_module("...") by string)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def resolve(module: str) -> str | None:
        # the most specific package module the dotted name names (a namespace package is not a module)
        while module and module not in modules:
            module = module.rpartition(".")[0]
        return module or None

    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from X import Y`: Y is either the submodule X.Y or a name in X (resolve() falls back to X)
            targets = [base] if any(a.name == "*" for a in node.names) else [f"{base}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "import_module")
            )
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = resolve(target)
                if resolved and resolved != name:
                    found.add(resolved)
    return found


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    modules = _package_modules()
    assert CLI in modules and f"{PACKAGE}.definitions" in modules
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_import_graph_resolves_relative_and_function_level_imports(import_graph):
    # a sanity check of the walker itself, on edges the project has had since the stage folders were made
    assert f"{PACKAGE}.core.partitions" in import_graph[f"{PACKAGE}.definitions"]
    assert f"{PACKAGE}.definitions" in import_graph[CLI]


def test_nothing_in_the_package_imports_the_cli(import_graph):
    importers = sorted(name for name, imported in import_graph.items() if CLI in imported)
    print("modules importing", CLI, ":", importers)
    assert importers == [], f"{CLI} is the entry point; these modules import it: {importers}"


def test_no_import_cycles(import_graph):
    cycles = _cycles(import_graph)
    for cycle in cycles:
        print("import cycle:", " -> ".join(cycle))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) for every strongly connected component with more than one
    module (Tarjan; self-imports were dropped when the graph was built)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_one_cycle(graph, set(c)) for c in sorted(components)]


def _one_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first inside the component, back to start: a shortest cycle through it
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")
