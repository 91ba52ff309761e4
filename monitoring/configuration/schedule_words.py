"""A schedule said in words: what it does, for which flow, and when ("every day at 03:17 UTC"),
for people who do not read crontabs or task names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitoring.models import Schedule

# task → (the job's name, what it does)
JOBS: dict[str, tuple[str, str]] = {
    "monitoring.poll_flow": (
        "Polling",
        "Asks the source for new and changed records (after loading its history first).",
    ),
    "monitoring.reconcile_flow": (
        "Reconciliation",
        "Compares the source with DotDigital (counts, LTV, last order date, order totals) and "
        "lists the differences to repair.",
    ),
    "monitoring.write_back_opt_outs": (
        "Opt-out write-back",
        "Writes the opt-outs made in DotDigital back to the source, with the time each reached it.",
    ),
    "monitoring.pull_suppressions": (
        "Suppressions pull",
        "Pulls DotDigital's suppressions (unsubscribes, bounces, complaints) into Syncdesk.",
    ),
    "monitoring.expire_list_memberships": (
        "List expiry",
        "Takes contacts off the kept lists (dispatched today, recent buyers) when their time is up.",
    ),
    "monitoring.enrol_programs": (
        "Program enrolments",
        "Sends the direct program enrolments waiting, within DotDigital's 20 calls an hour.",
    ),
    "exceptions_inbox.send_team_digests": (
        "Team digests",
        "E-mails each team a digest of its open exceptions.",
    ),
}

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
NUMBER = re.compile(r"^\d+$")
EVERY = re.compile(r"^\*/(\d+)$")


@dataclass(frozen=True)
class ScheduleInWords:
    schedule: Schedule
    title: str  # "Opt-out write-back for Demo ERP → DotDigital"
    name: str  # the schedule's own name when it says more than the title, else ""
    what: str
    when: str


def describe(schedule: Schedule) -> ScheduleInWords:
    job, what = JOBS.get(schedule.task, (schedule.task, ""))
    flow = schedule.flow
    title = f"{job} for {flow.name}" if flow else job
    # The engine names a flow's own jobs by its id ("reconcile flow 7"): the title says it better.
    generated = flow is not None and schedule.name.endswith(f"flow {flow.pk}")
    return ScheduleInWords(
        schedule=schedule,
        title=title,
        name="" if generated or schedule.name == title else schedule.name,
        what=what,
        when=when(schedule.every_seconds, schedule.crontab),
    )


def every(seconds: int) -> str:
    """300 → "every 5 minutes"; 3600 → "every hour"; 90 → "every 90 seconds"."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0:
            count = seconds // size
            return f"every {unit}" if count == 1 else f"every {count} {unit}s"
    return f"every {seconds} seconds"  # pragma: no cover (every size divides by 1)


def when(every_seconds: int | None, crontab: str) -> str:
    if every_seconds:
        return every(every_seconds)
    if not crontab:
        return "never (no interval or crontab)"
    parts = crontab.split()
    if len(parts) == 5:
        said = _cron(*parts)
        if said:
            return said
    return f"on the crontab “{crontab}” (minute hour day month weekday, UTC)"


def _cron(minute: str, hour: str, dom: str, month: str, dow: str) -> str | None:
    """The common crontabs in words; None for the rest (shown as they are)."""
    if month != "*":
        return None
    if hour == "*" and dom == "*" and dow == "*":
        if minute == "*":
            return "every minute"
        step = EVERY.match(minute)
        if step:
            return every(int(step.group(1)) * 60)
        if NUMBER.match(minute):
            return f"every hour at {int(minute)} minute{'s' if int(minute) != 1 else ''} past"
        return None
    if not NUMBER.match(minute):
        return None
    step = EVERY.match(hour)
    if step and dom == "*" and dow == "*":
        past = int(minute)
        at = "on the hour" if past == 0 else f"at {past} minute{'s' if past != 1 else ''} past"
        return f"{every(int(step.group(1)) * 3600)}, {at}"
    hours = hour.split(",")
    if not all(NUMBER.match(h) for h in hours):
        return None
    times = _and([f"{int(h):02d}:{int(minute):02d}" for h in hours]) + " UTC"
    if dom == "*" and dow == "*":
        return f"every day at {times}"
    if dom == "*":
        days = _days(dow)
        return f"every {days} at {times}" if days else None
    if dow == "*" and NUMBER.match(dom):
        return f"on day {int(dom)} of every month at {times}"
    return None


def _days(dow: str) -> str | None:
    if dow == "1-5":
        return "weekday"
    picked = []
    for part in dow.split(","):
        if not NUMBER.match(part) or int(part) > 7:
            return None
        picked.append(DAYS[int(part) % 7])
    return _and(picked)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
