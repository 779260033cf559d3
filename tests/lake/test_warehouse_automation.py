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
