"""A faithful local DotDigital: stdlib only (no Django), state in its own SQLite file.

Run it with `python -m connectors.dotdigital.sandbox --port 8099 --db var/dotdigital.sqlite3`.

`server` routes each request (auth, rate limits, faults, the call log) to its handler: `contacts`
(v3 contacts, writing through `contact_writer` and the checks of `contact_rules`), `imports`,
`insight`, `v2`; `control` is the /_sandbox/ surface the tests and the demo drive; `store` holds
the state in SQLite; `profiles` sets the limits and latencies.
"""
