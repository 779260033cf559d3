"""The warehouse follows the shards by automation alone (issue 13 item 8: only the views did, the dbt models never
re-ran): a shard materialized while another shard is still missing requests the views and every dbt model."""

import dagster as dg


def test_a_new_shard_requests_the_views_and_the_dbt_models_even_with_other_shards_missing():
    from ultraedit_dagster.definitions import defs

    graph = defs.resolve_asset_graph()
    summaries = {
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).partitions_def is None
        and graph.get(k).is_materializable
        and k.to_user_string() != "seed_triplets"
    }
    assert {"warehouse_views", "shard_quality", "edit_type_quality", "metric_summary", "threshold_sweep"} <= summaries
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", ["w-00000", "w-00001"])
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert not [name for name in summaries if first.get_num_requested(dg.AssetKey(name))]
        for asset in ("source_images", "captions", "edit_instructions", "region_masks", "edit_candidates"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="w-00000"))
        for asset in ("metric_scores", "filtered_release"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="w-00000"))
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        not_requested = [name for name in summaries if second.get_num_requested(dg.AssetKey(name)) != 1]
        assert not_requested == []


SHARD_ASSETS = ("source_images", "captions", "edit_instructions", "region_masks", "edit_candidates")
SHARD_FOLLOWERS = ("warehouse_views", "release_card")  # they read the shard files themselves


def _land(instance, shard: str) -> None:
    for asset in (*SHARD_ASSETS, "metric_scores", "filtered_release"):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=shard))


def _first_shard_lands(defs, instance):
    """Two shards registered, the first one lands: every shard follower is requested. Returns that tick's result."""
    instance.add_dynamic_partitions("shards", ["w-00000", "w-00001"])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _land(instance, "w-00000")
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert all(second.get_num_requested(dg.AssetKey(a)) == 1 for a in SHARD_FOLLOWERS)
    return second


def test_a_shard_landing_just_after_the_summaries_are_rebuilt_is_not_lost():
    """Seen in the daemon test: the release card was written at 03:47:11, a filtered_release shard at 03:47:14, the
    next tick saw both, and with `eager()` the card never followed that shard. Each summary that reads the shard files
    must be requested again; once rebuilt with nothing new, nothing more is requested."""
    from ultraedit_dagster.definitions import defs

    with dg.instance_for_test() as instance:
        second = _first_shard_lands(defs, instance)
        # the requested builds finish, and another shard lands just after them, before the next tick
        for asset in SHARD_FOLLOWERS:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset))
        _land(instance, "w-00001")
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        lost = [a for a in SHARD_FOLLOWERS if third.get_num_requested(dg.AssetKey(a)) != 1]
        assert lost == []
        # rebuilt with every shard: nothing new, nothing requested (no loop)
        for asset in SHARD_FOLLOWERS:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset))
        fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
        assert [a for a in SHARD_FOLLOWERS if fourth.get_num_requested(dg.AssetKey(a))] == []
        fifth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=fourth.cursor)
        assert [a for a in SHARD_FOLLOWERS if fifth.get_num_requested(dg.AssetKey(a))] == []


def test_a_shard_landing_after_the_request_but_before_the_next_tick_is_built_again():
    """The requested build may have read the lake before the shard landed: the shard's timestamp is later than the
    request, so the summary is requested once more (after the running build; here nothing is in progress)."""
    from ultraedit_dagster.definitions import defs

    with dg.instance_for_test() as instance:
        second = _first_shard_lands(defs, instance)
        _land(instance, "w-00001")  # the requested builds have not finished yet
        third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert [a for a in SHARD_FOLLOWERS if third.get_num_requested(dg.AssetKey(a)) != 1] == []
