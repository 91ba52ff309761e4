"""Step 2, stage: monitoring/pipeline/staging/run.py claims and stages events; each event type is
staged by the module its `HANDLERS` entry names."""
