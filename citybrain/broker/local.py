"""The embedded broker: a real Apache Kafka (KRaft, combined broker/controllers), one node by default,
or a local cluster of several (``citybrain broker up --nodes 3``: replication factor 3,
``min.insync.replicas`` 2) for failover.

The jars come from Maven Central through ``infra/kafka/pom.xml``; storage is formatted
once and kept under ``<state_dir>/kafka``, so stopping and starting keeps every record.

It is secured like a production cluster: clients authenticate with SASL SCRAM-SHA-512 and
Kafka's standard ACL authoriser (``StandardAuthorizer``) allows only what is granted. The
platform administers it (topics, grants) as the super user ``citybrain-admin``, whose SCRAM
credential is written into the storage when it is formatted; departments and the platform's
services (``svc-gateway``, ...) get their principals and grants from ``citybrain access apply``.
The controller listener authenticates the broker with SASL PLAIN (KRaft cannot use SCRAM
there: SCRAM credentials live in the metadata it serves).
Passwords are generated on first start and kept, readable by the owner only, in
``<state_dir>/kafka/config/credentials.json``; none is ever put on a command line (formatting reads the
admin's from an owner-only argument file).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from citybrain.settings import ADMIN_USER, SASL_MECHANISM, Settings, credentials_path, packaged, write_private
from citybrain.errors import ServiceError

log = logging.getLogger(__name__)

#: The pinned Apache Kafka release; keep in step with infra/kafka/pom.xml.
KAFKA_VERSION = "4.3.1"
POM = packaged("kafka", "pom.xml")
CONTROLLER_USER = "citybrain-controller"


class BrokerError(ServiceError):
    """The embedded broker cannot be fetched, started or reached; the message says why and the fix.

    Not retriable as such: a missing Java, a port in use or a storage from an older set-up needs the fix."""

    retriable = False


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    log_file: Path
    nodes: int = 1
    nodes_up: int = 0

    def describe(self) -> str:
        state = f"running (pid {self.pid})" if self.running else "stopped"
        if self.nodes > 1:
            state = f"{self.nodes_up} of {self.nodes} nodes running"
        return (
            f"Kafka {self.version} {state} at {self.bootstrap} (SASL SCRAM-SHA-512, ACLs); "
            f"data in {self.data_dir}; log {self.log_file}"
        )


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of 16 bytes) that does not start with '-'.

    An id starting with '-' is taken for an option by the storage tool's argument parser
    (about 1 format in 64 failed that way); Kafka's own Uuid.randomUuid avoids it too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


#: Where a multi-node local cluster records its size and id (absent: one node).
CLUSTER_FILE = "cluster.json"


@dataclass(frozen=True)
class Node:
    """One combined broker/controller of the local cluster. A single node keeps the original layout
    (``<kafka>/config``, ``data``, ``logs``); node ``i`` of several lives in ``<kafka>/node-<i>/``, on the ports
    ``Settings.node_ports(i)``."""

    index: int
    broker_port: int
    controller_port: int
    config_dir: Path
    data_dir: Path
    log_file: Path
    pid_file: Path

    @classmethod
    def of(cls, settings: Settings, index: int, count: int) -> Node:
        home = settings.kafka_dir
        root = home if count == 1 else home / f"node-{index}"
        broker_port, controller_port = settings.node_ports(index)
        return cls(index, broker_port, controller_port, home / "config" if count == 1 else root / "config",
                   root / "data", root / "logs" / "server.out",
                   home / ("broker.pid" if count == 1 else f"node-{index}.pid"))


class LocalBroker:
    """Fetch, format, start, stop and inspect the embedded Kafka broker: one node, or a cluster of several
    combined broker/controllers on 127.0.0.1 (``citybrain broker up --nodes 3``)."""

    def __init__(self, settings: Settings, nodes: int | None = None) -> None:
        if not settings.embedded:
            raise BrokerError(
                f"CITYBRAIN_BOOTSTRAP_SERVERS is set ({settings.bootstrap_servers}): the platform "
                "uses that cluster, not the embedded broker. Fix: unset it to manage the local broker."
            )
        self.settings = settings
        self.home = settings.kafka_dir
        formed = settings.broker_node_count()
        if nodes is not None and (self.home / CLUSTER_FILE).exists() and nodes != formed:
            raise BrokerError(f"The local broker in {self.home} was formed with {formed} node(s), not {nodes}. Fix: "
                              f"`citybrain broker up --nodes {formed}`, or `citybrain broker reset` and start again.")
        self.count = nodes or formed
        if self.count > 1 and (self.home / "data" / "meta.properties").exists():
            raise BrokerError(f"{self.home} holds a single-node broker's storage; a cluster of {self.count} is formed "
                              "fresh. Fix: `citybrain broker reset` (deletes the local broker's records) and start again.")
        self.nodes = [Node.of(settings, i, self.count) for i in range(1, self.count + 1)]
        self.lib_dir = settings.cache_dir / f"kafka-{KAFKA_VERSION}" / "lib"
        first = self.nodes[0]
        self.config_dir, self.data_dir, self.log_file, self.pid_file = (first.config_dir, first.data_dir, first.log_file,
                                                                        first.pid_file)
        self.credentials_file = credentials_path(settings.kafka_dir)

    # -- set-up ---------------------------------------------------------------------------

    def fetch(self) -> Path:
        """Resolve the broker's jars from Maven Central (cached) and return the lib folder."""
        marker = self.lib_dir / ".complete"
        if marker.exists():
            return self.lib_dir
        _require_tool("java", "Install Java 17 or newer (OpenJDK) and put `java` on PATH.")
        mvn = _require_tool("mvn", "Install Apache Maven 3.8+ and put `mvn` on PATH.")
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        log.info("fetching Apache Kafka %s jars from Maven Central", KAFKA_VERSION)
        cmd = [
            mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={self.lib_dir}", "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BrokerError(
                f"Maven could not fetch Apache Kafka {KAFKA_VERSION} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-2000:]}\n"
                "Fix: check that Maven Central is reachable (or a mirror is set in ~/.m2/settings.xml)."
            )
        if not any(self.lib_dir.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise BrokerError(f"Maven finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {self.lib_dir}.")
        marker.write_text(KAFKA_VERSION)
        return self.lib_dir

    def _credentials(self) -> dict[str, str]:
        """The admin and controller passwords: created with the storage, kept with it."""
        if self.credentials_file.exists():
            return json.loads(self.credentials_file.read_text())
        if (self.data_dir / "meta.properties").exists():
            raise BrokerError(
                f"The broker's storage in {self.data_dir} was formatted before CityBrain secured the broker "
                "(SASL SCRAM and ACLs), so it has no admin credential. Fix: `citybrain broker reset` "
                "(deletes the local broker's topics and records) and start again."
            )
        creds = {"admin_user": ADMIN_USER, "admin_password": secrets.token_urlsafe(24),
                 "controller_user": CONTROLLER_USER, "controller_password": secrets.token_urlsafe(24)}
        write_private(self.credentials_file, json.dumps(creds))
        return creds

    def _write_config(self, node: Node | None = None) -> Path:
        node = node or self.nodes[0]
        node.config_dir.mkdir(parents=True, exist_ok=True)
        creds = self._credentials()
        ctl_user, ctl_pw = creds["controller_user"], creds["controller_password"]
        props = node.config_dir / "server.properties"
        voters = ",".join(f"{n.index}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas, min_isr = min(3, self.count), min(2, self.count)
        lines = [
                    "# Written by `citybrain broker up`; edits are overwritten. Holds passwords: owner-only.",
                    "process.roles=broker,controller",
                    f"node.id={node.index}",
                    f"controller.quorum.voters={voters}",
                    f"listeners=SASL_PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
                    f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{node.broker_port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=SASL_PLAINTEXT",
                    "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
                    # Clients: SCRAM-SHA-512. Controller listener: PLAIN with a static user (see module doc).
                    f"listener.name.sasl_plaintext.sasl.enabled.mechanisms={SASL_MECHANISM}",
                    f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
                    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{creds["admin_user"]}" password="{creds["admin_password"]}";',
                    "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                    "sasl.mechanism.controller.protocol=PLAIN",
                    "listener.name.controller.plain.sasl.jaas.config="
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f'username="{ctl_user}" password="{ctl_pw}" user_{ctl_user}="{ctl_pw}";',
                    # Kafka's standard ACL authoriser: nothing is allowed that is not granted.
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    f"super.users=User:{creds['admin_user']};User:{ctl_user}",
                    "allow.everyone.if.no.acl.found=false",
                    f"log.dirs={node.data_dir}",
                    "num.partitions=1",
                    # Replicated as a cluster of this size can: 3 copies, 2 in sync for an acks=all write.
                    f"default.replication.factor={replicas}",
                    f"min.insync.replicas={min_isr}",
                    f"offsets.topic.replication.factor={replicas}",
                    f"transaction.state.log.replication.factor={replicas}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"share.coordinator.state.topic.replication.factor={replicas}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    "group.initial.rebalance.delay.ms=0",
                    # Topics come from contracts only (`citybrain topics apply`).
                    "auto.create.topics.enable=false",
                    # Every acknowledged record is fsynced before a clean shutdown completes.
                    "controlled.shutdown.enable=true",
                    "",
                ]
        write_private(props, "\n".join(lines))
        (node.config_dir / "log4j2.properties").write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.out.type = Console",
                    "appender.out.name = OUT",
                    "appender.out.layout.type = PatternLayout",
                    "appender.out.layout.pattern = [%d] %p %m (%c)%n",
                    "rootLogger.level = info",
                    "rootLogger.appenderRef.out.ref = OUT",
                    "logger.kafka.name = kafka",
                    "logger.kafka.level = info",
                    "logger.apache.name = org.apache.kafka",
                    "logger.apache.level = warn",
                    # Failed authentications and authoriser denials, for the security-monitoring DAG.
                    "logger.selector.name = org.apache.kafka.common.network.Selector",
                    "logger.selector.level = info",
                    "logger.authorizer.name = kafka.authorizer.logger",
                    "logger.authorizer.level = info",
                    "",
                ]
            )
        )
        return props

    def _java_cmd(self, main: str, *args: str, node: Node | None = None) -> list[str]:
        java = _require_tool("java", "Install Java 17 or newer (OpenJDK) and put `java` on PATH.")
        return [
            java, f"-Xmx{self.settings.broker_heap}", f"-Xms{self.settings.broker_heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={(node or self.nodes[0]).config_dir / 'log4j2.properties'}",
            "-cp", f"{self.lib_dir}/*", main, *args,
        ]

    def _cluster_id(self) -> str:
        """One id for every node of the cluster, kept beside them."""
        path = self.home / CLUSTER_FILE
        if self.count == 1:
            return new_cluster_id()
        if path.exists():
            return str(json.loads(path.read_text())["cluster_id"])
        cluster_id = new_cluster_id()
        self.home.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"nodes": self.count, "cluster_id": cluster_id}))
        return cluster_id

    def _format_storage(self, props: Path, node: Node | None = None) -> None:
        node = node or self.nodes[0]
        if (node.data_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        creds = self._credentials()
        log.info("formatting KRaft storage in %s (cluster id %s)", node.data_dir, cluster_id)
        scram = f"{SASL_MECHANISM}=[name={creds['admin_user']},password={creds['admin_password']}]"
        # The tool's arguments, the admin's password among them, go in an owner-only argument file that the java
        # launcher expands (`java @file`), never on the command line, which every user of the machine sees in `ps`.
        args_file = node.config_dir / "format.args"
        write_private(args_file, "\n".join(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", f'"{props}"',
                                            "--add-scram", scram, ""]))
        try:
            proc = subprocess.run(self._java_cmd(f"@{args_file}", node=node), capture_output=True, text=True)
        finally:
            args_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise BrokerError(f"Formatting KRaft storage failed:\n{(proc.stdout + proc.stderr)[-2000:]}")

    # -- lifecycle -------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        pids = [self.node_pid(n) for n in self.nodes]
        alive = [p for p in pids if p is not None and _alive(p)]
        return BrokerStatus(
            running=len(alive) == self.count and self._accepts_connections(),
            pid=alive[0] if alive else None,
            bootstrap=self.settings.bootstrap,
            version=KAFKA_VERSION,
            data_dir=self.data_dir if self.count == 1 else self.home,
            log_file=self.log_file,
            nodes=self.count,
            nodes_up=len(alive),
        )

    def up(self) -> BrokerStatus:
        """Start every node that is not running and wait until the broker serves requests. Idempotent: a
        cluster with a node down gets that node back."""
        starting = []
        for node in self.nodes:
            pid = self.node_pid(node)
            if pid is not None and _alive(pid):
                continue
            for port in (node.broker_port, node.controller_port):
                if _port_busy(port):
                    raise BrokerError(
                        f"Port {port} on 127.0.0.1 is in use by another process, so the embedded broker "
                        "cannot listen there. Fix: stop that process, or choose free ports with "
                        "CITYBRAIN_BROKER_PORT / CITYBRAIN_CONTROLLER_PORT."
                    )
            starting.append(node)
        if starting:
            self.fetch()
        for node in starting:
            props = self._write_config(node)
            self._format_storage(props, node)
            node.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(node.log_file, "ab") as out:
                proc = subprocess.Popen(
                    self._java_cmd("kafka.Kafka", str(props), node=node),
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, cwd=node.log_file.parent.parent,
                )
            node.pid_file.write_text(str(proc.pid))
        for node in self.nodes:
            self._wait_ready(self.node_pid(node) or 0, node)
        return self.status()

    def down(self, timeout_s: float = 60.0) -> bool:
        """Stop every node cleanly (SIGTERM, controlled shutdown). Returns False if none was running."""
        pids = {n.index: self.node_pid(n) for n in self.nodes}
        running = {i: p for i, p in pids.items() if p is not None and _alive(p)}
        for pid in running.values():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(_alive(p) for p in running.values()):
            time.sleep(0.2)
        for pid in running.values():
            if _alive(pid):
                log.warning("broker pid %d did not stop in %.0fs; killing it", pid, timeout_s)
                os.kill(pid, signal.SIGKILL)
            _reap(pid)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)
        return bool(running)

    def kill_node(self, index: int) -> int:
        """SIGKILL one node of the cluster, as a crash would (the failover tests); its pid."""
        node = self.nodes[index - 1]
        pid = self.node_pid(node)
        if pid is None or not _alive(pid):
            raise BrokerError(f"node {index} is not running")
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
        _reap(pid)
        return pid

    def reset(self) -> None:
        """Stop the broker and delete its data (every topic and record). Jars stay cached."""
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _read_pid(self) -> int | None:
        return self.node_pid(self.nodes[0])

    @staticmethod
    def node_pid(node: Node) -> int | None:
        try:
            pid = int(node.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A stale pid file may name a process that is not our broker any more.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if b"kafka.Kafka" in cmdline else None

    def _accepts_connections(self) -> bool:
        return any(_port_busy(n.broker_port) for n in self.nodes)

    def _wait_ready(self, pid: int, node: Node | None = None) -> None:
        from citybrain.kafka import clients  # heavy import, only when starting

        node = node or self.nodes[0]
        deadline = time.monotonic() + self.settings.broker_start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not _alive(pid):
                raise BrokerError(
                    f"The broker process exited during start-up. Last lines of {node.log_file}:\n"
                    f"{_tail(node.log_file)}"
                )
            if _port_busy(node.broker_port):
                try:
                    admin = clients.admin(self.settings, request_timeout_ms=5000)
                    try:
                        brokers = admin.describe_cluster().get("brokers") or []
                    finally:
                        admin.close()
                    if len(brokers) >= self.count:   # every node registered: the cluster is whole
                        return
                    last_error = RuntimeError(f"{len(brokers)} of {self.count} brokers registered")
                except Exception as exc:  # not ready yet: metadata not served
                    last_error = exc
            time.sleep(0.5)
        raise BrokerError(
            f"The broker did not become ready within {self.settings.broker_start_timeout_s:.0f}s "
            f"(last error: {last_error}). Log: {node.log_file}\n{_tail(node.log_file)}\n"
            "Fix: raise CITYBRAIN_BROKER_START_TIMEOUT_S on a slow machine, or read the log."
        )


def _require_tool(name: str, fix: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` was not found on PATH; the embedded broker needs it. Fix: {fix}")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
