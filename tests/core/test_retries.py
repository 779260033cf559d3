"""One retry mechanism for every asset: transient errors are retried by TRANSIENT_RETRY_POLICY, deterministic ones
fail after a single attempt (issue 14, item 4 of the audit)."""

import dagster as dg
import pytest

from ultraedit_dagster.core import retries
from ultraedit_dagster.core.partitions import materialize_each_shard

FAST = dg.RetryPolicy(max_retries=3, delay=0.01, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def _attempts(result, step_key):
    """How many times the step started (1 + retries)."""
    return sum(1 for e in result.all_events if e.step_key == step_key and e.event_type_value == "STEP_START") + sum(
        1 for e in result.all_events if e.step_key == step_key and e.event_type_value == "STEP_RESTARTED"
    )


def test_deterministic_error_fails_after_one_attempt():
    calls = []

    @dg.asset(retry_policy=FAST)
    @retries.retry_transient_only
    def guarded(context: dg.AssetExecutionContext) -> int:
        calls.append(1)
        raise ValueError("selected 54 candidates but 53 found")

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize([guarded], instance=inst, raise_on_error=False)
    assert not result.success and len(calls) == 1
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "guarded: ValueError: selected 54" in failure.step_failure_data.error.message


def test_transient_error_is_retried_until_it_succeeds():
    calls = []

    @dg.asset(retry_policy=FAST)
    @retries.retry_transient_only
    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return 1

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize([flaky], instance=inst)
    assert result.success and len(calls) == 3
    assert sum(1 for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY") == 2


def test_without_the_decorator_the_policy_retries_everything():
    """Why the decorator exists: Dagster's RetryPolicy alone retries a deterministic error."""
    calls = []

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0.01))
    def unguarded() -> int:
        calls.append(1)
        raise ValueError("bad data")

    with dg.DagsterInstance.ephemeral() as inst:
        assert not dg.materialize([unguarded], instance=inst, raise_on_error=False).success
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("cause", "retried"), [(ValueError("bad row"), False), (ConnectionResetError("reset"), True), (None, False)]
)
def test_a_failure_is_retried_only_for_a_transient_cause(cause, retried):
    """materialize_each_shard raises dg.Failure (allow_retries=True) `from` the first shard's error: the decorator
    keeps it retryable only when that error is transient; a guard's bare dg.Failure is never retried."""

    def body():
        failure = dg.Failure(description="1 of 2 shards failed", metadata={"failed_shards": ["a-00000"]})
        if cause is None:
            raise failure
        raise failure from cause

    with pytest.raises(dg.Failure) as info:
        retries.retry_transient_only(body)()
    assert info.value.allow_retries is retried
    assert info.value.description == "1 of 2 shards failed"
    assert info.value.metadata["failed_shards"].value == ["a-00000"]


def test_multi_shard_run_with_a_deterministic_shard_error_is_not_retried():
    calls = []
    parts = dg.StaticPartitionsDefinition(["s-00000", "s-00001"])

    @dg.asset(partitions_def=parts, retry_policy=FAST, backfill_policy=dg.BackfillPolicy.single_run())
    @retries.retry_transient_only
    def per_shard(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        def one(shard):
            calls.append(shard)
            if shard == "s-00001":
                raise KeyError("missing column")
            return {"rows": 1}

        return materialize_each_shard(context, one)

    with dg.DagsterInstance.ephemeral() as inst:
        result = dg.materialize(
            [per_shard],
            instance=inst,
            partition_key=None,
            raise_on_error=False,
            tags={"dagster/asset_partition_range_start": "s-00000", "dagster/asset_partition_range_end": "s-00001"},
        )
    assert not result.success
    assert calls == ["s-00000", "s-00001"]  # one attempt, both shards tried once


def test_generator_bodies_stay_generators():
    @retries.retry_transient_only
    def gen():
        yield 1
        raise TypeError("bad config")

    it = gen()
    assert next(it) == 1
    with pytest.raises(dg.Failure) as info:
        next(it)
    assert info.value.allow_retries is False and "gen: TypeError: bad config" in info.value.description


def test_every_stage_asset_with_a_retry_policy_classifies_its_errors():
    from ultraedit_dagster.editing import assets as editing
    from ultraedit_dagster.regions import assets as regions
    from ultraedit_dagster.release import assets as release
    from ultraedit_dagster.scoring import assets as scoring
    from ultraedit_dagster.sources import assets as sources
    from ultraedit_dagster.text import assets as text

    with_policy = [
        a for m in (sources, text, regions, editing, scoring, release) for a in m.assets if a.op.retry_policy
    ]
    names = {a.op.name for a in with_policy}
    wanted = {"source_images", "captions", "edit_instructions", "region_masks", "filtered_release", "release_card"}
    assert wanted <= names
    assert len(with_policy) >= 7  # the generate-and-score step too
    assert [a.op.name for a in with_policy if not retries.classifies_errors(a)] == []
