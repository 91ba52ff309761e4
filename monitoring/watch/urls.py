from __future__ import annotations

from django.urls import path

from monitoring.watch import views as watch_views

app_name = "watch"

urlpatterns = [
    path("metrics", watch_views.metrics, name="metrics"),
    path("w/<slug:ws>/alerts/", watch_views.alert_list, name="alerts"),
    path(
        "w/<slug:ws>/alerts/<int:pk>/acknowledge/", watch_views.alert_acknowledge, name="alert-ack"
    ),
    path("w/<slug:ws>/reconciliation/", watch_views.runs, name="runs"),
    path("w/<slug:ws>/reconciliation/flow/<int:flow>/run/", watch_views.run_now, name="run-now"),
    path("w/<slug:ws>/reconciliation/<int:pk>/", watch_views.run_detail, name="run"),
    path(
        "w/<slug:ws>/reconciliation/difference/<int:pk>/repair/", watch_views.repair, name="repair"
    ),
    path("w/<slug:ws>/opt-outs/", watch_views.opt_outs, name="opt-outs"),
    path(
        "w/<slug:ws>/opt-outs/flow/<int:flow>/webhook/",
        watch_views.opt_out_webhook,
        name="opt-out-webhook",
    ),
]
