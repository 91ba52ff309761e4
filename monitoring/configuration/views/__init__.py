"""Configuration pages of the engine: flows (thresholds and policies, backfill and catalogue), field
mappings with the dry run, SKU aliases (CSV import and export), schedules, lists and programs,
routing of exception kinds to teams, and the runbook.

Everyone in the workspace reads them; only admins change anything (`require_admin`: 403). Every
change writes an audit row (`accounts.audit.record_change`) shown on the object's page and on the
audit page.
"""
