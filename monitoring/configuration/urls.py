"""The engine's configuration pages, under /w/<ws>/config/ (namespace `config`)."""

from __future__ import annotations

from django.urls import path

from monitoring.configuration.views import aliases, flows, lists, mappings, routing, schedules

app_name = "config"

W = "w/<slug:ws>/config"

urlpatterns = [
    path(f"{W}/flows/", flows.flow_list, name="flows"),
    path(f"{W}/flows/new/", flows.flow_create, name="flow-create"),
    path(f"{W}/flows/<int:pk>/", flows.flow_detail, name="flow"),
    path(f"{W}/flows/<int:pk>/delete/", flows.flow_delete, name="flow-delete"),
    path(f"{W}/flows/<int:pk>/backfill/", flows.flow_backfill, name="flow-backfill"),
    path(f"{W}/flows/<int:pk>/mappings/", mappings.mapping_list, name="mappings"),
    path(f"{W}/flows/<int:pk>/mappings/<int:mapping>/", mappings.mapping_edit, name="mapping"),
    path(
        f"{W}/flows/<int:pk>/mappings/<int:mapping>/delete/",
        mappings.mapping_delete,
        name="mapping-delete",
    ),
    path(
        f"{W}/flows/<int:pk>/data-fields/", mappings.mapping_create_field, name="data-field-create"
    ),
    path(f"{W}/flows/<int:pk>/dry-run/", mappings.dry_run, name="dry-run"),
    path(f"{W}/sku-aliases/", aliases.alias_list, name="aliases"),
    path(f"{W}/sku-aliases/cleaning/", aliases.sku_cleaning, name="sku-cleaning"),
    path(f"{W}/sku-aliases/<int:pk>/delete/", aliases.alias_delete, name="alias-delete"),
    path(f"{W}/sku-aliases/import/", aliases.alias_import, name="aliases-import"),
    path(f"{W}/sku-aliases/export/", aliases.alias_export, name="aliases-export"),
    path(f"{W}/schedules/", schedules.schedule_list, name="schedules"),
    path(f"{W}/schedules/<int:pk>/", schedules.schedule_edit, name="schedule"),
    path(f"{W}/schedules/<int:pk>/toggle/", schedules.schedule_toggle, name="schedule-toggle"),
    path(f"{W}/schedules/<int:pk>/delete/", schedules.schedule_delete, name="schedule-delete"),
    path(f"{W}/routing/", routing.routing, name="routing"),
    path(f"{W}/routing/<int:pk>/delete/", routing.routing_delete, name="routing-delete"),
    path(f"{W}/runbook/", routing.runbook, name="runbook"),
    path(f"{W}/lists/", lists.lists, name="lists"),
    path(f"{W}/flows/<int:pk>/lists/", lists.flow_lists, name="flow-lists"),
    path(f"{W}/lists/<int:pk>/create/", lists.list_create, name="list-create"),
    path(f"{W}/lists/<int:pk>/enrolments/", lists.enrolment_add, name="enrolment-add"),
    path(f"{W}/enrolments/<int:pk>/toggle/", lists.enrolment_toggle, name="enrolment-toggle"),
]
