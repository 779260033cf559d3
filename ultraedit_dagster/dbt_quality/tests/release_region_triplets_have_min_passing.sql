-- A region triplet is released only when at least `min passing` of its scored candidates pass the thresholds it
-- carries (the region rule, docs/method.md §5), counted in metric_scores, not trusted from the release.
select shard, instruction_uid, any_value(min_passing) as min_passing, any_value(passing_in_scores) as passing_in_scores
from {{ ref('release_reconciliation') }}
where split = 'region'
group by shard, instruction_uid
having coalesce(any_value(passing_in_scores) < any_value(min_passing), true)
