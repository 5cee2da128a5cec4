#!/usr/bin/python3
"""grpc_interop.py - service Control (proto/vcounter.proto) called by a stock
gRPC implementation (Debian's python3-grpcio, generic API, messages from
protoc --python_out), against real vcounterd processes: over the unix socket
(h2c, callers known by SO_PEERCRED) and over TCP with TLS 1.3 and controller
certificates. Every case asserts the exact status and part of its message.

Environment (meson sets it, tests/integration/meson.build):
  VC_BUILD_ROOT   the build tree (daemon/vcounterd, client/minivmm)
  VC_TEST_CERTS   tests/gen-certs.sh
  VC_PB2_DIR      where vcounter_pb2.py was generated ("" when protoc is missing)

Exit 0 pass, 1 fail, 77 skip (python3-grpcio or the generated messages are
missing). grpc_interop_migration.py reuses the helpers here."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

EXIT_SKIP = 77
CONTROL = "/vcounter.v1.Control/"
NOBODY = 65534
# Limits of daemon/grpc.h.
GRPC_MAX_MESSAGE_BYTES = 1 << 20


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(EXIT_SKIP)


def load_stack():
    """grpc and the generated messages, or exit 77 saying what is missing."""
    try:
        import grpc
    except ImportError as e:
        skip("python3-grpcio is not installed (%s); apt-get install python3-grpcio" % e)
    pb2_dir = os.environ.get("VC_PB2_DIR", "")
    if not pb2_dir or not os.path.exists(os.path.join(pb2_dir, "vcounter_pb2.py")):
        skip("vcounter_pb2.py was not generated: protoc (Debian protobuf-compiler) "
             "was missing when meson configured this build (VC_PB2_DIR=%r)" % pb2_dir)
    sys.path.insert(0, pb2_dir)
    try:
        import vcounter_pb2
    except ImportError as e:
        skip("python3-protobuf cannot load the generated messages: %s" % e)
    return grpc, vcounter_pb2


def env_path(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit("grpc_interop: %s is not set (run through meson test)" % name)
    return value


class Control:
    """service Control on one channel, through grpc's generic API (no
    grpc-tools here, so no generated stubs)."""

    def __init__(self, grpc, pb, channel):
        self.channel = channel

        def unary(name, reply):
            return channel.unary_unary(CONTROL + name,
                                       request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=reply.FromString)

        self.ListVms = unary("ListVms", pb.ListVmsReply)
        self.GetHostStatus = unary("GetHostStatus", pb.HostStatus)
        self.StartMigration = unary("StartMigration", pb.Migration)
        self.GetMigration = unary("GetMigration", pb.Migration)
        self.ListMigrations = unary("ListMigrations", pb.ListMigrationsReply)
        self.AbortMigration = unary("AbortMigration", pb.Migration)
        self.WatchEvents = channel.unary_stream(
            CONTROL + "WatchEvents",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=pb.Event.FromString)

    def raw(self, path):
        """A unary call that sends and returns bytes as they are."""
        return self.channel.unary_unary(path, request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)

    def close(self):
        self.channel.close()


def unix_control(grpc, pb, path, options=None):
    return Control(grpc, pb, grpc.insecure_channel("unix:" + path, options=options or []))


def tls_control(grpc, pb, port, certs, who, server_name="host-a.test"):
    def read(name):
        with open(os.path.join(certs, name), "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(root_certificates=read("ca.pem"),
                                         private_key=read(who + ".key"),
                                         certificate_chain=read(who + ".pem"))
    channel = grpc.secure_channel("127.0.0.1:%d" % port, creds,
                                  options=[("grpc.ssl_target_name_override", server_name)])
    return Control(grpc, pb, channel)


def expect_status(grpc, what, code, needles, call, *args, **kwargs):
    """call must fail with exactly code, and its message hold every needle
    (case-insensitive). Returns the error."""
    try:
        reply = call(*args, **kwargs)
    except grpc.RpcError as e:
        details = e.details() or ""
        check(e.code() == code, "%s: expected %s, got %s: %r" % (what, code.name,
                                                                 e.code().name, details))
        for needle in needles:
            check(needle.lower() in details.lower(),
                  "%s: %s, but the message %r lacks %r" % (what, code.name, details, needle))
        return e
    raise Failure("%s: expected %s, got OK: %r" % (what, code.name, reply))


def wait_until(what, predicate, timeout_s, alive=None, interval_s=0.02):
    """Poll predicate() until it returns something true; alive(), when given,
    must keep returning True (a process we wait on has not died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            raise Failure("%s: the process we waited on exited" % what)
        if time.monotonic() > deadline:
            raise Failure("%s: not within %.0f s" % (what, timeout_s))
        time.sleep(interval_s)


def read_port(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else 0
    except (FileNotFoundError, ValueError):
        return 0


class Daemon:
    """One real vcounterd in its own directory: VMM socket, control socket,
    log; started and always stopped by the test."""

    def __init__(self, build_root, workdir, certs, name, host_name, listen_peers=False,
                 control_tls=False, extra_args=()):
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.mkdir(self.dir)
        self.vmm_socket = os.path.join(self.dir, "vmm.sock")
        self.control_socket = os.path.join(self.dir, "control.sock")
        self.log_path = os.path.join(self.dir, "vcounterd.log")
        self.peer_port_file = os.path.join(self.dir, "peer.port")
        self.control_port_file = os.path.join(self.dir, "control.port")
        self.args = [os.path.join(build_root, "daemon", "vcounterd"),
                     "--vmm-socket", self.vmm_socket,
                     "--control-socket", self.control_socket,
                     "--host-name", host_name,
                     "--ca", os.path.join(certs, "ca.pem"),
                     "--cert", os.path.join(certs, host_name.split(".")[0] + ".pem"),
                     "--key", os.path.join(certs, host_name.split(".")[0] + ".key"),
                     "--log-level", "debug"]
        if listen_peers:
            self.args += ["--listen", "127.0.0.1:0", "--port-file", self.peer_port_file]
        if control_tls:
            self.args += ["--control-listen", "127.0.0.1:0",
                          "--control-port-file", self.control_port_file,
                          "--control-operator", "ctl-operator.test",
                          "--control-reader", "ctl-reader.test"]
        self.args += list(extra_args)
        self.proc = None
        self.exit_status = None
        self.peer_port = 0
        self.control_port = 0

    def start(self):
        # VC_DAEMON_WRAPPER (tools/test: valgrind) runs the daemon under a
        # tool, as daemon_harness.c does; its exit status then tells.
        wrapper = os.environ.get("VC_DAEMON_WRAPPER", "").split()
        wait_s = 60 if wrapper else 10
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(wrapper + self.args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_until("%s: control socket" % self.name,
                   lambda: os.path.exists(self.vmm_socket) and
                   os.path.exists(self.control_socket), wait_s, self.alive)
        if "--port-file" in self.args:
            self.peer_port = wait_until("%s: peer port file" % self.name,
                                        lambda: read_port(self.peer_port_file), wait_s,
                                        self.alive)
        if "--control-port-file" in self.args:
            self.control_port = wait_until("%s: control port file" % self.name,
                                           lambda: read_port(self.control_port_file), wait_s,
                                           self.alive)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM and wait; the exit status (SIGKILL after 60 s: -9)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.exit_status = self.proc.returncode
        return self.exit_status

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return "(no log)"


class Run:
    """Named cases, each passing or failing on its own; daemons torn down at
    the end whatever happened, their exit status checked, logs printed on
    failure."""

    def __init__(self, title):
        self.title = title
        self.failures = []
        self.daemons = []
        self.processes = []  # (name, Popen, output path) of helpers, e.g. minivmm
        self.workdir = tempfile.mkdtemp(prefix="vc-grpc-interop.")
        self.certs = os.path.join(self.workdir, "certs")
        subprocess.run(["sh", env_path("VC_TEST_CERTS"), self.certs], check=True)
        self.build_root = env_path("VC_BUILD_ROOT")

    def daemon(self, name, host_name, **kwargs):
        d = Daemon(self.build_root, self.workdir, self.certs, name, host_name, **kwargs)
        self.daemons.append(d)
        return d.start()

    def spawn(self, name, args):
        """A helper process (minivmm), its stdout and stderr in one file,
        killed at the end if still running; printed when a case failed."""
        path = os.path.join(self.workdir, name.replace(" ", "-") + ".out")
        with open(path, "wb") as out:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.processes.append((name, proc, path))
        return proc, path

    def case(self, name, fn, *args):
        try:
            fn(*args)
        except Failure as e:
            self.fail(name, str(e))
            return False
        except Exception:
            self.fail(name, traceback.format_exc())
            return False
        print("PASS: %s" % name, flush=True)
        return True

    def fail(self, name, message):
        print("FAIL: %s: %s" % (name, message), flush=True)
        self.failures.append(name)

    def finish(self):
        for name, proc, _ in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for d in self.daemons:
            status = d.stop()
            if status != 0:
                self.fail("teardown", "%s exited with status %s on SIGTERM" % (d.name, status))
        if self.failures:
            for d in self.daemons:
                print("---- %s log (%s)" % (d.name, d.log_path))
                print(d.log(), end="")
            for name, _, path in self.processes:
                print("---- %s output" % name)
                with open(path, errors="replace") as f:
                    print(f.read(), end="")
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self.failures:
            print("%s: %d failed: %s" % (self.title, len(self.failures),
                                         ", ".join(self.failures)))
            return 1
        print("%s: all passed" % self.title)
        return 0


# ---- the cases: unix socket ----

def case_host_status(grpc, pb, ctl):
    hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    check(hs.version != "", "empty version")
    check(hs.host_name == "host-a.test", "host_name %r" % hs.host_name)
    names = [pb.Backend.Name(b.backend) for b in hs.backends]
    check("BACKEND_KVM_SYSCOUNTER" in names and "BACKEND_KVM_X86" in names,
          "backends listed: %s" % names)
    for b in hs.backends:
        check(b.detail != "", "backend %s without detail" % pb.Backend.Name(b.backend))
        check(b.allowed, "backend %s not allowed without --backends"
              % pb.Backend.Name(b.backend))
    check(hs.HasField("sync"), "no sync")
    check(hs.vm_count == 0 and hs.migrations_running == 0 and hs.migrations_kept == 0,
          "fresh daemon: vm_count %d migrations %d/%d" % (hs.vm_count, hs.migrations_running,
                                                          hs.migrations_kept))
    check(hs.uptime_ns > 0, "uptime_ns 0")


def case_empty_lists(grpc, pb, ctl):
    vms = ctl.ListVms(pb.ListVmsRequest(), timeout=10)
    check(len(vms.vms) == 0, "ListVms: %d VMs on a fresh daemon" % len(vms.vms))
    migrations = ctl.ListMigrations(pb.ListMigrationsRequest(), timeout=10)
    check(len(migrations.migrations) == 0,
          "ListMigrations: %d on a fresh daemon" % len(migrations.migrations))


def case_handler_errors(grpc, pb, ctl):
    code = grpc.StatusCode
    expect_status(grpc, "GetMigration of an unknown id", code.NOT_FOUND, ["0" * 32],
                  ctl.GetMigration, pb.GetMigrationRequest(migration_id="0" * 32), timeout=10)
    expect_status(grpc, "GetMigration 'xyz'", code.INVALID_ARGUMENT, ["hex"],
                  ctl.GetMigration, pb.GetMigrationRequest(migration_id="xyz"), timeout=10)
    expect_status(grpc, "StartMigration of an unregistered VM", code.NOT_FOUND,
                  ["vm-nowhere"], ctl.StartMigration,
                  pb.StartMigrationRequest(vm_id="vm-nowhere", peer_address="127.0.0.1:1",
                                           peer_name="host-b.test"), timeout=10)
    expect_status(grpc, "StartMigration with an empty vm_id", code.INVALID_ARGUMENT,
                  ["vm_id"], ctl.StartMigration,
                  pb.StartMigrationRequest(vm_id="", peer_address="127.0.0.1:1",
                                           peer_name="host-b.test"), timeout=10)
    expect_status(grpc, "AbortMigration of an unknown id", code.NOT_FOUND, ["1" * 32],
                  ctl.AbortMigration,
                  pb.AbortMigrationRequest(migration_id="1" * 32, reason="test"), timeout=10)


def case_transport_errors(grpc, pb, ctl, socket_path):
    """What the transport answers itself (daemon/grpc.h), each checked even
    when another fails, so that one run shows them all."""
    code = grpc.StatusCode
    problems = []

    def expect(*args, **kwargs):
        try:
            expect_status(grpc, *args, **kwargs)
        except Failure as e:
            problems.append(str(e))

    expect("unknown method", code.UNIMPLEMENTED, ["Nope"], ctl.raw(CONTROL + "Nope"), b"",
           timeout=10)
    expect("request bytes that do not unpack", code.INVALID_ARGUMENT, [],
           ctl.raw(CONTROL + "GetMigration"), b"\xff\xff\xff", timeout=10)
    # Over GRPC_MAX_MESSAGE_BYTES, with every byte of it a valid field; the
    # client's own 4 MiB send limit is lifted so that the daemon decides.
    big = unix_control(grpc, pb, socket_path, [("grpc.max_send_message_length", -1)])
    try:
        request = pb.AbortMigrationRequest(migration_id="0" * 32, reason="r" * 2000000)
        check(request.ByteSize() > GRPC_MAX_MESSAGE_BYTES, "request not over the limit")
        expect("a 2 MB request", code.RESOURCE_EXHAUSTED, [], big.AbortMigration, request,
               timeout=30)
    finally:
        big.close()
    # gRPC compresses only when that makes the message smaller, so send one
    # that compresses. grpc-encoding: gzip comes with it: UNIMPLEMENTED
    # (daemon/grpc.h: no compression is offered), not the handler's NOT_FOUND.
    expect("a gzip-compressed request", code.UNIMPLEMENTED, ["gzip"], ctl.AbortMigration,
           pb.AbortMigrationRequest(migration_id="0" * 32, reason="z" * 4096), timeout=10,
           compression=grpc.Compression.Gzip)
    hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    check(hs.host_name == "host-a.test", "the connection is unusable after the refusals")
    check(not problems, "; ".join(problems))


def case_watch_deadline(grpc, pb, ctl):
    # A watch is counted while open and forgotten once cancelled.
    watch = ctl.WatchEvents(pb.WatchEventsRequest(), timeout=30)
    watch.initial_metadata()
    hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    check(hs.watchers == 1, "one open watch, HostStatus.watchers %d" % hs.watchers)
    watch.cancel()
    wait_until("watchers back to 0 after a cancel",
               lambda: ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10).watchers == 0, 5)

    # Nothing happens on this daemon, so the deadline ends the watch.
    started = time.monotonic()
    watch = ctl.WatchEvents(pb.WatchEventsRequest(), timeout=0.5)
    try:
        events = list(watch)
        raise Failure("watch with a 0.5 s deadline ended OK with %d events" % len(events))
    except grpc.RpcError as e:
        elapsed = time.monotonic() - started
        check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
              "expected DEADLINE_EXCEEDED, got %s: %r" % (e.code().name, e.details()))
        check(0.45 <= elapsed <= 3.0, "deadline of 0.5 s ended the watch after %.3f s" % elapsed)
    hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
    check(hs.host_name == "host-a.test", "daemon answers after the deadline")
    wait_until("watchers back to 0 after the deadline",
               lambda: ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10).watchers == 0, 5)


# Runs as uid/gid 65534 in a fresh interpreter: grpc is imported and the
# channel created only after the switch, so SO_PEERCRED sees nobody.
NOBODY_CALLER = r"""
import os, sys
os.setgroups([])
os.setgid(%d)
os.setuid(%d)
import grpc
channel = grpc.insecure_channel("unix:" + sys.argv[1])
for method in sys.argv[2:]:
    call = channel.unary_unary("/vcounter.v1.Control/" + method,
                               request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    try:
        call(b"", timeout=10)
        print(method, "OK", "")
    except grpc.RpcError as e:
        print(method, e.code().name, (e.details() or "").replace("\n", " "))
""" % (NOBODY, NOBODY)


def case_not_root(grpc, pb, daemon):
    # The socket is 0660 root:root in a 0700 directory: let uid 65534 reach
    # it, so that what refuses it is the daemon's SO_PEERCRED check, not the
    # file system.
    os.chmod(os.path.dirname(daemon.dir), 0o711)
    os.chmod(daemon.dir, 0o711)
    os.chmod(daemon.control_socket, 0o666)
    out = subprocess.run([sys.executable, "-c", NOBODY_CALLER, daemon.control_socket,
                          "ListVms", "StartMigration"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    check(out.returncode == 0, "the uid %d caller failed: %s" % (NOBODY, out.stderr))
    lines = out.stdout.splitlines()
    check(len(lines) == 2, "uid %d caller printed %r" % (NOBODY, out.stdout))
    for line in lines:
        method, status, details = (line.split(" ", 2) + [""])[:3]
        check(status == "PERMISSION_DENIED",
              "%s as uid %d: expected PERMISSION_DENIED, got %s: %r"
              % (method, NOBODY, status, details))
        check(details != "", "%s as uid %d: PERMISSION_DENIED without a message"
              % (method, NOBODY))


# ---- the cases: TLS ----

def case_tls_operator(grpc, pb, port, certs):
    ctl = tls_control(grpc, pb, port, certs, "ctl-operator")
    try:
        vms = ctl.ListVms(pb.ListVmsRequest(), timeout=10)
        check(len(vms.vms) == 0, "ListVms over TLS: %d VMs" % len(vms.vms))
    finally:
        ctl.close()


def case_tls_reader(grpc, pb, port, certs):
    ctl = tls_control(grpc, pb, port, certs, "ctl-reader")
    try:
        hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
        check(hs.host_name == "host-a.test", "host_name %r over TLS" % hs.host_name)
        expect_status(grpc, "StartMigration by a reader", grpc.StatusCode.PERMISSION_DENIED,
                      [], ctl.StartMigration,
                      pb.StartMigrationRequest(vm_id="vm1", peer_address="127.0.0.1:1",
                                               peer_name="host-b.test"), timeout=10)
        expect_status(grpc, "AbortMigration by a reader", grpc.StatusCode.PERMISSION_DENIED,
                      [], ctl.AbortMigration,
                      pb.AbortMigrationRequest(migration_id="0" * 32), timeout=10)
    finally:
        ctl.close()


def case_tls_other_ca(grpc, pb, daemon, certs):
    # The operator's name, signed by a CA the fleet does not trust: the
    # daemon refuses the handshake, which gRPC reports as UNAVAILABLE
    # ("failed to connect": no call ever reached the daemon).
    refusals = daemon.log().count("TLS handshake failed")
    ctl = tls_control(grpc, pb, daemon.control_port, certs, "ctl-other")
    try:
        expect_status(grpc, "a client certificate of another CA", grpc.StatusCode.UNAVAILABLE,
                      ["failed to connect"], ctl.ListVms, pb.ListVmsRequest(), timeout=10)
    finally:
        ctl.close()
    # The client may see the alert before the daemon has logged it.
    wait_until("the daemon logs the refused handshake",
               lambda: daemon.log().count("TLS handshake failed") > refusals, 30)


def case_still_serving(grpc, pb, daemon, certs):
    check(daemon.alive(), "the daemon exited")
    case_tls_operator(grpc, pb, daemon.control_port, certs)
    ctl = unix_control(grpc, pb, daemon.control_socket)
    try:
        hs = ctl.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
        check(hs.watchers == 0, "watchers %d" % hs.watchers)
    finally:
        ctl.close()


def main():
    grpc, pb = load_stack()
    run = Run("grpc_interop")
    try:
        a = run.daemon("host-a", "host-a.test", control_tls=True)
    except Exception:
        run.fail("daemon start", traceback.format_exc())
        return run.finish()
    ctl = unix_control(grpc, pb, a.control_socket)
    try:
        run.case("unix: GetHostStatus", case_host_status, grpc, pb, ctl)
        run.case("unix: ListVms and ListMigrations empty", case_empty_lists, grpc, pb, ctl)
        run.case("unix: handler statuses (NOT_FOUND, INVALID_ARGUMENT)", case_handler_errors,
                 grpc, pb, ctl)
        run.case("unix: transport statuses (UNIMPLEMENTED, INVALID_ARGUMENT, "
                 "RESOURCE_EXHAUSTED, gzip)", case_transport_errors, grpc, pb, ctl,
                 a.control_socket)
        run.case("unix: WatchEvents deadline", case_watch_deadline, grpc, pb, ctl)
        if os.geteuid() == 0:
            run.case("unix: uid %d is PERMISSION_DENIED" % NOBODY, case_not_root, grpc, pb, a)
        else:
            print("SKIP: unix: uid %d is PERMISSION_DENIED: the test runs as uid %d and "
                  "cannot switch to another uid" % (NOBODY, os.geteuid()))
        run.case("tls: operator ListVms", case_tls_operator, grpc, pb, a.control_port,
                 run.certs)
        run.case("tls: reader reads, may not start or abort", case_tls_reader, grpc, pb,
                 a.control_port, run.certs)
        run.case("tls: another CA's certificate is refused", case_tls_other_ca, grpc, pb, a,
                 run.certs)
        run.case("the daemon still serves", case_still_serving, grpc, pb, a, run.certs)
    finally:
        ctl.close()
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
