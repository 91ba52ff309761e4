from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from accounts import views as accounts_views
from api.main import api_urls
from monitoring import views as monitoring_views

# Refusals in the site's shell, saying who can do it (accounts.views.permission_denied).
handler403 = accounts_views.permission_denied

urlpatterns = [
    path("", accounts_views.home, name="home"),
    path(
        "login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", login_not_required(monitoring_views.healthz), name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("accounts.urls")),
    path("", include("connectors.urls")),
    path("", include("exceptions_inbox.urls")),
    path("", include("monitoring.urls")),
    path("", include("monitoring.privacy.urls")),
    path("", include("monitoring.watch.urls")),
    path("", include("monitoring.configuration.urls")),
    path("", include("outbound.urls")),
    path("", include("api.urls")),
    path("api/v1/", api_urls()),
]
