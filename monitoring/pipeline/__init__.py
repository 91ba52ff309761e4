"""The sync engine as plain functions, in the order one event goes through them. Tasks
(monitoring/tasks.py) only claim work and call these; nothing here imports the tasks or the pages.

1. Arrive: `ingest.py` stores webhook bodies and their events (`event_schema.py` says which are
   valid); `sources.py` fetches id-only notifications and polls; `wake.py` wakes the workers.
2. Stage: `staging/run.py` claims a flow's events and merges each into state; its `HANDLERS`
   name the module of each event type (`staging/customers.py`, `orders.py`, ...).
3. Plan: `plan.py` turns READY events into outbox operations (`mapping.py`, `transforms.py`).
4. Send: `lanes.py` runs each destination's realtime and bulk lanes; `deliver.py` sends
   operations through `sending.py` (`consent.py`, `programs.py` for their own calls).
5. Confirm: `confirm.py` reads import results and settles events; `destination.py` pauses,
   resumes and caches the DotDigital side.
6. Fix: failures become inbox occurrences; `hooks.py` is what the inbox's retry and fixes call.
"""
