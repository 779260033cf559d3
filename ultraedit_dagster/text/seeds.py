"""The human seed pool: loading, validation, and deterministic in-context sampling per image.

The pool ships as package data (`ultraedit_dagster/data/seed_triplets.tsv`): one triplet per line, tab-separated
`edit_type, source_caption, instruction, target_caption`, a header line, `#` comments. It was written for this project
(not copied from a dataset): at least 12 triplets for each of the nine UltraEdit edit types, and each target caption
changes only what its instruction changes.

No Dagster imports here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa

from ultraedit_dagster.core.ids import make_uid, rng_for
from ultraedit_dagster.text.edit_types import EDIT_TYPES
from ultraedit_dagster.text.parsing import MAX_CAPTION_WORDS, normalize_caption, word_count

HEADER = ("edit_type", "source_caption", "instruction", "target_caption")
N_INSTRUCTIONS = 50  # UltraEdit: 50 sampled instructions per prompt
N_EXAMPLES = 10  # and 10 sampled full triplets

SEED_SCHEMA = pa.schema(
    [
        ("seed_id", pa.string()),
        ("line", pa.int64()),
        ("edit_type", pa.string()),
        ("source_caption", pa.string()),
        ("instruction", pa.string()),
        ("target_caption", pa.string()),
    ]
)


class SeedFileError(ValueError):
    """A seed file that breaks the rules; the message lists every bad line by number."""


@dataclass(frozen=True)
class SeedTriplet:
    seed_id: str
    line: int
    edit_type: str
    source_caption: str
    instruction: str
    target_caption: str


def default_seed_path() -> Path:
    return Path(str(resources.files("ultraedit_dagster") / "data" / "seed_triplets.tsv"))


def parse_seed_text(text: str, name: str = "seed file") -> list[SeedTriplet]:
    """Validate and parse a seed file; raise SeedFileError naming every bad line."""
    errors: list[str] = []
    seeds: list[SeedTriplet] = []
    seen: dict[tuple[str, str, str], int] = {}
    header_seen = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if not header_seen and tuple(p.lower() for p in parts) == HEADER:
            header_seen = True
            continue
        if len(parts) != 4:
            errors.append(
                f"line {lineno}: expected 4 tab-separated fields (edit_type, source, instruction, target), "
                f"got {len(parts)}"
            )
            continue
        edit_type, source, instruction, target = parts
        problems = []
        if edit_type not in EDIT_TYPES:
            problems.append(f"unknown edit type {edit_type!r}")
        if not source or not instruction or not target:
            problems.append("empty source, instruction or target")
        elif normalize_caption(source) == normalize_caption(target):
            problems.append("target equals source (case and trailing punctuation ignored)")
        for label, caption in (("source", source), ("target", target)):
            if word_count(caption) > MAX_CAPTION_WORDS:
                problems.append(f"{label} caption has {word_count(caption)} words (max {MAX_CAPTION_WORDS})")
        key = (normalize_caption(source), normalize_caption(instruction), normalize_caption(target))
        if not problems and key in seen:
            problems.append(f"duplicate of line {seen[key]}")
        if problems:
            errors.append(f"line {lineno}: " + "; ".join(problems))
            continue
        seen[key] = lineno
        seeds.append(SeedTriplet(make_uid("seed", *key), lineno, edit_type, source, instruction, target))
    if errors:
        shown = errors[:50]
        more = f"\n... and {len(errors) - 50} more" if len(errors) > 50 else ""
        raise SeedFileError(f"{name}: {len(errors)} bad line(s):\n" + "\n".join(shown) + more)
    if not seeds:
        raise SeedFileError(f"{name}: no seed triplets found")
    return seeds


def load_seeds(path: str | Path | None = None) -> list[SeedTriplet]:
    p = Path(path) if path else default_seed_path()
    return parse_seed_text(p.read_text(encoding="utf-8"), name=str(p))


def counts_per_type(seeds: list[SeedTriplet]) -> dict[str, int]:
    return {t: sum(1 for s in seeds if s.edit_type == t) for t in EDIT_TYPES}


def seeds_to_table(seeds: list[SeedTriplet]) -> pa.Table:
    return pa.Table.from_pylist([asdict(s) for s in seeds], schema=SEED_SCHEMA)


def seeds_from_table(table: pa.Table) -> list[SeedTriplet]:
    return [SeedTriplet(**{k: r[k] for k in SEED_SCHEMA.names}) for r in table.to_pylist()]


@dataclass(frozen=True)
class InContextSample:
    instructions: list[str]  # the instruction list shown in the prompt
    examples: list[SeedTriplet]  # the full triplets shown in the prompt
    seed_ids: list[str]  # ids of everything shown, instructions first


def sample_in_context(
    seeds: list[SeedTriplet],
    image_uid: str,
    global_seed: int,
    n_instructions: int = N_INSTRUCTIONS,
    n_examples: int = N_EXAMPLES,
) -> InContextSample:
    """The in-context material for one image: drawn without replacement from the pool, deterministically from
    (global seed, image uid). Order of the pool is fixed by seed_id, so the file's line order does not matter."""
    pool = sorted(seeds, key=lambda s: s.seed_id)
    rng: np.random.Generator = rng_for(global_seed, image_uid, "in_context")
    n_i = min(n_instructions, len(pool))
    n_e = min(n_examples, len(pool))
    instr_idx = rng.choice(len(pool), size=n_i, replace=False)
    ex_idx = rng.choice(len(pool), size=n_e, replace=False)
    instructions = [pool[i].instruction for i in instr_idx]
    examples = [pool[i] for i in ex_idx]
    return InContextSample(
        instructions, examples, [pool[i].seed_id for i in instr_idx] + [pool[i].seed_id for i in ex_idx]
    )
