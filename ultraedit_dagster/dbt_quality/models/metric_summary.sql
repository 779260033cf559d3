-- Distribution of every metric per mode over scored (status = 'ok') candidates, and over the kept release rows.
-- Statistics use finite values only (a NaN or infinite score made stddev_samp raise and the whole model fail);
-- such values are counted in `non_finite`, never dropped silently.
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
    count(value) filter (where isfinite(value)) as n,
    count(value) filter (where not isfinite(value)) as non_finite,
    avg(value) filter (where isfinite(value)) as mean,
    stddev_samp(value) filter (where isfinite(value)) as stddev,
    min(value) filter (where isfinite(value)) as min,
    quantile_cont(value, 0.10) filter (where isfinite(value)) as p10,
    quantile_cont(value, 0.25) filter (where isfinite(value)) as p25,
    quantile_cont(value, 0.50) filter (where isfinite(value)) as p50,
    quantile_cont(value, 0.75) filter (where isfinite(value)) as p75,
    quantile_cont(value, 0.90) filter (where isfinite(value)) as p90,
    max(value) filter (where isfinite(value)) as max
from allv
group by population, mode, metric
order by population, mode, metric
