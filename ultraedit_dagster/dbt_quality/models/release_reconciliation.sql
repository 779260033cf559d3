-- The release reconciled with the scores (docs/method.md §6): one row per filtered_release row with the thresholds
-- and selection rule it carries (parsed from its `thresholds` / `selection_rule` text), whether its own metrics meet
-- them, whether metric_scores holds the same candidate with the same metrics, how many rows its triplet released and
-- how many of the triplet's scored candidates pass the carried thresholds. The dbt tests in tests/release_*.sql
-- fail on any row that breaks the rule; a row that carries no parsable rule fails them too (nulls never pass).
{%- set mins = ['clip_sim_image', 'clip_sim_dir', 'clip_sim_source', 'clip_sim_target', 'dinov2_sim'] %}
{%- set ranged = ['clip_sim_source', 'clip_sim_target', 'clip_sim_dir', 'clip_sim_image', 'dinov2_sim', 'ssim'] %}
{%- set num = "(-?[0-9][0-9.eE+-]*)" %}
with released as (
    select
        uid, split, mode, shard, instruction_uid, rank, thresholds, selection_rule, rule_version,
        {% for m in ranged %}{{ m }}, {% endfor %}l1,
        {%- for m in mins %}
        try_cast(regexp_extract(thresholds, '{{ m }}>={{ num }}', 1) as double) as min_{{ m }},
        {%- endfor %}
        try_cast(regexp_extract(thresholds, '{{ num }}<=l1', 1) as double) as min_l1,
        try_cast(regexp_extract(thresholds, 'l1<={{ num }}', 1) as double) as max_l1,
        case split
            when 'region' then try_cast(regexp_extract(selection_rule, 'region: top ([0-9]+) per triplet', 1) as integer)
            else try_cast(regexp_extract(selection_rule, 'free_form: top ([0-9]+) per triplet', 1) as integer)
        end as top_k,
        case split
            when 'region' then try_cast(
                regexp_extract(selection_rule, 'region: top [0-9]+ per triplet when at least ([0-9]+) pass', 1) as integer)
            else 1
        end as min_passing
    from {{ source('lake', 'filtered_release') }}
),
scores as (
    select * from {{ source('lake', 'metric_scores') }}
),
triplet_rule as (
    -- the rule a triplet's released rows carry (per shard file: the release gate, not this model, settles a uid
    -- repeated across shards; the unique test below only warns about it)
    select shard, instruction_uid, any_value(split) as split,
           {% for m in mins %}any_value(min_{{ m }}) as min_{{ m }}, {% endfor %}
           any_value(min_l1) as min_l1, any_value(max_l1) as max_l1
    from released
    group by shard, instruction_uid
),
triplet_passing as (
    -- scored candidates of the triplet eligible under the carried rule (as release/selection.py re-checks them)
    select r.shard, r.instruction_uid, count(s.candidate_uid) as passing_in_scores
    from triplet_rule r
    left join scores s
      on s.shard = r.shard and s.instruction_uid = r.instruction_uid and s.status = 'ok'
     {%- for m in ranged %}
     and isfinite(s.{{ m }}) and s.{{ m }} between -1 and 1
     {%- endfor %}
     and isfinite(s.l1) and s.l1 between r.min_l1 and r.max_l1
     {%- for m in mins %}
     and s.{{ m }} >= r.min_{{ m }}
     {%- endfor %}
    group by r.shard, r.instruction_uid
),
checked as (
    select
        rel.*,
        coalesce(
            {%- for m in mins %}
            isfinite(rel.{{ m }}) and rel.{{ m }} >= rel.min_{{ m }} and
            {%- endfor %}
            isfinite(rel.ssim) and rel.ssim between -1 and 1 and
            isfinite(rel.l1) and rel.l1 between rel.min_l1 and rel.max_l1,
            false
        ) as meets_thresholds,
        s.candidate_uid is not null as in_scores,
        coalesce(s.status = 'ok'
            {%- for m in ranged + ['l1'] %}
            and rel.{{ m }} is not distinct from s.{{ m }}
            {%- endfor %}, false) as scores_match,
        count(*) over (partition by rel.shard, rel.instruction_uid) as released_in_triplet,
        coalesce(p.passing_in_scores, 0) as passing_in_scores
    from released rel
    left join scores s on s.shard = rel.shard and s.candidate_uid = rel.uid
    left join triplet_passing p on p.shard = rel.shard and p.instruction_uid = rel.instruction_uid
)
select * from checked
order by shard, instruction_uid, rank
