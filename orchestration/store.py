"""The desired state store: routers, their networks and every rule, in a database through SQLAlchemy
(SQLite file by default, PostgreSQL when several managers share it), its schema kept by Alembic
migrations, and the per-router lock that serializes everything sent to one router across processes.
A redundant pair is one logical router: a pairs row, two member router rows naming it, and one desired
state, kept with its first member (a) and read and recorded through the pair's or either member's name.
"""

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from vr.document import CheckedCommand, to_json
from vr.model import SECTIONS

from orchestration.locks import Timeout, fair_lock
from vrpipe.errors import VrpipeError, shown

MIGRATIONS = Path(__file__).parent / "migrations"


class Base(DeclarativeBase):
    pass


class PairRow(Base):
    __tablename__ = "pairs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    sync_bridge: Mapped[str] = mapped_column(String(15))
    sync_network: Mapped[str] = mapped_column(String(18))  # the members' /29 on the sync link
    members: Mapped[list["RouterRow"]] = relationship(back_populates="pair", order_by="RouterRow.member")


class RouterRow(Base):
    __tablename__ = "routers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    deployer: Mapped[str] = mapped_column(String(32))
    control_address: Mapped[str] = mapped_column(String(64))
    jump_host: Mapped[str | None] = mapped_column(String(255))
    host_key: Mapped[str | None] = mapped_column(Text)
    networks: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    settings: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)  # the deployer's: rootfs or image, accel, host
    status: Mapped[str] = mapped_column(String(16), default="created")  # created, running, stopped
    health: Mapped[str | None] = mapped_column(String(16))  # healthy, unhealthy; None before the first check
    health_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    health_failures: Mapped[int] = mapped_column(Integer, default=0)  # failed checks in a row
    health_detail: Mapped[str | None] = mapped_column(Text)  # what the last check found wrong
    # a member of a redundant pair (migration 0007; no constraint in the database, the store keeps it)
    pair_id: Mapped[int | None] = mapped_column(ForeignKey("pairs.id"), index=True)
    member: Mapped[str | None] = mapped_column(String(1))  # a or b
    pair: Mapped[PairRow | None] = relationship(back_populates="members")
    rules: Mapped[list["RuleRow"]] = relationship(cascade="all, delete-orphan", order_by="RuleRow.id")


class RuleRow(Base):
    __tablename__ = "rules"
    __table_args__ = (UniqueConstraint("router_id", "section", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"), index=True)
    section: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(Text)  # JSON list of the item's key fields, as the engine keys it
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


@dataclass(frozen=True)
class Network:
    """One NIC of a router: its device inside the router and the host bridge it is plugged into."""

    device: str
    bridge: str


@dataclass(frozen=True)
class Health:
    """A router's health as last checked: `state` healthy or unhealthy (None before the first check; a
    router turns unhealthy only after a number of failed checks in a row), `detail` what the last one found."""

    state: str | None = None
    at: datetime | None = None
    failures: int = 0
    detail: str | None = None


@dataclass(frozen=True)
class Router:
    """A router as the store knows it (a detached copy: safe to pass between threads)."""

    id: int
    name: str
    deployer: str
    control_address: str
    jump_host: str | None
    host_key: str | None
    networks: tuple[Network, ...]
    settings: dict[str, str] = field(default_factory=dict)
    status: str = "created"
    health: Health = Health()
    pair: str | None = None  # the pair's name, for a member of a redundant pair


@dataclass(frozen=True)
class Pair:
    """A redundant pair: one logical router of two members (member a first)."""

    id: int
    name: str
    members: tuple[str, str]
    sync_bridge: str
    sync_network: str


class NotFound(VrpipeError):
    pass


class LockTimeout(VrpipeError):
    pass


def _router(row: RouterRow) -> Router:
    networks = tuple(Network(**n) for n in row.networks or ())
    return Router(
        row.id, row.name, row.deployer, row.control_address, row.jump_host, row.host_key, networks,
        dict(row.settings or {}), row.status, _health(row), row.pair.name if row.pair else None,
    )


def _pair(row: PairRow) -> Pair:
    a, b = (m.name for m in row.members)
    return Pair(row.id, row.name, (a, b), row.sync_bridge, row.sync_network)


def _health(row: RouterRow) -> Health:
    at = row.health_at
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # SQLite keeps no time zone: the store writes UTC
    return Health(row.health, at, row.health_failures or 0, row.health_detail)


class StoreError(VrpipeError):
    """The database could not be opened or used."""


def _store_error(url: str, err: Exception) -> StoreError:
    shown = make_url(url).render_as_string(hide_password=True)
    reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
    return StoreError(
        f"cannot use the store {shown}: {reason}",
        hint="check --db (or the database setting): an SQLite file in a writable folder, or a reachable PostgreSQL",
    )


class Store:
    """One database; `url` is an SQLAlchemy URL (sqlite:///path or postgresql+psycopg://...)."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = create_engine(url)
            self._migrate()
        except (SQLAlchemyError, ValueError, OSError) as err:
            raise _store_error(url, err) from None

    def _migrate(self) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            alembic_command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except SQLAlchemyError as err:
            raise _store_error(self.url, err) from None

    def _row(self, session: Session, name: str) -> RouterRow:
        row = session.scalars(select(RouterRow).where(RouterRow.name == name)).one_or_none()
        if row is None:
            raise NotFound(f"no router named {shown(name)} in the store")
        return row

    def _keeper(self, session: Session, name: str) -> RouterRow:
        """The row holding the desired state of this router, pair, or member of a pair (member a)."""
        pair = session.scalars(select(PairRow).where(PairRow.name == name)).one_or_none()
        if pair is None:
            row = self._row(session, name)
            if row.pair is None:
                return row
            pair = row.pair
        return pair.members[0]

    # routers

    def add_router(
        self,
        name: str,
        deployer: str,
        control_address: str | Callable[[int], str],
        networks: Iterable[Network] = (),
        jump_host: str | None = None,
        settings: Mapping[str, str] | None = None,
        member_of: tuple[int, str] | None = None,
    ) -> Router:
        """A new router (`member_of`: as member a or b of the pair with this id). `control_address` is an
        address, or a function of the router's id giving one: it is called in the same transaction, so that
        managers creating routers at once never share one."""
        with self._session() as session:
            self._check_free(session, name)
            row = RouterRow(
                name=name,
                deployer=deployer,
                control_address="",
                jump_host=jump_host,
                networks=[{"device": n.device, "bridge": n.bridge} for n in networks],
                settings=dict(settings or {}),
                status="created",
                pair_id=member_of[0] if member_of else None,
                member=member_of[1] if member_of else None,
            )
            session.add(row)
            session.flush()
            row.control_address = control_address(row.id) if callable(control_address) else control_address
            return _router(row)

    @staticmethod
    def _check_free(session: Session, name: str) -> None:
        taken = session.scalars(select(RouterRow.id).where(RouterRow.name == name)).first() is not None
        if taken or session.scalars(select(PairRow.id).where(PairRow.name == name)).first() is not None:
            raise VrpipeError(f"a router named {shown(name)} already exists", hint="choose another name")

    def add_pair(self, name: str, members: tuple[str, str], sync: Callable[[int], tuple[str, str]]) -> Pair:
        """A new pair, before its members (`add_router(..., member_of=(pair.id, "a"))`); `sync` gives its sync
        bridge and network from its id, in the same transaction (as a router's control address)."""
        with self._session() as session:
            for taken in (name, *members):
                self._check_free(session, taken)
            row = PairRow(name=name, sync_bridge="", sync_network="")
            session.add(row)
            session.flush()
            row.sync_bridge, row.sync_network = sync(row.id)
            return Pair(row.id, name, members, row.sync_bridge, row.sync_network)

    def pair(self, name: str) -> Pair | None:
        """The pair of this name, or None when there is none."""
        with self._session() as session:
            row = session.scalars(select(PairRow).where(PairRow.name == name)).one_or_none()
            return _pair(row) if row is not None and len(row.members) == 2 else None

    def pairs(self) -> list[Pair]:
        with self._session() as session:
            rows = session.scalars(select(PairRow).order_by(PairRow.id))
            return [_pair(row) for row in rows if len(row.members) == 2]

    def remove_pair(self, name: str) -> None:
        """The pair, its members and its desired state."""
        with self._session() as session:
            row = session.scalars(select(PairRow).where(PairRow.name == name)).one()
            for member in row.members:
                session.delete(member)
            session.delete(row)

    def router(self, name: str) -> Router:
        with self._session() as session:
            return _router(self._row(session, name))

    def check_known(self, names: Sequence[str]) -> None:
        """NotFound for the first of these names that is neither a router nor a pair: said before any router
        is touched."""
        with self._session() as session:
            known = set(session.scalars(select(RouterRow.name).where(RouterRow.name.in_(names))))
            known |= set(session.scalars(select(PairRow.name).where(PairRow.name.in_(names))))
        for name in names:
            if name not in known:
                raise NotFound(f"no router named {shown(name)} in the store")

    def routers(self) -> list[Router]:
        with self._session() as session:
            return [_router(row) for row in session.scalars(select(RouterRow).order_by(RouterRow.id))]

    def remove_router(self, name: str) -> None:
        with self._session() as session:
            session.delete(self._row(session, name))

    def set_status(self, name: str, status: str) -> None:
        with self._session() as session:
            self._row(session, name).status = status

    def set_networks(self, name: str, networks: Iterable[Network]) -> Router:
        """The router's NICs, after a plug or unplug."""
        with self._session() as session:
            row = self._row(session, name)
            row.networks = [{"device": n.device, "bridge": n.bridge} for n in networks]
            return _router(row)

    def record_health(self, name: str, ok: bool, detail: str | None, unhealthy_after: int) -> Health:
        """Record one health check: a passed check makes the router healthy at once, a failed one counts, and
        the `unhealthy_after`-th failure in a row makes it unhealthy. Returns the health now recorded."""
        with self._session() as session:
            row = self._row(session, name)
            row.health_at = datetime.now(UTC)
            row.health_failures = 0 if ok else (row.health_failures or 0) + 1
            row.health_detail = detail
            if ok:
                row.health = "healthy"
            elif row.health_failures >= unhealthy_after:
                row.health = "unhealthy"
            return _health(row)

    def forget_host_key(self, name: str) -> None:
        with self._session() as session:
            self._row(session, name).host_key = None

    def pin_host_key(self, name: str, host_key: str) -> None:
        with self._session() as session:
            self._row(session, name).host_key = host_key

    # rules

    def state(self, name: str) -> dict[str, Any]:
        """The router's (or pair's) desired state as the `state` object of an engine document."""
        with self._session() as session:
            rows = self._keeper(session, name).rules
            state: dict[str, Any] = {s: [] for s, section in SECTIONS.items() if section.key_fields}
            for row in rows:
                if SECTIONS[row.section].key_fields:
                    state[row.section].append(row.data)
                else:
                    state[row.section] = row.data
            return state

    def record(self, name: str, commands: Sequence[CheckedCommand]) -> None:
        """Make validated engine commands (vr.document.CheckedCommand) part of the desired state, in order."""
        keys = [json.dumps(to_json(list(c.key))) for c in commands]
        with self._session() as session:
            router_id = self._keeper(session, name).id
            existing = self._rules(session, router_id, set(keys))
            for c, key in zip(commands, keys, strict=True):
                row = existing.pop((c.section, key), None)
                if c.op == "remove":
                    if row is not None:
                        session.execute(delete(RuleRow).where(RuleRow.id == row.id))
                    continue
                data = to_json(c.item)
                if row is None:
                    row = RuleRow(router_id=router_id, section=c.section, key=key, data=data)
                    session.add(row)
                else:
                    row.data = data
                existing[(c.section, key)] = row

    @staticmethod
    def _rules(
        session: Session, router_id: int, keys: Iterable[str], chunk: int = 500
    ) -> dict[tuple[str, str], RuleRow]:
        """The router's rules with these keys, by (section, key): only those rows, read in chunks."""
        keys, found = sorted(keys), {}
        for start in range(0, len(keys), chunk):
            query = select(RuleRow).where(RuleRow.router_id == router_id, RuleRow.key.in_(keys[start : start + chunk]))
            found.update({(r.section, r.key): r for r in session.scalars(query)})
        return found

    # the per-router lock

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 60.0) -> Iterator[None]:
        """Hold the router's lock: a file lock beside an SQLite database (processes on this host), an
        advisory lock on PostgreSQL (processes on any host sharing the database)."""
        if self.engine.dialect.name == "postgresql":
            with self._advisory_lock(name, timeout):
                yield
        else:
            with self._file_lock(name, timeout):
                yield

    @contextlib.contextmanager
    def _advisory_lock(self, name: str, timeout: float) -> Iterator[None]:
        with self.engine.connect() as connection:
            connection.execute(text(f"SET lock_timeout = {int(timeout * 1000)}"))
            try:
                connection.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": name})
            except OperationalError as err:
                raise LockTimeout(
                    f"router {shown(name)} stayed locked by another vrpipe for {timeout:.0f}s",
                    hint="wait for it to finish, or raise lock_timeout",
                ) from err
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                connection.commit()

    @contextlib.contextmanager
    def _file_lock(self, name: str, timeout: float) -> Iterator[None]:
        database = self.engine.url.database
        if not database or database == ":memory:":
            raise VrpipeError("the per-router lock needs an SQLite file or PostgreSQL, not an in-memory database")
        folder = Path(database).with_name(Path(database).name + ".locks") / name
        try:
            with fair_lock(folder, timeout):
                yield
        except Timeout:
            raise LockTimeout(
                f"router {shown(name)} stayed locked by another vrpipe for {timeout:.0f}s",
                hint="wait for it to finish, or raise lock_timeout",
            ) from None
