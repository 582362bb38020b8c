"""Checks on the data before training: ExampleValidator and the per-span checks and drift of SpanValidator."""
