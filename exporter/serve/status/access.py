"""Who may see what: the contract's ``status.users`` rules, decided in one place.

The HTTP edge asks once per request and gets a ``Viewer``; every page, the event stream
and ``/metrics`` then obey the same answer, so an organization administrator cannot reach
another organization's data through a path that forgot to check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

EVERY_ORG = "*"


@dataclass(frozen=True, slots=True)
class Viewer:
    """What one authenticated user may see. ``orgs`` is ``None`` for every organization."""

    user: str | None
    orgs: frozenset[str] | None
    status: bool  # may open /status at all
    metrics: bool  # may read /metrics (it carries every organization)
    anything: bool = True  # False for a user mapped to []: 403 everywhere

    def sees(self, org: str) -> bool:
        return self.status and (self.orgs is None or org in self.orgs)

    @property
    def is_global(self) -> bool:
        return self.status and self.orgs is None


GLOBAL = Viewer(user=None, orgs=None, status=True, metrics=True)


class AccessRules:
    """``status.users`` (user -> organization slugs, or ``["*"]``) over the web config's users.

    No basic auth at all: everyone sees everything, as on /metrics. Basic auth without a
    map: every user is a global administrator. With a map, a user outside it is a machine
    (a Prometheus scraper) that reads /metrics and nothing else.
    """

    def __init__(self, users: Mapping[str, Iterable[str]] | None, *, auth_required: bool) -> None:
        self.auth_required = auth_required
        self.users = {user: tuple(orgs) for user, orgs in (users or {}).items()}

    def viewer(self, user: str | None) -> Viewer:
        if not self.auth_required or not self.users:
            return Viewer(user=user, orgs=None, status=True, metrics=True)
        if user is None or user not in self.users:
            return Viewer(user=user, orgs=frozenset(), status=False, metrics=True)
        orgs = self.users[user]
        if not orgs:
            return Viewer(user=user, orgs=frozenset(), status=False, metrics=False, anything=False)
        if EVERY_ORG in orgs:
            return Viewer(user=user, orgs=None, status=True, metrics=True)
        return Viewer(user=user, orgs=frozenset(orgs), status=True, metrics=False)
