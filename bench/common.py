"""Shared helpers for the benchmarks: machine description, fresh homes, demo-based manifests, timers, figures.

No bench passes or fails: each returns figures (value, unit, target, met) that run_all prints and writes as JSON.
`BENCH_QUICK=1` shrinks every bench to a smoke run (smaller sizes, fewer repeats); quick figures are not comparable
with full ones and say so in their JSON (`quick: true`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEMO_DIR = REPO_ROOT / "ultraedit_dagster" / "demo_data"
# environment a bench child must not inherit from the caller (it points at the user's own state)
STATE_ENV = (
    "ULTRAEDIT_HOME",
    "DAGSTER_HOME",
    "ULTRAEDIT_LAKE",
    "ULTRAEDIT_WAREHOUSE",
    "ULTRAEDIT_INBOX",
    "ULTRAEDIT_INBOX_SHARD_SIZE",
    "ULTRAEDIT_PROFILE",
)


def quick() -> bool:
    return os.environ.get("BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")


# -- figures --------------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One number a bench reports. `target` is a human-readable goal ('<= 1.2'); `met` None when there is none."""

    name: str
    value: float | int | str | None
    unit: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class BenchResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what could not be measured, and why
    quick: bool = False
    error: str | None = None
    seconds: float = 0.0

    def add(
        self, name: str, value, unit: str = "", target: str = "", met: bool | None = None, note: str = ""
    ) -> Figure:
        fig = Figure(name, _round(value), unit, target, met, note)
        self.figures.append(fig)
        return fig

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _round(v):
    if isinstance(v, float):
        if v != v:  # NaN
            return None
        return round(v, 4) if abs(v) < 100 else round(v, 2)
    return v


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.1f}"
        if abs(v) >= 1:
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_result(res: BenchResult) -> None:
    print(f"\n## {res.title}{'  (QUICK smoke run)' if res.quick else ''}")
    if res.error:
        print(f"ERROR: {res.error.splitlines()[-1] if res.error else ''}")
    for f in res.figures:
        status = "" if f.met is None else ("  [target met]" if f.met else "  [target MISSED]")
        target = f"  (target {f.target})" if f.target else ""
        note = f"  - {f.note}" if f.note else ""
        print(f"  {f.name}: {fmt(f.value)} {f.unit}{target}{status}{note}")
    for s in res.skipped:
        print(f"  not measured: {s}")
    for n in res.notes:
        print(f"  note: {n}")
    sys.stdout.flush()


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# -- machine ------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, torch version, device: printed with every table of figures."""
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info["cpu"] = cpu or "unknown"
    info["cores"] = os.cpu_count()
    with contextlib.suppress(AttributeError, OSError):
        info["cores_available"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["device"] = f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
        else:
            info["device"] = f"cpu ({torch.get_num_threads()} torch threads)"
    except Exception as exc:  # noqa: BLE001 - described, not fatal
        info["torch"] = f"unavailable ({type(exc).__name__})"
        info["device"] = "cpu"
    for mod in ("dagster", "duckdb", "pyarrow"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(OSError, ValueError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, torch {m.get('torch')}, "
        f"device {m.get('device')}, python {m.get('python')}"
    )


# -- fresh state ----------------------------------------------------------------------------------------------------


def clean_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """os.environ without the user's state variables; ULTRAEDIT_HOME / DAGSTER_HOME under `home` when given."""
    env = {k: v for k, v in os.environ.items() if k not in STATE_ENV}
    env["ULTRAEDIT_PROFILE"] = extra.pop("ULTRAEDIT_PROFILE", "tiny")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if home is not None:
        env["ULTRAEDIT_HOME"] = str(home)
        env["DAGSTER_HOME"] = str(home / "dagster")
    env.update(extra)
    return env


@contextlib.contextmanager
def temp_home(prefix: str = "ultraedit-bench-") -> Iterator[Path]:
    """A fresh ULTRAEDIT_HOME (deleted afterwards, whatever happens)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def patched_env(env: dict[str, str]) -> Iterator[None]:
    """Temporarily set these environment variables in this process."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_child(module: str, args: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> dict:
    """Run `python -m module args...` and parse the last stdout line as JSON; its stderr tail goes into errors."""
    cmd = [sys.executable, "-m", module, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(cwd or REPO_ROOT), capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout or "")[-3000:]
        raise RuntimeError(f"{module} {' '.join(args)} exited {proc.returncode} after {elapsed:.0f}s:\n{tail}")
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{module} printed no JSON result: {lines[-1][:300]}\n{proc.stderr[-2000:]}") from exc
    out.setdefault("process_seconds", elapsed)
    return out


# -- manifests built from the demo images -------------------------------------------------------------------------


def demo_rows() -> list[dict]:
    rows = []
    for line in (DEMO_DIR / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            r["image"] = str((DEMO_DIR / r["image"]).resolve())
            rows.append(r)
    return rows


VARIANTS = ("", "In the photo, ", "Seen up close, ", "In this picture, ", "Here, ", "Shown here, ")


def write_bench_manifest(path: Path, n: int) -> Path:
    """A JSONL manifest of `n` rows: the demo images repeated under distinct ids and (slightly varied) captions."""
    base = demo_rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(n):
            r = base[i % len(base)]
            copy = i // len(base)
            prefix = VARIANTS[copy % len(VARIANTS)]
            caption = r["caption"] if not prefix else prefix + r["caption"][0].lower() + r["caption"][1:]
            if copy >= len(VARIANTS):
                caption = f"{caption.rstrip('.')} (view {copy})."
            fh.write(
                json.dumps(
                    {
                        "id": f"{r['id']}-{i:05d}",
                        "image": r["image"],
                        "caption": caption,
                        "source": r.get("source"),
                        "license": r.get("license"),
                    }
                )
                + "\n"
            )
    return path


# -- timers around model calls --------------------------------------------------------------------------------------


class CallTimer:
    """Wraps callables so the time spent inside them is summed per label, exclusively: a wrapped call nested in
    another (a lazy model load inside an inference call) counts under its own label and not again under the outer
    one, so `total()` is the wall time spent inside any wrapped call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []
        self.installed: list[str] = []
        self.missing: list[str] = []

    def total(self) -> float:
        return sum(self.seconds.values())

    def wrap(self, label: str, fn: Callable) -> Callable:
        timer = self

        def timed(*args, **kwargs):
            stack = getattr(timer._local, "stack", None)
            if stack is None:
                stack = timer._local.stack = []
            frame = [0.0]  # time spent in wrapped calls nested inside this one
            stack.append(frame)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                stack.pop()
                if stack:
                    stack[-1][0] += dt
                with timer._lock:  # exclusive time: a nested call (e.g. a lazy load) is counted once, as itself
                    timer.seconds[label] = timer.seconds.get(label, 0.0) + dt - frame[0]
                    timer.calls[label] = timer.calls.get(label, 0) + 1

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        timed.__name__ = getattr(fn, "__name__", label)
        timed.__doc__ = getattr(fn, "__doc__", None)
        return timed

    def patch(self, module: str, attr_path: str, label: str) -> bool:
        """Wrap `module.attr_path` (e.g. 'resources.editor', 'EditorResource.generator'). Returns whether it worked."""
        import importlib

        where = f"{module}.{attr_path}"
        try:
            obj = importlib.import_module(module)
            *parents, name = attr_path.split(".")
            for p in parents:
                obj = getattr(obj, p)
            original = getattr(obj, name)
        except Exception as exc:  # noqa: BLE001 - a stage that does not exist (yet)
            self.missing.append(f"{where} ({type(exc).__name__}: {exc})"[:200])
            return False
        if isinstance(obj, type):
            raw = obj.__dict__.get(name, original)
            if isinstance(raw, (staticmethod, classmethod, property)):
                self.missing.append(f"{where} (is a {type(raw).__name__}; not wrapped)")
                return False
        wrapped = self.wrap(label, original)
        try:
            type.__setattr__(obj, name, wrapped) if isinstance(obj, type) else setattr(obj, name, wrapped)
        except Exception as exc:  # noqa: BLE001
            self.missing.append(f"{where} (cannot patch: {exc})"[:200])
            return False
        self.installed.append(where)

        def undo(obj=obj, name=name, original=original):
            if isinstance(obj, type):
                type.__setattr__(obj, name, original)
            else:
                setattr(obj, name, original)

        self._undo.append(undo)
        return True

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


# Model and encoder calls of every stage (module, attribute, label). Loaders are wrapped too: a lazy load is model
# time (and reported as its own label when it happens outside an inference call).
MODEL_CALLS: list[tuple[str, str, str]] = [
    ("ultraedit_dagster.text.resources", "CaptionerResource.caption", "captioner"),
    ("ultraedit_dagster.text.rows", "write_triplets", "instruction_writer(template)"),
    ("ultraedit_dagster.core.llm_client", "LLMClient.chat_many", "llm(chat_many)"),
    ("ultraedit_dagster.core.llm_client", "LLMClient.moderate", "llm(moderation)"),
    ("ultraedit_dagster.regions.resources", "TaggerResource.tag", "tagger"),
    ("ultraedit_dagster.regions.resources", "ObjectSelectorResource.select_many", "object_selector"),
    ("ultraedit_dagster.regions.resources", "GrounderResource.detect", "grounder"),
    ("ultraedit_dagster.regions.resources", "SegmenterResource.segment", "segmenter"),
    ("ultraedit_dagster.editing.generation", "PairGenerator.generate", "editor"),
    ("ultraedit_dagster.scoring.resources", "ScorerResource.score", "scorer"),
    # loaders (lazy, first use)
    ("ultraedit_dagster.models.editor", "load_editor", "load:editor"),
    ("ultraedit_dagster.models.clip", "load_clip", "load:clip"),
    ("ultraedit_dagster.models.dinov2", "load_dinov2", "load:dinov2"),
    ("ultraedit_dagster.models.captioner", "load_captioner", "load:captioner"),
    ("ultraedit_dagster.regions.resources", "TaggerResource.load", "load:tagger"),
    ("ultraedit_dagster.regions.resources", "GrounderResource.load", "load:grounder"),
    ("ultraedit_dagster.regions.resources", "SegmenterResource.load", "load:segmenter"),
]


def install_model_timers(timer: CallTimer | None = None) -> CallTimer:
    timer = timer or CallTimer()
    for module, attr, label in MODEL_CALLS:
        timer.patch(module, attr, label)
    return timer


def stopwatch() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0
