"""The controller: a run's lifecycle, its slots and scheduler, and the checks before it trains."""
