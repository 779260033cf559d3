"""The analysts' DuckDB file as a resource."""


import dagster as dg

from ..warehouse import DEFAULT_WAREHOUSE_PATH


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file holding a view per lake asset and the dbt_quality models. One writer at a time."""

    path: str = DEFAULT_WAREHOUSE_PATH
