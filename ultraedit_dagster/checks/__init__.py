"""Asset checks, one module per stage, next to the assets they guard."""
