"""The engine as plain functions: ingest → stage (→ deliver → confirm, part 2). Tasks only call these."""
