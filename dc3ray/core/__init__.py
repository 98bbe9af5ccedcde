"""Pure logic: never imports ray or mlflow (tests/unit/test_boundaries.py checks it)."""
