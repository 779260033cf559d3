-- The analyst's what-if (docs/method.md §5): for each threshold combination on a grid, how many candidates would
-- pass and how many samples the selection rule would keep (free-form: top free_form_top_k per triplet; region: top
-- region_top_k when at least region_min_passing pass). Both caption sims share one minimum.
--
-- The grid comes from the dbt var `sweep_grid` (per axis a list; the Dagster asset passes the active profile's
-- default, `ultraedit_dagster.lake.dbt_project.sweep_vars`), and each mode's own thresholds from `sweep_thresholds`
-- are always added to every axis, so the row with `profile_thresholds = true` is what the current profile keeps.
-- A candidate is eligible as in the release (release/selection.py): status ok, every metric finite and in its valid
-- range, L1 inside the mode's band (the band is not swept). pass_all is not used: it belongs to the profile's
-- thresholds, the grid asks about others.
--
-- Why binned: comparing every candidate with every grid point is (candidates x combos) float comparisons (1.3 billion
-- at UltraEdit's 4M candidates). Passing is monotone in each threshold, so each candidate is first reduced to
-- "how many grid values of each metric it reaches" (small integers), candidates of a triplet with the same levels
-- are counted together, and only those groups are compared with the grid.
{%- set published = {
    'free_form': {'clip_sim_image': 0.75, 'clip_sim_dir': 0.22, 'clip_sim_caption': 0.20, 'dinov2_sim': 0.40,
                  'min_l1': 0.002, 'max_l1': 0.5},
    'region': {'clip_sim_image': 0.70, 'clip_sim_dir': 0.22, 'clip_sim_caption': 0.20, 'dinov2_sim': 0.40,
               'min_l1': 0.002, 'max_l1': 0.5}} %}
{%- set thr = var('sweep_thresholds', published) %}
{%- set grid_var = var('sweep_grid', {}) %}
{%- set axes = {} %}
{%- for axis, default in [('clip_sim_image', [0.60, 0.65, 0.70, 0.75, 0.80, 0.85]),
                          ('clip_sim_dir', [0.10, 0.15, 0.20, 0.22, 0.25, 0.30]),
                          ('clip_sim_caption', [0.18, 0.20, 0.22]),
                          ('dinov2_sim', [0.30, 0.40, 0.50])] %}
    {%- set values = (grid_var.get(axis, default) | list) + [thr['free_form'][axis], thr['region'][axis]] %}
    {%- do axes.update({axis: values | map('float') | unique | sort | list}) %}
{%- endfor %}
{%- set image_grid = axes['clip_sim_image'] %}
{%- set dir_grid = axes['clip_sim_dir'] %}
{%- set caption_grid = axes['clip_sim_caption'] %}
{%- set dinov2_grid = axes['dinov2_sim'] %}
with scored as (
    select instruction_uid, mode, clip_sim_image, clip_sim_dir, clip_sim_source, clip_sim_target, dinov2_sim
    from {{ source('lake', 'metric_scores') }}
    where status = 'ok'
),
eligible as (
    select instruction_uid, mode, clip_sim_image, clip_sim_dir, clip_sim_source, clip_sim_target, dinov2_sim
    from {{ source('lake', 'metric_scores') }}
    where status = 'ok'
      {%- for m in ['clip_sim_source', 'clip_sim_target', 'clip_sim_dir', 'clip_sim_image', 'dinov2_sim', 'ssim'] %}
      and isfinite({{ m }}) and {{ m }} between -1 and 1
      {%- endfor %}
      and isfinite(l1) and l1 between 0 and 1
      and case when mode = 'region'
               then l1 between {{ thr['region']['min_l1'] }} and {{ thr['region']['max_l1'] }}
               else l1 between {{ thr['free_form']['min_l1'] }} and {{ thr['free_form']['max_l1'] }} end
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
    from eligible
    group by all
),
grid as (
    select i.k as ki, i.v as min_clip_sim_image, d.k as kd, d.v as min_clip_sim_dir,
           c.k as kc, c.v as min_clip_sim_caption, n.k as kn, n.v as min_dinov2_sim
    from (select unnest(range(1, {{ image_grid | length + 1 }})) as k, unnest({{ image_grid }}::double[]) as v) i
    cross join (select unnest(range(1, {{ dir_grid | length + 1 }})) as k, unnest({{ dir_grid }}::double[]) as v) d
    cross join (select unnest(range(1, {{ caption_grid | length + 1 }})) as k, unnest({{ caption_grid }}::double[]) as v) c
    cross join (select unnest(range(1, {{ dinov2_grid | length + 1 }})) as k, unnest({{ dinov2_grid }}::double[]) as v) n
),
triplets as (
    select mode, count(distinct instruction_uid) as triplets from scored group by all
),
per_triplet as (
    -- only (combo, triplet) pairs with at least one passing candidate come out of this join
    select g.ki, g.kd, g.kc, g.kn, l.mode, l.triplet_key, sum(l.n) as passing
    from levels l
    join grid g on l.li >= g.ki and l.ld >= g.kd and l.lc >= g.kc and l.ln >= g.kn
    group by all
),
per_combo as (
    select
        ki, kd, kc, kn, mode,
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
    printf('img>=%g dir>=%g cap>=%g dino>=%g %s', g.min_clip_sim_image, g.min_clip_sim_dir,
           g.min_clip_sim_caption, g.min_dinov2_sim, t.mode) as combo,
    g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim, t.mode,
    t.triplets,
    coalesce(p.passing_candidates, 0)::bigint as passing_candidates,
    coalesce(p.kept_samples, 0)::bigint as kept_samples,
    coalesce(p.triplets_kept, 0)::bigint as triplets_kept,
    case t.mode
        {%- for mode in ['free_form', 'region'] %}
        when '{{ mode }}' then g.min_clip_sim_image = {{ thr[mode]['clip_sim_image'] }}::double
            and g.min_clip_sim_dir = {{ thr[mode]['clip_sim_dir'] }}::double
            and g.min_clip_sim_caption = {{ thr[mode]['clip_sim_caption'] }}::double
            and g.min_dinov2_sim = {{ thr[mode]['dinov2_sim'] }}::double
        {%- endfor %}
        else false
    end as profile_thresholds
from grid g
cross join triplets t
left join per_combo p
    on p.ki = g.ki and p.kd = g.kd and p.kc = g.kc and p.kn = g.kn and p.mode = t.mode
order by t.mode, g.min_clip_sim_image, g.min_clip_sim_dir, g.min_clip_sim_caption, g.min_dinov2_sim
