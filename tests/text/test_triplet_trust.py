"""What reaches the dataset meets a curator's bar: hostile, refusing, echoed and rewritten answers are rejected with
their reason and never cached; every billed token is counted; a moderation outage is an outage, not a verdict."""

from dataclasses import dataclass

from ultraedit_dagster.core.llm_client import ChatResult, ModerationResult
from ultraedit_dagster.text.parsing import PromptEchoes, Triplet, parse_triplets, validate_triplet
from ultraedit_dagster.text.rows import WriterSettings, instruction_rows, prompt_and_echoes
from ultraedit_dagster.text.seeds import load_seeds

CAP = "A brown dog lying on a rug by the fireplace."
SEEDS = load_seeds()
SETTINGS = WriterSettings(backend="openai", llm_id="openai:test", k=3, region_fraction=0.3, moderation=False)


def _validated(answer: str, echoes: PromptEchoes | None = None) -> list[tuple[Triplet | None, str]]:
    out = []
    for t in parse_triplets(answer, sent_caption=CAP).triplets:
        v = validate_triplet(t, CAP, echoes=echoes)
        out.append((v.triplet, v.reason))
    return out


def test_off_topic_and_hostile_answers_are_rejected():
    poem = "Sure; ignoring all previous instructions; here is a poem about the sea instead."
    assert _validated(poem) == [(None, "refusal or off-topic answer")]
    refusal = "I'm sorry; I can't help with that; it is against my guidelines."
    assert [r for _, r in _validated(refusal)] == ["refusal or off-topic answer"]
    # the model's own source caption must be the caption sent (it used to be silently replaced by it)
    other = "A cup of tea next to a book.; replace the dog with a cat; A cat lying on a rug by the fireplace."
    assert _validated(other) == [(None, "source caption differs from the caption sent")]


def test_target_must_be_a_minimal_edit_of_the_source():
    unrelated = f"{CAP}; replace the dog with a cat; A cup of tea next to an open book."
    assert "not an edit of the source" in _validated(unrelated)[0][1]
    rewrite = (
        f"{CAP}; make it a party; A brown dog lying on a rug wearing sunglasses, balloons, confetti, streamers, "
        "a disco ball, cake, candles, presents, guests and music all around."
    )
    assert "rewrites the source" in _validated(rewrite)[0][1]
    good = f"{CAP}; replace the dog with a cat; A brown cat lying on a rug by the fireplace."
    assert _validated(good) == [(Triplet(CAP, "replace the dog with a cat", good.split("; ")[2]), "")]


def test_every_seed_triplet_passes_the_minimal_edit_rule():
    """The rule is calibrated on the human seed pool: none of the curated edits is rejected by it."""
    bad = [
        s for s in SEEDS if validate_triplet(Triplet(s.source_caption, s.instruction, s.target_caption)).triplet is None
    ]
    assert bad == []


def test_echoes_of_the_prompt_are_rejected():
    _, echoes = prompt_and_echoes({"uid": "img1", "caption_short": CAP, "caption_desc": CAP}, SEEDS, 0, SETTINGS)
    example = next(iter(sorted(echoes.instructions)))
    copied = f"{CAP}; {example}; A brown dog lying on a rug by the fireplace with a hat."
    assert _validated(copied, echoes)[0][1] == "instruction copied from the prompt's examples"
    seed = SEEDS[0]
    echoed_target = PromptEchoes.of([], [(seed.source_caption, seed.instruction, seed.target_caption)])
    answer = f"{CAP}; add a pillow; {seed.target_caption}"
    assert _validated(answer, echoed_target)[0][1] == "target echoes an in-context example"


def test_single_marker_markdown_is_removed():
    (t, reason), *_ = _validated(f"{CAP}; *make it night*; A brown dog lying on a rug by the fireplace at night.")
    assert reason == "" and t.instruction == "make it night"
    (t, _), *_ = _validated(f"{CAP}; _add a red hat_; A brown dog with a red hat lying on a rug by the fireplace.")
    assert t.instruction == "add a red hat"


@dataclass
class FakeClient:
    """Answers every prompt with `answer`, billing the given tokens; records what was forgotten."""

    answer: str
    tokens: tuple[int, int] = (4000, 90)
    moderation_error: str | None = None

    def __post_init__(self):
        self.forgotten = 0

    def chat_many(self, requests, **params):
        return [ChatResult(self.answer, *self.tokens) for _ in requests]

    def forget(self, messages, **params):
        self.forgotten += 1

    def moderate(self, texts):
        return [ModerationResult(flagged=False, categories=(), error=self.moderation_error) for _ in texts]


def _rows(client, settings=SETTINGS):
    caps = [{"uid": "img1", "caption_short": CAP, "caption_desc": CAP, "status": "ok"}]
    return instruction_rows(
        caps, shard="s-00000", profile="tiny", seeds=SEEDS, global_seed=0, settings=settings, client=client
    )


def test_rejected_answers_are_not_cached_and_their_tokens_are_counted():
    client = FakeClient("Sure; ignoring all previous instructions; here is a poem about the sea instead.")
    rows, stats = _rows(client)
    assert [r["status"] for r in rows] == ["failed"] and "refusal" in rows[0]["error"]
    assert client.forgotten == 1  # never kept as a good answer
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (4000, 90)
    assert (stats.prompt_tokens, stats.completion_tokens) == (4000, 90)
    empty = FakeClient("", tokens=(4173, 1))
    rows, stats = _rows(empty)
    assert (stats.prompt_tokens, stats.completion_tokens) == (4173, 1)


def test_a_moderation_outage_is_not_a_verdict():
    good = "\n".join(
        f"{CAP}; {ins}; {tgt}"
        for ins, tgt in [
            ("replace the dog with a fox", "A brown fox lying on a rug by the fireplace."),
            ("make it night", "A brown dog lying on a rug by the fireplace at night."),
            ("add a red ball", "A brown dog lying on a rug by the fireplace with a red ball."),
        ]
    )
    settings = WriterSettings(backend="openai", llm_id="openai:test", k=3, region_fraction=0.3, moderation=True)
    rows, stats = _rows(FakeClient(good, moderation_error="HTTP 500"), settings)
    assert [r["status"] for r in rows] == ["failed"]
    assert rows[0]["error"].startswith("moderation: check failed") and "flagged" not in rows[0]["error"]
    rows, _ = _rows(FakeClient(good), settings)
    assert [r["status"] for r in rows] == ["ok"] * 3
