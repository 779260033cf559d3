-- The analyst's what-if: for each threshold combination on a grid, how many candidates would pass and how many
-- samples the selection rule would keep (free-form: top free_form_top_k per triplet; region: top region_top_k
-- when at least region_min_passing pass). Both caption sims share one minimum.
--
-- Why binned: comparing every candidate with every grid point is (candidates x 324) float comparisons (1.3 billion
-- at UltraEdit's 4M candidates). Passing is monotone in each threshold, so each candidate is first reduced to
-- "how many grid values of each metric it reaches" (small integers), candidates of a triplet with the same levels
-- are counted together, and only those groups are compared with the grid.
{%- set image_grid = [0.60, 0.65, 0.70, 0.75, 0.80, 0.85] %}
{%- set dir_grid = [0.10, 0.15, 0.20, 0.22, 0.25, 0.30] %}
{%- set caption_grid = [0.18, 0.20, 0.22] %}
{%- set dinov2_grid = [0.30, 0.40, 0.50] %}
with scored as (
    select instruction_uid, mode, clip_sim_image, clip_sim_dir, clip_sim_source, clip_sim_target, dinov2_sim
    from {{ source('lake', 'metric_scores') }}
    where status = 'ok'
),
levels as (
    -- per (triplet, levels): how many candidates; level k = the candidate reaches the k-th grid value
    select
        hash(instruction_uid) as triplet_key,  -- an integer key groups much faster than the uid string
        mode,
        {{ grid_level('clip_sim_image', image_grid) }} as li,
        {{ grid_level('clip_sim_dir', dir_grid) }} as ld,
        least({{ grid_level('clip_sim_source', caption_grid) }}, {{ grid_level('clip_sim_target', caption_grid) }}) as lc,
        {{ grid_level('dinov2_sim', dinov2_grid) }} as ln,
        count(*) as n
    from scored
    group by all
),
grid as (
    select i.k as ki, i.v as min_clip_sim_image, d.k as kd, d.v as min_clip_sim_dir,
           c.k as kc, c.v as min_clip_sim_caption, n.k as kn, n.v as min_dinov2_sim
    from (select unnest(range(1, {{ image_grid | length + 1 }})) as k, unnest({{ image_grid }}::decimal(4, 2)[]) as v) i
    cross join (select unnest(range(1, {{ dir_grid | length + 1 }})) as k, unnest({{ dir_grid }}::decimal(4, 2)[]) as v) d
    cross join (select unnest(range(1, {{ caption_grid | length + 1 }})) as k, unnest({{ caption_grid }}::decimal(4, 2)[]) as v) c
    cross join (select unnest(range(1, {{ dinov2_grid | length + 1 }})) as k, unnest({{ dinov2_grid }}::decimal(4, 2)[]) as v) n
),
triplets as (
    select mode, count(distinct instruction_uid) as triplets from scored group by all
),
per_triplet as (
    -- only (combo, triplet) pairs with at least one passing candidate come out of this join
    select g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim,
           l.mode, l.triplet_key, sum(l.n) as passing
    from levels l
    join grid g on l.li >= g.ki and l.ld >= g.kd and l.lc >= g.kc and l.ln >= g.kn
    group by all
),
per_combo as (
    select
        min_clip_sim_image, min_clip_sim_dir, min_clip_sim_caption, min_dinov2_sim, mode,
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
)
select
    printf('img>=%.2f dir>=%.2f cap>=%.2f dino>=%.2f %s', g.min_clip_sim_image, g.min_clip_sim_dir,
           g.min_clip_sim_caption, g.min_dinov2_sim, t.mode) as combo,
    g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim, t.mode,
    t.triplets,
    coalesce(p.passing_candidates, 0)::bigint as passing_candidates,
    coalesce(p.kept_samples, 0)::bigint as kept_samples,
    coalesce(p.triplets_kept, 0)::bigint as triplets_kept
from grid g
cross join triplets t
left join per_combo p
    on p.min_clip_sim_image = g.min_clip_sim_image and p.min_clip_sim_dir = g.min_clip_sim_dir
   and p.min_clip_sim_caption = g.min_clip_sim_caption and p.min_dinov2_sim = g.min_dinov2_sim and p.mode = t.mode
order by t.mode, g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim
