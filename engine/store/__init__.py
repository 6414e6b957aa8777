"""sopflow's database: the only package that imports SQLAlchemy and Alembic."""

from sopflow.engine.store.records import (
    Cascade,
    CaseChange,
    CaseLink,
    CaseQuery,
    CaseRow,
    DefinitionRow,
    DelegationRow,
    Fired,
    NewCase,
    NotificationRow,
    NotificationSpec,
    OrgRow,
    OverdueRow,
    StoredVote,
    TimerRow,
    TimerSpec,
    Write,
)
from sopflow.engine.store.store import Reads, Store

__all__ = [
    "Cascade",
    "CaseChange",
    "CaseLink",
    "CaseQuery",
    "CaseRow",
    "DefinitionRow",
    "DelegationRow",
    "Fired",
    "NewCase",
    "NotificationRow",
    "NotificationSpec",
    "OrgRow",
    "OverdueRow",
    "Reads",
    "Store",
    "StoredVote",
    "TimerRow",
    "TimerSpec",
    "Write",
]
