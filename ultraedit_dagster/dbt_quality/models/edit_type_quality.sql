-- Per edit type and mode: volume, failures, pass rate, metric means, kept samples. A candidate row that failed
-- before a mode was chosen (its image got no triplet) counts under mode 'unassigned'.
with scores as (
    select
        coalesce(edit_type, 'unknown') as edit_type,
        coalesce(mode, 'unassigned') as mode,
        count(*) as candidates,
        count(*) filter (where status = 'failed') as failed,
        count(*) filter (where status = 'ok') as scored,
        count(*) filter (where status = 'ok' and pass_all) as passed,
        avg(clip_sim_dir) filter (where status = 'ok') as mean_clip_sim_dir,
        avg(clip_sim_image) filter (where status = 'ok') as mean_clip_sim_image,
        avg(clip_sim_source) filter (where status = 'ok') as mean_clip_sim_source,
        avg(clip_sim_target) filter (where status = 'ok') as mean_clip_sim_target,
        avg(dinov2_sim) filter (where status = 'ok') as mean_dinov2_sim,
        avg(ssim) filter (where status = 'ok') as mean_ssim,
        avg(l1) filter (where status = 'ok') as mean_l1
    from {{ source('lake', 'metric_scores') }}
    group by 1, 2
),
kept as (
    select coalesce(edit_type, 'unknown') as edit_type, coalesce(mode, 'unassigned') as mode, count(*) as kept
    from {{ source('lake', 'filtered_release') }}
    group by 1, 2
)
select
    s.edit_type || '/' || s.mode as edit_type_mode,
    s.*,
    case when s.scored > 0 then s.passed::double / s.scored else 0.0 end as pass_rate,
    coalesce(k.kept, 0) as kept
from scores s
left join kept k using (edit_type, mode)
order by s.edit_type, s.mode
