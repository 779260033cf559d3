{#- How many values of a threshold grid a metric reaches: (m >= g1)::int + (m >= g2)::int + ...
    Passing is monotone in the threshold, so `level >= k` is exactly `m >= grid[k]`. -#}
{% macro grid_level(column, grid) -%}
    ({% for v in grid %}({{ column }} >= {{ v }})::int{% if not loop.last %} + {% endif %}{% endfor %})
{%- endmacro %}
