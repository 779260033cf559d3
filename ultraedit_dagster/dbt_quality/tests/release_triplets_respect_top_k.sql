-- No triplet releases more rows than its split's top k (as the rows' selection rule states it; none stated fails).
select shard, instruction_uid, split, any_value(top_k) as top_k, count(*) as released
from {{ ref('release_reconciliation') }}
group by shard, instruction_uid, split
having count(*) > coalesce(any_value(top_k), 0)
