"""Bench 6: LLM stage concurrency: edit triplets per second against the local OpenAI-compatible test server.

The server (tests/openai_test_server.py) runs in its own process with 200 ms of simulated latency per request and
answers every edit-triplet prompt with k = 3 triplets. The client side is exactly what the edit_instructions asset
runs: `InstructionWriterResource(backend="openai", endpoint=LLMEndpoint(max_concurrency=c))` (its LLMClient: openai
SDK, retries, cache) and `text.rows.instruction_rows(...)` over caption rows (the real UltraEdit prompt with 50
sampled instructions and 10 examples from the seed pool; parsing and validation of the replies). The reply cache is
a fresh empty folder per run, so every request goes to the server. Concurrency 1, 8 and 32 with 16, 64 and 256
captions (about 3.2 s, 1.6 s and 1.6 s of pure latency); triplets/s = ok triplet rows / wall seconds, median of 3
runs. Target: triplets/s at 32 >= 20 x triplets/s at 1."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from .common import REPO_ROOT, BenchResult, demo_rows, median, quick

LATENCY_S = 0.2
LEVELS = {1: 16, 8: 64, 32: 256}
QUICK_LEVELS = {1: 8, 8: 32, 32: 64}
TARGET = 20.0

SERVER_CODE = (
    "import sys, time; sys.path.insert(0, {tests!r});"
    "from openai_test_server import OpenAITestServer;"
    "s = OpenAITestServer(latency_s={lat}).start(); print(s.base_url, flush=True);"
    "sys.stdin.read()"  # runs until the parent closes stdin
)


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    code = SERVER_CODE.format(tests=str(REPO_ROOT / "tests"), lat=latency)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError(f"test server did not start (got {url!r})")
    return proc, url


def captions(n: int) -> list[dict]:
    from ultraedit_dagster.core.ids import make_uid

    base = demo_rows()
    out = []
    for i in range(n):
        r = base[i % len(base)]
        cap = r["caption"] if i < len(base) else f"{r['caption'].rstrip('.')} (view {i // len(base)})."
        out.append(
            {"uid": make_uid("bench-llm", i), "caption_short": cap, "caption_desc": cap, "status": "ok", "error": None}
        )
    return out


def one_run(url: str, concurrency: int, n: int, seeds) -> dict:
    from ultraedit_dagster.core.resources import LLMEndpoint
    from ultraedit_dagster.text.resources import InstructionWriterResource
    from ultraedit_dagster.text.rows import instruction_rows

    with tempfile.TemporaryDirectory(prefix="ultraedit-bench-llmcache-") as cache:
        writer = InstructionWriterResource(
            backend="openai",
            endpoint=LLMEndpoint(
                model="bench-model",
                base_url=url,
                api_key="bench-key",
                cache_dir=cache,
                max_concurrency=concurrency,
                max_retries=2,
                timeout_s=30,
            ),
        )
        client = writer.client()
        rows_in = captions(n)
        t0 = time.perf_counter()
        rows, stats = instruction_rows(
            rows_in,
            shard="bench-00000",
            profile="bench",
            seeds=seeds,
            global_seed=0,
            settings=writer.settings(),
            client=client,
        )
        dt = time.perf_counter() - t0
    ok = sum(1 for r in rows if r["status"] == "ok")
    return {
        "seconds": dt,
        "triplets": ok,
        "images": n,
        "triplets_per_s": ok / dt,
        "requests": client.requests_sent,
        "cache_hits": client.cache_hits,
        "failed_rows": len(rows) - ok,
    }


def run(context: dict | None = None) -> BenchResult:
    q = quick()
    res = BenchResult(
        "llm_concurrency", "LLM stage concurrency (OpenAI-compatible test server, 200 ms latency)", quick=q
    )
    from ultraedit_dagster.text.seeds import load_seeds

    seeds = load_seeds()
    levels = QUICK_LEVELS if q else LEVELS
    repeats = 1 if q else 3
    proc, url = start_server(LATENCY_S)
    per: dict[int, list[dict]] = {}
    try:
        one_run(url, 4, 4, seeds)  # warm-up: SDK import, first connections
        for _ in range(repeats):
            for c, n in levels.items():
                per.setdefault(c, []).append(one_run(url, c, n, seeds))
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    med = {c: median([r["triplets_per_s"] for r in runs]) for c, runs in per.items()}
    for c, n in levels.items():
        runs = per[c]
        res.add(
            f"triplets/s at concurrency {c}",
            med[c],
            "triplets/s",
            note=f"{n} captions, {runs[0]['triplets']} triplets, {median([r['seconds'] for r in runs]):.2f} s; "
            f"{runs[0]['requests']} requests, {runs[0]['cache_hits']} cache hits",
        )
    lo, hi = min(levels), max(levels)
    ratio = med[hi] / med[lo] if med.get(lo) else None
    res.add(
        f"speed-up {lo} -> {hi}",
        ratio,
        "x",
        f">= {TARGET}",
        None if ratio is None else ratio >= TARGET,
        note=f"ideal {hi}x (latency-bound)",
    )
    if 8 in med and med.get(lo):
        res.add(f"speed-up {lo} -> 8", med[8] / med[lo], "x", note="ideal 8x")
    failed = sum(r["failed_rows"] for runs in per.values() for r in runs)
    if failed:
        res.notes.append(f"{failed} failed rows across the runs")
    res.details = {
        "latency_s": LATENCY_S,
        "levels": {str(c): n for c, n in levels.items()},
        "repeats": repeats,
        "runs": {str(c): runs for c, runs in per.items()},
    }
    return res


if __name__ == "__main__":
    from .common import print_result

    print_result(run())
