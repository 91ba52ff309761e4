"""Authorization rows for accounts' pages (merged into tests/authz.py's RULES)."""

from __future__ import annotations

from tests.authz import GET_ONLY, WORKSPACE_PAGE, Rule

RULES = {
    # Everyone in the workspace may read the audit (it never holds a secret's value).
    "accounts:audit": Rule(get=WORKSPACE_PAGE, post=GET_ONLY),
}
