-- Distribution of every metric per mode over scored (status = 'ok') candidates, and over the kept release rows.
with scored as (
    select mode, 'scored' as population, metric, value
    from {{ source('lake', 'metric_scores') }}
    unpivot (value for metric in (clip_sim_source, clip_sim_target, clip_sim_dir, clip_sim_image, dinov2_sim, ssim, l1))
    where status = 'ok'
),
released as (
    select mode, 'released' as population, metric, value
    from {{ source('lake', 'filtered_release') }}
    unpivot (value for metric in (clip_sim_source, clip_sim_target, clip_sim_dir, clip_sim_image, dinov2_sim, ssim, l1))
),
allv as (
    select * from scored
    union all
    select * from released
)
select
    population || '/' || mode || '/' || metric as summary_key,
    population,
    mode,
    metric,
    count(value) as n,
    avg(value) as mean,
    stddev_samp(value) as stddev,
    min(value) as min,
    quantile_cont(value, 0.10) as p10,
    quantile_cont(value, 0.25) as p25,
    quantile_cont(value, 0.50) as p50,
    quantile_cont(value, 0.75) as p75,
    quantile_cont(value, 0.90) as p90,
    max(value) as max
from allv
group by population, mode, metric
order by population, mode, metric
