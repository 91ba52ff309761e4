"""The engine's configuration pages, under /w/<ws>/config/ (namespace `config`)."""

from __future__ import annotations

from django.urls import path

from monitoring.configuration import views as v

app_name = "config"

W = "w/<slug:ws>/config"

urlpatterns = [
    path(f"{W}/flows/", v.flow_list, name="flows"),
    path(f"{W}/flows/new/", v.flow_create, name="flow-create"),
    path(f"{W}/flows/<int:pk>/", v.flow_detail, name="flow"),
    path(f"{W}/flows/<int:pk>/delete/", v.flow_delete, name="flow-delete"),
    path(f"{W}/flows/<int:pk>/backfill/", v.flow_backfill, name="flow-backfill"),
    path(f"{W}/flows/<int:pk>/mappings/", v.mapping_list, name="mappings"),
    path(f"{W}/flows/<int:pk>/mappings/<int:mapping>/", v.mapping_edit, name="mapping"),
    path(
        f"{W}/flows/<int:pk>/mappings/<int:mapping>/delete/",
        v.mapping_delete,
        name="mapping-delete",
    ),
    path(f"{W}/flows/<int:pk>/data-fields/", v.mapping_create_field, name="data-field-create"),
    path(f"{W}/flows/<int:pk>/dry-run/", v.dry_run, name="dry-run"),
    path(f"{W}/sku-aliases/", v.alias_list, name="aliases"),
    path(f"{W}/sku-aliases/cleaning/", v.sku_cleaning, name="sku-cleaning"),
    path(f"{W}/sku-aliases/<int:pk>/delete/", v.alias_delete, name="alias-delete"),
    path(f"{W}/sku-aliases/import/", v.alias_import, name="aliases-import"),
    path(f"{W}/sku-aliases/export/", v.alias_export, name="aliases-export"),
    path(f"{W}/schedules/", v.schedule_list, name="schedules"),
    path(f"{W}/schedules/<int:pk>/", v.schedule_edit, name="schedule"),
    path(f"{W}/schedules/<int:pk>/toggle/", v.schedule_toggle, name="schedule-toggle"),
    path(f"{W}/schedules/<int:pk>/delete/", v.schedule_delete, name="schedule-delete"),
    path(f"{W}/routing/", v.routing, name="routing"),
    path(f"{W}/routing/<int:pk>/delete/", v.routing_delete, name="routing-delete"),
    path(f"{W}/runbook/", v.runbook, name="runbook"),
    path(f"{W}/lists/", v.lists, name="lists"),
    path(f"{W}/flows/<int:pk>/lists/", v.flow_lists, name="flow-lists"),
    path(f"{W}/lists/<int:pk>/create/", v.list_create, name="list-create"),
    path(f"{W}/lists/<int:pk>/enrolments/", v.enrolment_add, name="enrolment-add"),
    path(f"{W}/enrolments/<int:pk>/toggle/", v.enrolment_toggle, name="enrolment-toggle"),
]
