"""Django's PostgreSQL backend with psycopg's compiled timestamptz loader (`base.py` says why)."""
