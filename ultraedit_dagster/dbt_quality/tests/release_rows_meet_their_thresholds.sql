-- Every released row meets the thresholds and L1 band it carries (its split's, as the release wrote them); a row
-- carrying none, or a NaN / infinite metric, fails (docs/method.md §6).
select uid, split, shard, thresholds
from {{ ref('release_reconciliation') }}
where not meets_thresholds
