-- Per shard: candidates, failures, pass rate, kept samples.
with scores as (
    select
        shard,
        count(*) as candidates,
        count(*) filter (where status = 'failed') as failed,
        count(*) filter (where status = 'ok') as scored,
        count(*) filter (where status = 'ok' and pass_all) as passed,
        count(distinct instruction_uid) as triplets
    from {{ source('lake', 'metric_scores') }}
    group by shard
),
kept as (
    select
        shard,
        count(*) as kept,
        count(*) filter (where split = 'free_form') as kept_free_form,
        count(*) filter (where split = 'region') as kept_region,
        count(distinct instruction_uid) as triplets_kept
    from {{ source('lake', 'filtered_release') }}
    group by shard
)
select
    s.shard,
    s.candidates,
    s.failed,
    s.scored,
    s.passed,
    case when s.scored > 0 then s.passed::double / s.scored else 0.0 end as pass_rate,
    case when s.candidates > 0 then s.failed::double / s.candidates else 0.0 end as failed_fraction,
    s.triplets,
    coalesce(k.triplets_kept, 0) as triplets_kept,
    coalesce(k.kept, 0) as kept,
    coalesce(k.kept_free_form, 0) as kept_free_form,
    coalesce(k.kept_region, 0) as kept_region
from scores s
left join kept k using (shard)
order by s.shard
