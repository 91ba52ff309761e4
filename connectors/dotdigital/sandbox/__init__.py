"""A faithful local DotDigital: stdlib only (no Django), state in its own SQLite file.

Run it with `python -m connectors.dotdigital.sandbox --port 8099 --db var/dotdigital.sqlite3`.
"""
