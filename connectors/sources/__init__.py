"""Source adapters: one folder per source kind, turning what a source sends or serves into
canonical events (the shared reference `reference/sources.md` §10). `registry.SOURCES` lists them;
`registry.get_adapter(kind)` finds the one for a connection. `base.py` is the interface every
adapter implements, `values.py` the parsing of amounts, quantities and times they share."""
