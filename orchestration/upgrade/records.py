"""What the store keeps about in-place upgrades: per router, its package versions, and the outcome and
time of its last upgrade (table upgrade_records, migration 0002; a record belongs to the router with that
id and name: a router recreated under the same name starts without one); and per repository and channel
the newest Release date any router was served (table release_dates, migration 0003), which no later
upgrade may go back behind; and why a router needs a reboot (migration 0006).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from debian.debian_support import Version
from sqlalchemy import JSON, DateTime, ForeignKey, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column
from vr import contract

from orchestration.store import Base, RouterRow, Store
from orchestration.upgrade import apt


class UpgradeRow(Base):
    __tablename__ = "upgrade_records"

    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True)
    router_name: Mapped[str] = mapped_column(String(63))
    packages: Mapped[dict[str, str]] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    upgraded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reboot_required: Mapped[list[str] | None] = mapped_column(JSON)  # why (migration 0006); [] none; None unknown


class ReleaseRow(Base):
    __tablename__ = "release_dates"

    repo_url: Mapped[str] = mapped_column(String(1000), primary_key=True)
    channel: Mapped[str] = mapped_column(String(63), primary_key=True)
    released_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # the Release file's Date
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class UpgradeRecord:
    packages: dict[str, str]
    outcome: str | None
    detail: str | None
    upgraded_at: datetime | None
    reboot_required: list[str] | None = None


def record(
    store: Store,
    name: str,
    packages: Mapping[str, str],
    outcome: str | None = None,
    detail: str | None = None,
    reboot_required: Sequence[str] | None = None,
) -> None:
    """Keep the router's package versions; with an outcome, also that of its last upgrade, timed now; with
    reboot_required (a list of reasons, empty for none), why the router needs a reboot."""
    router = store.router(name)
    with Session(store.engine) as session, session.begin():
        row = session.get(UpgradeRow, router.id)
        if row is None or row.router_name != name:
            row = session.merge(UpgradeRow(router_id=router.id, router_name=name, packages={}))
            row.outcome = row.detail = row.upgraded_at = None
        if packages:  # empty when the router could not be asked: keep what was known
            row.packages = dict(packages)
        if outcome is not None:
            row.outcome, row.detail, row.upgraded_at = outcome, detail, datetime.now(UTC)
        if reboot_required is not None:
            row.reboot_required = list(reboot_required)


def records(store: Store) -> dict[str, UpgradeRecord]:
    """{router name: UpgradeRecord} for the routers that have one."""
    same_router = (RouterRow.id == UpgradeRow.router_id) & (RouterRow.name == UpgradeRow.router_name)
    with Session(store.engine) as session:
        return {
            r.router_name: UpgradeRecord(dict(r.packages), r.outcome, r.detail, r.upgraded_at, r.reboot_required)
            for r in session.scalars(select(UpgradeRow).join(RouterRow, same_router))
        }


def lagging(versions: Mapping[str, Mapping[str, str]], package: str = contract.ENGINE_PACKAGE) -> set[str]:
    """Of {router name: {package: version}}, the routers whose `package` is older than the newest
    version any router of the fleet has (whether or not dpkg finished installing it)."""
    found = {name: Version(apt.bare_version(p[package])) for name, p in versions.items() if p.get(package)}
    if not found:
        return set()
    newest = max(found.values())
    return {name for name, v in found.items() if v < newest}


def note_release(store: Store, url: str, channel: str, date: datetime) -> datetime | None:
    """Keep `date` as the newest Release date seen for this repository and channel; returns the newer date
    seen before when `date` is older (a rollback to an older repository), else None."""
    try:
        return _note_release(store, url, channel, date)
    except IntegrityError:  # another manager added the first row at the same moment: compare with it
        return _note_release(store, url, channel, date)


def _note_release(store: Store, url: str, channel: str, date: datetime) -> datetime | None:
    with Session(store.engine) as session, session.begin():
        row = session.get(ReleaseRow, (url, channel), with_for_update=True)
        if row is None:
            session.add(ReleaseRow(repo_url=url, channel=channel, released_at=date, seen_at=datetime.now(UTC)))
            return None
        newest = _aware(row.released_at)
        if date < newest:
            return newest
        row.released_at, row.seen_at = date, datetime.now(UTC)
        return None


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; the store writes only UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
