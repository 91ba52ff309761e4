"""Rows read back as model instances without `Model.__init__`.

The engine reads its operations, events, customers and orders back by the hundred in every batch
(a claim's operations, the results it records, the events it stages and plans). Django builds each
through `Model.__init__`: the `pre_init` and `post_init` signals (sent even with no receiver), a
fresh `ModelState` and a `setattr` per field. In a sampling profile of the realtime worker at full
load that was an eighth of its Python time, `Signal.send` alone a twentieth (bench/README.md,
"Where an event's milliseconds go").

`from_db` here builds the same instance as Django's: the fields read set in the instance's
`__dict__` (where Django's `setattr` puts them too), the fields not read left out (deferred: read on first access), `_state`
not adding and on the database it came from. It falls back to Django's own while any receiver
listens for either signal, or when a field's class attribute would intercept a `setattr` (a file
field's descriptor, say), so a model that gains either keeps Django's behaviour.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Self

from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django.db.models.signals import post_init, pre_init

# Class attributes of a field's attname under which a value set in `__dict__` is what `setattr`
# leaves on a new instance: a foreign key's `__set__` only forgets a cached related object first.
PLAIN = (DeferredAttribute, ForeignKeyDeferredAttribute)


class LoadedFast:
    """Mixed into a model (before `models.Model`): its rows load without `Model.__init__`."""

    _meta: Any

    @classmethod
    def _loads_fast(cls) -> bool:
        # Per class, not inherited: a subclass checks its own fields.
        plain = cls.__dict__.get("_plain_fields")
        if plain is None:
            plain = all(
                type(getattr(cls, f.attname, None)) in PLAIN for f in cls._meta.concrete_fields
            )
            cls._plain_fields = plain  # type: ignore[attr-defined]
        # Any receiver of either signal, for any model, sends it to Django's way: a look at two
        # lists, where asking whether one listens for this model would cost a lock per row.
        return plain and not (pre_init.receivers or post_init.receivers)

    @classmethod
    def from_db(
        cls, db: str | None, field_names: Collection[str], values: Collection[Any], **kwargs: Any
    ) -> Self:
        if kwargs or not cls._loads_fast():
            return super().from_db(db, field_names, values, **kwargs)  # type: ignore[misc,no-any-return]
        new = cls.__new__(cls)
        state = ModelState()
        state.adding = False
        state.db = db
        attrs = new.__dict__
        attrs["_state"] = state
        # `field_names` are the attnames read, in the order of `values` (Django's ModelIterable).
        attrs.update(zip(field_names, values, strict=True))
        return new
