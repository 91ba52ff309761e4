"""Walks every URL pattern and checks each persona's answer against tests/authz.py."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.authz import EXEMPT_NAMESPACES, LOGIN, PERSONAS, RULES


def url_names(resolver: URLResolver | None = None, namespace: str = "") -> list[str]:
    resolver = resolver or get_resolver()
    names = []
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            ns = pattern.namespace
            if ns in EXEMPT_NAMESPACES:
                continue
            names += url_names(pattern, f"{namespace}{ns}:" if ns else namespace)
        elif isinstance(pattern, URLPattern):
            assert pattern.name, f"URL pattern {pattern.pattern} has no name"
            names.append(f"{namespace}{pattern.name}")
    return names


def test_every_url_has_an_authorization_rule():
    missing = sorted(set(url_names()) - set(RULES))
    assert not missing, f"add these URLs to tests/authz.py: {missing}"


def test_the_table_names_no_url_that_no_longer_exists():
    assert not sorted(set(RULES) - set(url_names()))


def client_for(persona: str, world) -> Client:
    client = Client()
    if persona != "anon":
        client.force_login(getattr(world, persona))
    return client


@pytest.mark.parametrize("name", sorted(RULES))
def test_authorization_matrix(name, world):
    rule = RULES[name]
    url = reverse(name, kwargs=rule.kwargs(world))
    failures = []
    for method, expected_by_persona in (("GET", rule.get), ("POST", rule.post)):
        for persona in PERSONAS:
            client = client_for(persona, world)
            if method == "GET":
                response = client.get(url)
            else:
                response = client.post(url, rule.post_data(world))
            expected = expected_by_persona[persona]
            if expected == LOGIN:
                ok = response.status_code == 302 and response["Location"].startswith(
                    reverse(settings.LOGIN_URL)
                )
            else:
                ok = response.status_code == expected
            if not ok:
                failures.append(
                    f"{method} {url} as {persona}: {response.status_code}, expected {expected}"
                )
    assert not failures, "\n".join(failures)
