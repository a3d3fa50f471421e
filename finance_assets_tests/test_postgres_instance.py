"""The production instance for real: Dagster's storage in PostgreSQL (dagster-postgres) and
the queued run coordinator bounding concurrent runs, both read from deploy/dagster.yaml as
they are shipped (only its Kubernetes run launcher is left out: runs are local processes).

A PostgreSQL server is started from the machine's binaries on a free loopback port, the
daemon (``dagster-daemon run``) drains the run queue, and a backfill over the organizations
submits one run per organization; the test waits for every run, then reads the runs back
from PostgreSQL and each organization's records from the warehouse.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest
import yaml

from finance_assets.sandbox import Sandbox, SandboxConfig
from finance_assets_tests.harness import (
    PROJECT_ROOT,
    assert_warehouse_equals_sandbox,
    free_port,
    stop_process_group,
)

DEPLOY_INSTANCE = PROJECT_ROOT / "deploy" / "dagster.yaml"
MAX_CONCURRENT_RUNS = 2
# Three organizations on sandboxes of their own (each run starts its organization's
# server): different books, sizes and limits, small enough for a run of a few seconds.
BOOKS = {
    "acme": {"seed": 7, "scale": 0.04, "rate_limit_per_minute": 6000},
    "globex": {"seed": 11, "scale": 0.02, "rate_limit_per_minute": 3000},
    "initech": {"seed": 13, "scale": 0.03},
}
DAGSTER_DAEMON = Path(sys.executable).with_name("dagster-daemon")
RUN_SECONDS = 420  # all the runs, from the backfill to their end (1 to 2.5 min on 2 busy cores)


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: Debian's /usr/lib/postgresql/<major>/bin,
    else initdb and pg_ctl on PATH."""
    majors = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda bindir: int(bindir.parent.name) if bindir.parent.name.isdigit() else 0,
    )
    for bindir in reversed(majors):
        if all((bindir / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return Path(initdb).parent if initdb and pg_ctl else None


class PostgresServer:
    """A throwaway PostgreSQL server on a free loopback port: its data directory in a
    temporary folder, a superuser ``dagster`` with a random password, a database ``dagster``.

    initdb and pg_ctl refuse to run as root: as root (CI), they run as the ``postgres``
    system user Debian's package creates (else ``nobody``), who owns the folder.
    """

    user = "dagster"
    database = "dagster"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.root = Path(tempfile.mkdtemp(prefix="finance-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            account = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(account)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.as_user = ["runuser", "-u", account, "--"]
            self._owner = (entry.pw_uid, entry.pw_gid)
        else:
            self._owner = None

    def _tool(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args],
            cwd=self.root, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed:\n{done.stdout}{done.stderr}{log}")

    def start(self) -> PostgresServer:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self._owner:
            os.chown(password_file, *self._owner)
        self._tool(
            "initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={password_file}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        # Durability is not what is tested: no fsync keeps the server fast on a busy machine.
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                   "-w", "-t", "60", "start")  # fmt: skip
        conn = self.connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE runs outside a transaction
            with conn.cursor() as cursor:
                cursor.execute(f"create database {self.database}")
        finally:
            conn.close()
        return self

    def connect(self, database: str | None = None):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=database or self.database,
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads for its storage."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._tool("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin or initdb on PATH)")
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


def production_instance(home: Path) -> None:
    """DAGSTER_HOME/dagster.yaml: deploy/dagster.yaml without its Kubernetes run launcher."""
    config = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    del config["run_launcher"]
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


class Daemon:
    """``dagster-daemon run`` on the project's workspace, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(DAGSTER_DAEMON), "run", "-w", "workspace.yaml"],
                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        stop_process_group(self.process)


def dagster_cli(env: dict[str, str], *args: str) -> str:
    """A ``dagster`` command on the project's workspace; its output, or a failure showing it."""
    done = subprocess.run(
        [sys.executable, "-m", "dagster", *args, "-w", "workspace.yaml"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"dagster {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def test_one_run_per_organization_through_a_postgres_instance(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    warehouse = tmp_path / "warehouse.duckdb"
    production_instance(home)
    organizations = tmp_path / "organizations.yaml"
    organizations.write_text(
        yaml.safe_dump(
            {"organizations": [{"key": key, "sandbox": books} for key, books in BOOKS.items()]}
        )
    )
    instance_env = {**postgres.env(), "DAGSTER_MAX_CONCURRENT_RUNS": str(MAX_CONCURRENT_RUNS)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCE_", "DAGSTER_"))}
    env.update(
        instance_env,
        DAGSTER_HOME=str(home),
        FINANCE_ORGANIZATIONS_FILE=str(organizations),
        FINANCE_DUCKDB_PATH=str(warehouse),
    )
    for name, value in instance_env.items():
        monkeypatch.setenv(name, value)

    daemon = Daemon(env, tmp_path / "daemon.log")
    try:
        # A backfill over every organization: one run each, submitted to the queue.
        dagster_cli(
            env, "job", "backfill", "-j", "finance_daily", "--partitions", ",".join(BOOKS),
            "--noprompt",
        )  # fmt: skip
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = wait_for_runs(instance, daemon, len(BOOKS))
            for record in records:
                enqueued = instance.all_logs(
                    record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED
                )
                assert enqueued, "the run did not pass through the queue"
    finally:
        daemon.stop()

    partitions = {r.dagster_run.tags.get("dagster/partition") for r in records}
    assert partitions == set(BOOKS)  # one run per organization
    run_ids = {r.dagster_run.run_id for r in records}
    with postgres.connect() as conn, conn.cursor() as cursor:
        cursor.execute("select run_id, status from runs")
        stored = dict(cursor.fetchall())
        cursor.execute("select count(*) from event_logs where run_id = any(%s)", (list(run_ids),))
        events = cursor.fetchone()[0]
    conn.close()
    assert {run_id: stored.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, "SUCCESS")
    assert events > 0

    intervals = [(r.start_time, r.end_time) for r in records]
    assert all(start and end for start, end in intervals)
    assert max_overlap(intervals) <= MAX_CONCURRENT_RUNS, intervals

    with duckdb.connect(str(warehouse), read_only=True) as conn:
        landed = dict(
            conn.execute(
                "select _organization, count(*) from finance.invoices "
                "where _deleted_at is null group by 1"
            ).fetchall()
        )
    served = {key: len(books_of(key).records("invoices")) for key in BOOKS}
    assert landed == served
    for key in BOOKS:  # every table, to the cent, organization by organization
        assert_warehouse_equals_sandbox(books_of(key), warehouse, organization=key)


def books_of(key: str) -> Sandbox:
    """The records an organization's sandbox serves (the same seed and scale, the same
    records), without starting a server."""
    return Sandbox(SandboxConfig(seed=BOOKS[key]["seed"], scale=BOOKS[key]["scale"]))


def wait_for_runs(
    instance: dg.DagsterInstance, daemon: Daemon, expected: int
) -> list[dg.RunRecord]:
    """The runs' records once all ``expected`` have ended; every one must have succeeded."""
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        records = instance.get_run_records()
        ended = [r for r in records if r.dagster_run.is_finished]
        if len(records) >= expected and len(ended) == len(records):
            break
        if daemon.process.poll() is not None:
            raise AssertionError(f"the daemon exited:\n{daemon.output()}")
        if time.monotonic() > deadline:
            states = [r.dagster_run.status.value for r in records]
            raise AssertionError(f"runs still not ended ({states}):\n{daemon.output()}")
        time.sleep(1)
    failed = [r.dagster_run for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    for run in failed:
        failure = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        messages = [e.message for e in failure] or ["(no failure event)"]
        raise AssertionError(f"run {run.run_id} ({run.tags}) ended {run.status}: {messages}")
    return list(records)
