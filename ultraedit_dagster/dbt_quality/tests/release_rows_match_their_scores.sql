-- Every released row is a scored candidate with the same metrics in metric_scores. A warning, not an error: while a
-- shard is being re-materialized its new scores can land before its new release file (docs/method.md §6).
{{ config(severity = 'warn') }}
select uid, shard, in_scores, scores_match
from {{ ref('release_reconciliation') }}
where not (in_scores and scores_match)
