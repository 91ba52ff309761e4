"""The demo workspace: one retailer, one person per team and an admin (make demo)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from accounts.models import Membership, Workspace

DEMO_PASSWORD = "syncdesk-demo"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    teams: tuple[str, ...]


DEMO_LOGINS = (
    DemoLogin("admin", Membership.Role.ADMIN, ("admins",)),
    DemoLogin("marketing", Membership.Role.MEMBER, ("marketing",)),
    DemoLogin("ops", Membership.Role.MEMBER, ("ops",)),
    DemoLogin("finance", Membership.Role.MEMBER, ("finance",)),
)


@transaction.atomic
def seed_demo() -> Workspace:
    """Create (or bring back to shape) the demo workspace and its people. Safe to run again."""
    workspace = Workspace.objects.filter(slug="demo").first()
    if workspace is None:
        workspace = Workspace.objects.create(
            name="Northwind Outfitters", slug="demo", currency="GBP"
        )
    for login in DEMO_LOGINS:
        user, created = User.objects.get_or_create(
            username=login.username, defaults={"email": f"{login.username}@example.com"}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        workspace.add_member(user, role=login.role, teams=login.teams)
    return workspace
