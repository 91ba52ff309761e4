"""Monitoring pages: flows (health, charts, live), the event timeline, alerts, reconciliation runs
and their repair, opt-out write-backs, and /metrics. Small guarded views: the scoped getter first,
one call into monitoring.watch.flow_health / alerts / reconcile, render or redirect."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts.access import get_workspace_for_user
from accounts.http import AuthenticatedHttpRequest
from monitoring.models import (
    Alert,
    Flow,
    OptOutWriteBack,
    ReconciliationDifference,
    ReconciliationRun,
)
from monitoring.watch import alerts, flow_health, health, reconcile
from monitoring.watch.charts import backlog_chart, latency_chart
from monitoring.watch.forms import OptOutWebhookForm

EVENTS_SHOWN = 50


@require_GET
def flows(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    all_flows = Flow.objects.filter(workspace=access.workspace).select_related(
        "source", "destination"
    )
    rows = flow_health.flow_health(all_flows)
    selected = next((h for h in rows if str(h.flow.pk) == request.GET.get("flow")), None)
    # Without a choice, the first flow with something to draw (a quiet flow's charts are empty).
    busy = next((h for h in rows if h.delivered_day), None)
    selected = selected or busy or (rows[0] if rows else None)
    part = request.GET.get("part") if request.htmx else None  # "charts", or the table's refresh
    drawn = selected.flow if selected and (not request.htmx or part == "charts") else None
    context = {
        "access": access,
        "nav": "flows",
        "rows": rows,
        "selected": selected,
        "latency_chart": latency_chart(flow_health.latency_bars(drawn)) if drawn else "",
        "backlog_chart": backlog_chart(flow_health.backlog_points(drawn)) if drawn else "",
    }
    template = "monitoring/flows.html"
    if request.htmx:
        template += "#charts" if part == "charts" else "#live"
    return render(request, template, context)


@require_GET
def events(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    query = request.GET.get("q", "").strip()[:255]
    found = list(flow_health.find_events(access.workspace.pk, query)[: EVENTS_SHOWN + 1])
    context = {
        "access": access,
        "nav": "events",
        "query": query,
        "timelines": flow_health.timelines(found[:EVENTS_SHOWN]),
        "more": len(found) > EVENTS_SHOWN,
        "opt_outs": reconcile.opt_outs_of(access.workspace.pk, query),
    }
    template = "monitoring/events.html#results" if request.htmx else "monitoring/events.html"
    return render(request, template, context)


@require_GET
def alert_list(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    items = (
        Alert.objects.filter(workspace=access.workspace)
        .select_related("flow", "acknowledged_by")
        .prefetch_related("changes__notice")[:100]
    )
    return render(
        request, "monitoring/alerts.html", {"access": access, "nav": "flows", "alerts": items}
    )


@require_POST
def alert_acknowledge(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    alert = get_object_or_404(Alert, workspace=access.workspace, pk=pk)
    access.require_team(alert.team_slug)
    if alerts.acknowledge(alert, request.user):
        messages.success(request, "Alert acknowledged: it will not escalate.")
    return redirect("watch:alerts", ws=ws)


@require_GET
def runs(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    items = list(
        ReconciliationRun.objects.filter(workspace=access.workspace).select_related("flow")[:100]
    )
    context = {
        "access": access,
        "nav": "flows",
        "runs": items,
        "flows": Flow.objects.filter(workspace=access.workspace),
        "running": any(r.state == ReconciliationRun.State.RUNNING for r in items),
    }
    template = "monitoring/reconciliation.html"
    return render(request, f"{template}#runs" if request.htmx else template, context)


@require_POST
def run_now(request: AuthenticatedHttpRequest, ws: str, flow: int) -> HttpResponse:
    """Reconcile a flow now (finance, who own reconciliation differences, or an admin): a worker
    compares, retrying DotDigital's retryable answers; the run's page shows its progress."""
    access = get_workspace_for_user(request, ws)
    target = get_object_or_404(Flow, workspace=access.workspace, pk=flow)
    access.require_team("finance")
    run = reconcile.start_run(target)
    if run.state == ReconciliationRun.State.RUNNING:
        if not reconcile.queue_run(target):
            messages.error(
                request,
                "The workers could not be reached (the task broker did not answer): the run "
                "keeps its place and continues when it is started again.",
            )
        elif run.lease_owner:
            messages.info(request, "This flow's reconciliation is already running.")
    return redirect("watch:run", ws=ws, pk=run.pk)


@require_GET
def run_detail(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    run = get_object_or_404(
        ReconciliationRun.objects.select_related("flow__source"), workspace=access.workspace, pk=pk
    )
    diffs = run.differences.select_related("repaired_by").order_by("kind", "subject")
    template = "monitoring/reconciliation_run.html"
    return render(
        request,
        f"{template}#run" if request.htmx else template,
        {"access": access, "nav": "flows", "run": run, "differences": diffs},
    )


@require_POST
def repair(request: AuthenticatedHttpRequest, ws: str, pk: int) -> HttpResponse:
    access = get_workspace_for_user(request, ws)
    diff = get_object_or_404(
        ReconciliationDifference.objects.select_related("run__flow"),
        run__workspace=access.workspace,
        pk=pk,
    )
    access.require_team(diff.team_slug)
    if reconcile.repair(diff, request.user):
        if diff.kind in reconcile.SOURCE_KINDS:
            messages.success(request, f"{diff.subject}: the source's records are being taken in.")
        else:
            messages.success(request, f"{diff.subject}: Syncdesk's value is being sent again.")
    else:
        messages.error(request, f"{diff.subject}: nothing to re-send (already repaired or gone).")
    return redirect("watch:run", ws=ws, pk=diff.run_id)


@require_GET
def opt_outs(request: AuthenticatedHttpRequest, ws: str) -> HttpResponse:
    """The opt-outs written back to sources, newest first (`?q=` one contact's); `?format=csv`
    exports them all, for a source that has neither a connector write nor a webhook."""
    access = get_workspace_for_user(request, ws)
    query = request.GET.get("q", "").strip()[:254]
    items = OptOutWriteBack.objects.filter(workspace=access.workspace).select_related(
        "flow", "source"
    )
    if query:
        items = items.filter(email=query.lower())
    if request.GET.get("format") == "csv":
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="opt-outs.csv"'
        reconcile.write_opt_outs_csv(response, items.iterator())
        return response
    return render(
        request,
        "monitoring/opt_outs.html",
        {
            "access": access,
            "nav": "flows",
            "items": items[:200],
            "query": query,
            "routes": reconcile.opt_out_routes(access.workspace.pk),
            "form": OptOutWebhookForm(),
        },
    )


@require_POST
def opt_out_webhook(request: AuthenticatedHttpRequest, ws: str, flow: int) -> HttpResponse:
    """Set or remove a flow's opt-out webhook (admins; audited, the URL never shown)."""
    access = get_workspace_for_user(request, ws)
    target = get_object_or_404(Flow, workspace=access.workspace, pk=flow)
    access.require_admin()
    form = OptOutWebhookForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, " ".join(str(e) for e in form.errors.get("__all__", [])) or ("Not a URL.")
        )
        return redirect("watch:opt-outs", ws=ws)
    reconcile.set_opt_out_webhook(
        target, "" if form.cleaned_data["clear"] else form.cleaned_data["url"], request.user
    )
    messages.success(request, f"{target.name}: opt-out webhook saved.")
    return redirect("watch:opt-outs", ws=ws)


@login_not_required
@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus: a bearer token from settings.METRICS_TOKEN; 404 without one or when wrong."""
    token = str(getattr(settings, "METRICS_TOKEN", "") or "")
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        raise Http404("Not found")
    return HttpResponse(health.metrics_text(), content_type="text/plain; version=0.0.4")
