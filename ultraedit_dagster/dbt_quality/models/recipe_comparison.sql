-- Recipes side by side (docs/method.md §12): per recipe, mode and edit type (edit_type 'all': every edit type of
-- the recipe and mode), the candidates generated and kept, the pass rate of each threshold among scored candidates,
-- the mean and 10/50/90% quantiles of each metric over scored candidates, and what a kept sample cost in candidates
-- and UNet row-steps. Rows written before recipes were recorded count as recipe 'ultraedit', version 'ultraedit-v1'.
-- Model seconds are not in the rows (rows hold deterministic costs only, so re-runs stay byte-identical): they are
-- in each step's materialization metadata and the release card; unet_row_steps is their deterministic measure here.
-- Pass rates compare recipes under each recipe's own thresholds (the `thresholds` column of metric_scores).
with c as (
    select
        coalesce(recipe, 'ultraedit') as recipe,
        coalesce(recipe_version, 'ultraedit-v1') as recipe_version,
        coalesce(mode, 'unassigned') as mode,
        coalesce(edit_type, 'unknown') as edit_type,
        status,
        coalesce(outcome, '') as outcome,
        coalesce(unet_row_steps, 0) as unet_row_steps,
        clip_sim_source, clip_sim_target, clip_sim_dir, clip_sim_image, dinov2_sim, ssim, l1,
        pass_clip_sim_image, pass_clip_sim_dir, pass_clip_sim_source, pass_clip_sim_target, pass_dinov2_sim, pass_all
    from {{ source('lake', 'metric_scores') }}
),
generated as (
    select * from c where not starts_with(outcome, 'upstream_failed')
),
agg as (
    select
        recipe,
        mode,
        case when grouping(edit_type) = 1 then 'all' else edit_type end as edit_type_key,
        string_agg(distinct recipe_version, ',' order by recipe_version) as recipe_versions,
        count(*) as candidates_generated,
        count(*) filter (where status = 'ok') as scored,
        count(*) filter (where outcome = 'selected') as kept,
        sum(unet_row_steps) as unet_row_steps,
        count(*) filter (where status = 'ok' and pass_clip_sim_image) as pass_clip_sim_image,
        count(*) filter (where status = 'ok' and pass_clip_sim_dir) as pass_clip_sim_dir,
        count(*) filter (where status = 'ok' and pass_clip_sim_source) as pass_clip_sim_source,
        count(*) filter (where status = 'ok' and pass_clip_sim_target) as pass_clip_sim_target,
        count(*) filter (where status = 'ok' and pass_dinov2_sim) as pass_dinov2_sim,
        count(*) filter (where status = 'ok' and pass_all) as pass_all,
        avg(clip_sim_source) filter (where status = 'ok' and isfinite(clip_sim_source)) as mean_clip_sim_source,
        quantile_cont(clip_sim_source, 0.1) filter (where status = 'ok' and isfinite(clip_sim_source)) as p10_clip_sim_source,
        quantile_cont(clip_sim_source, 0.5) filter (where status = 'ok' and isfinite(clip_sim_source)) as p50_clip_sim_source,
        quantile_cont(clip_sim_source, 0.9) filter (where status = 'ok' and isfinite(clip_sim_source)) as p90_clip_sim_source,
        avg(clip_sim_target) filter (where status = 'ok' and isfinite(clip_sim_target)) as mean_clip_sim_target,
        quantile_cont(clip_sim_target, 0.1) filter (where status = 'ok' and isfinite(clip_sim_target)) as p10_clip_sim_target,
        quantile_cont(clip_sim_target, 0.5) filter (where status = 'ok' and isfinite(clip_sim_target)) as p50_clip_sim_target,
        quantile_cont(clip_sim_target, 0.9) filter (where status = 'ok' and isfinite(clip_sim_target)) as p90_clip_sim_target,
        avg(clip_sim_dir) filter (where status = 'ok' and isfinite(clip_sim_dir)) as mean_clip_sim_dir,
        quantile_cont(clip_sim_dir, 0.1) filter (where status = 'ok' and isfinite(clip_sim_dir)) as p10_clip_sim_dir,
        quantile_cont(clip_sim_dir, 0.5) filter (where status = 'ok' and isfinite(clip_sim_dir)) as p50_clip_sim_dir,
        quantile_cont(clip_sim_dir, 0.9) filter (where status = 'ok' and isfinite(clip_sim_dir)) as p90_clip_sim_dir,
        avg(clip_sim_image) filter (where status = 'ok' and isfinite(clip_sim_image)) as mean_clip_sim_image,
        quantile_cont(clip_sim_image, 0.1) filter (where status = 'ok' and isfinite(clip_sim_image)) as p10_clip_sim_image,
        quantile_cont(clip_sim_image, 0.5) filter (where status = 'ok' and isfinite(clip_sim_image)) as p50_clip_sim_image,
        quantile_cont(clip_sim_image, 0.9) filter (where status = 'ok' and isfinite(clip_sim_image)) as p90_clip_sim_image,
        avg(dinov2_sim) filter (where status = 'ok' and isfinite(dinov2_sim)) as mean_dinov2_sim,
        quantile_cont(dinov2_sim, 0.1) filter (where status = 'ok' and isfinite(dinov2_sim)) as p10_dinov2_sim,
        quantile_cont(dinov2_sim, 0.5) filter (where status = 'ok' and isfinite(dinov2_sim)) as p50_dinov2_sim,
        quantile_cont(dinov2_sim, 0.9) filter (where status = 'ok' and isfinite(dinov2_sim)) as p90_dinov2_sim,
        avg(ssim) filter (where status = 'ok' and isfinite(ssim)) as mean_ssim,
        quantile_cont(ssim, 0.1) filter (where status = 'ok' and isfinite(ssim)) as p10_ssim,
        quantile_cont(ssim, 0.5) filter (where status = 'ok' and isfinite(ssim)) as p50_ssim,
        quantile_cont(ssim, 0.9) filter (where status = 'ok' and isfinite(ssim)) as p90_ssim,
        avg(l1) filter (where status = 'ok' and isfinite(l1)) as mean_l1,
        quantile_cont(l1, 0.1) filter (where status = 'ok' and isfinite(l1)) as p10_l1,
        quantile_cont(l1, 0.5) filter (where status = 'ok' and isfinite(l1)) as p50_l1,
        quantile_cont(l1, 0.9) filter (where status = 'ok' and isfinite(l1)) as p90_l1,
        count(*) filter (where starts_with(outcome, 'generation_failed')) as generation_failed
    from generated
    group by grouping sets ((recipe, mode, edit_type), (recipe, mode))
)
select
    recipe || '/' || mode || '/' || edit_type_key as recipe_mode_edit_type,
    * rename (edit_type_key as edit_type),
    case when scored > 0 then pass_clip_sim_image::double / scored end as pass_rate_clip_sim_image,
    case when scored > 0 then pass_clip_sim_dir::double / scored end as pass_rate_clip_sim_dir,
    case when scored > 0 then pass_clip_sim_source::double / scored end as pass_rate_clip_sim_source,
    case when scored > 0 then pass_clip_sim_target::double / scored end as pass_rate_clip_sim_target,
    case when scored > 0 then pass_dinov2_sim::double / scored end as pass_rate_dinov2_sim,
    case when scored > 0 then pass_all::double / scored end as pass_rate_all,
    case when kept > 0 then candidates_generated::double / kept end as candidates_per_kept_sample,
    case when kept > 0 then unet_row_steps::double / kept end as unet_row_steps_per_kept_sample
from agg
order by recipe, mode, edit_type_key
