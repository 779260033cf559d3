-- What a kept sample costs (docs/method.md §8), per shard, edit type and mode: candidates generated, kept samples
-- (outcome 'selected'), candidates and UNet row-steps per kept sample, rounds per triplet, the pass rate of each
-- threshold among scored candidates, and the outcomes that rejected the rest. Rows written before outcomes existed
-- count as generated but never kept. Group further by edit_type or mode for fleet-wide figures.
with c as (
    select
        shard,
        coalesce(edit_type, 'unknown') as edit_type,
        coalesce(mode, 'unassigned') as mode,
        instruction_uid,
        status,
        coalesce(outcome, '') as outcome,
        coalesce(unet_row_steps, 0) as unet_row_steps,
        coalesce("round", 0) as round_index,
        pass_clip_sim_image, pass_clip_sim_dir, pass_clip_sim_source, pass_clip_sim_target, pass_dinov2_sim, pass_all
    from {{ source('lake', 'metric_scores') }}
),
generated as (
    select * from c where not starts_with(outcome, 'upstream_failed')
),
per_triplet as (
    select shard, edit_type, mode, instruction_uid, max(round_index) + 1 as rounds
    from generated group by 1, 2, 3, 4
),
agg as (
    select
        shard,
        edit_type,
        mode,
        count(*) as candidates_generated,
        count(*) filter (where outcome = 'selected') as kept,
        sum(unet_row_steps) as unet_row_steps,
        count(*) filter (where status = 'ok') as scored,
        count(*) filter (where status = 'ok' and pass_clip_sim_image) as pass_clip_sim_image,
        count(*) filter (where status = 'ok' and pass_clip_sim_dir) as pass_clip_sim_dir,
        count(*) filter (where status = 'ok' and pass_clip_sim_source) as pass_clip_sim_source,
        count(*) filter (where status = 'ok' and pass_clip_sim_target) as pass_clip_sim_target,
        count(*) filter (where status = 'ok' and pass_dinov2_sim) as pass_dinov2_sim,
        count(*) filter (where status = 'ok' and pass_all) as pass_all,
        count(*) filter (where starts_with(outcome, 'below_')) as below_threshold,
        count(*) filter (where outcome = 'passed_not_selected') as passed_not_selected,
        count(*) filter (where outcome = 'passed_triplet_dropped') as passed_triplet_dropped,
        count(*) filter (where starts_with(outcome, 'generation_failed')) as generation_failed
    from generated
    group by 1, 2, 3
),
rounds as (
    select shard, edit_type, mode, count(*) as triplets, avg(rounds) as mean_rounds_per_triplet
    from per_triplet group by 1, 2, 3
)
select
    a.shard || '/' || a.edit_type || '/' || a.mode as shard_edit_type_mode,
    a.*,
    r.triplets,
    r.mean_rounds_per_triplet,
    case when a.kept > 0 then a.candidates_generated::double / a.kept end as candidates_per_kept_sample,
    case when a.kept > 0 then a.unet_row_steps::double / a.kept end as unet_row_steps_per_kept_sample,
    case when a.scored > 0 then a.pass_clip_sim_image::double / a.scored end as pass_rate_clip_sim_image,
    case when a.scored > 0 then a.pass_clip_sim_dir::double / a.scored end as pass_rate_clip_sim_dir,
    case when a.scored > 0 then a.pass_clip_sim_source::double / a.scored end as pass_rate_clip_sim_source,
    case when a.scored > 0 then a.pass_clip_sim_target::double / a.scored end as pass_rate_clip_sim_target,
    case when a.scored > 0 then a.pass_dinov2_sim::double / a.scored end as pass_rate_dinov2_sim,
    case when a.scored > 0 then a.pass_all::double / a.scored end as pass_rate_all
from agg a
left join rounds r using (shard, edit_type, mode)
order by a.shard, a.edit_type, a.mode
