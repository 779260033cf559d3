"""The automation conditions of the summaries over every shard (read by `ops.automation.automation_sensor`).

Per-shard assets carry Dagster's `eager()`: a shard re-runs when one of its upstream shards changes, and a new shard is
materialized once its upstream exists.

`FOLLOWS_SHARDS` (`warehouse_views`, `release_card`: the assets that read the shard files themselves) rebuilds a
summary whenever a shard lands, without waiting for missing shards, and never loses a shard that lands while the
summary is being rebuilt. `eager()` loses it: it forgets a pending "a dependency changed" once the asset is requested
*or materialized*, and when both are seen on the same tick the forgetting wins. In the daemon test the release card
was written at 03:47:11, a `filtered_release` shard at 03:47:14, the next tick saw both, and the card stayed without
that shard for good. Here the change is forgotten only when the summary is *requested*, and a shard that lands after
the request (which the requested run may not have read) wins over it by timestamp: the summary waits for its running
build (`~in_progress`) and is built once more. The price: a summary built by hand between a change and the next tick
is rebuilt once more by automation.

`FOLLOWS_WAREHOUSE` (the dbt models, the threshold plots) is `eager()` without waiting for missing shards: they are
requested in the same tick as the `warehouse_views` / `threshold_sweep` they read, so they follow its rebuilds.
"""

import dagster as dg

FOLLOWS_SHARDS = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated()).since(
        dg.AutomationCondition.newly_requested()
    )
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("follows_shards")

FOLLOWS_WAREHOUSE = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())
