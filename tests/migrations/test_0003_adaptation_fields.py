"""Revision 0003 (adaptations.name and .metadata) on SQLite and PostgreSQL: a job stored before it
reads back with neither, the listing filters (``api.adaptation_fields.list_filters``) select by
name and by a metadata key on both databases, and it downgrades and upgrades again."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from api.adaptation_fields import list_filters
from service.models import Adaptation
from utils.factories import make_adaptation
from utils.migrations import alembic_config, column_names, insert_old_adaptation

COLUMNS = {"name", "metadata"}


def _check(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0002")
    assert not COLUMNS & column_names(url, "adaptations")
    engine = create_engine(url)
    insert_old_adaptation(engine, "old", "queued")
    command.upgrade(cfg, "head")
    assert COLUMNS <= column_names(url, "adaptations")
    a = make_adaptation(url, "t1", name="alpha", user_metadata={"project": "shoes", "n": "3"})
    b = make_adaptation(url, "t1", name="beta", user_metadata={"project": "bags"})

    def ids(name=None, metadata=()):
        with Session(engine) as session:
            return set(session.scalars(select(Adaptation.id).where(
                *list_filters(name, list(metadata)))))

    assert ids() == {"old", a, b}
    assert ids(name="alpha") == {a}
    assert ids(metadata=["project:shoes"]) == {a} and ids(metadata=["n:3"]) == {a}
    assert ids(metadata=["project:bags", "n:3"]) == set() and ids(metadata=["project:"]) == set()
    with Session(engine) as session:
        old = session.get(Adaptation, "old")
        assert (old.name, old.user_metadata) == (None, None)
    engine.dispose()
    command.downgrade(cfg, "0002")
    assert not COLUMNS & column_names(url, "adaptations")
    command.upgrade(cfg, "head")
    assert COLUMNS <= column_names(url, "adaptations")


def test_0003(database_url: str) -> None:
    _check(database_url)
