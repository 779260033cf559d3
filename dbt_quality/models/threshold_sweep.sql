-- The analyst's what-if: for each threshold combination on a grid, how many candidates would pass and how many
-- samples the selection rule would keep (free-form: top free_form_top_k per triplet; region: top region_top_k
-- when at least region_min_passing pass). Both caption sims share one minimum.
with grid as (
    select i.v as min_clip_sim_image, d.v as min_clip_sim_dir, c.v as min_clip_sim_caption, n.v as min_dinov2_sim
    from (select unnest([0.60, 0.65, 0.70, 0.75, 0.80, 0.85]) as v) i
    cross join (select unnest([0.10, 0.15, 0.20, 0.22, 0.25, 0.30]) as v) d
    cross join (select unnest([0.18, 0.20, 0.22]) as v) c
    cross join (select unnest([0.30, 0.40, 0.50]) as v) n
),
scored as (
    select instruction_uid, mode, clip_sim_image, clip_sim_dir, clip_sim_source, clip_sim_target, dinov2_sim
    from {{ source('lake', 'metric_scores') }}
    where status = 'ok'
),
per_triplet as (
    select
        g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim,
        s.mode, s.instruction_uid,
        count(*) filter (where s.clip_sim_image >= g.min_clip_sim_image
                           and s.clip_sim_dir >= g.min_clip_sim_dir
                           and s.clip_sim_source >= g.min_clip_sim_caption
                           and s.clip_sim_target >= g.min_clip_sim_caption
                           and s.dinov2_sim >= g.min_dinov2_sim) as passing
    from grid g cross join scored s
    group by all
)
select
    printf('img>=%.2f dir>=%.2f cap>=%.2f dino>=%.2f %s', min_clip_sim_image, min_clip_sim_dir,
           min_clip_sim_caption, min_dinov2_sim, mode) as combo,
    min_clip_sim_image, min_clip_sim_dir, min_clip_sim_caption, min_dinov2_sim, mode,
    count(*) as triplets,
    sum(passing) as passing_candidates,
    sum(case
            when mode = 'region' then case when passing >= {{ var('region_min_passing') }}
                                           then least(passing, {{ var('region_top_k') }}) else 0 end
            else least(passing, {{ var('free_form_top_k') }})
        end) as kept_samples,
    count(*) filter (where (mode = 'region' and passing >= {{ var('region_min_passing') }})
                        or (mode <> 'region' and passing > 0)) as triplets_kept
from per_triplet
group by all
order by mode, min_clip_sim_image, min_clip_sim_dir, min_clip_sim_caption, min_dinov2_sim
