#!/usr/bin/python3
"""grpc_interop_migration.py - a fleet controller's migration, end to end,
with a stock gRPC client (python3-grpcio) against two real vcounterd (host-a
source, host-b target, mutual TLS on loopback) and two real minivmm guests:
the source runs with --controlled and waits for its daemon's notice.

What must happen follows from what the target VM registered with (ListVms on
host-b): with offset control the migration is DONE with a report; without
(this project's kvm_pvm hosts accept TSC offset writes and ignore them) the
target refuses at prepare, before the blackout, and the outcome is FAILED
naming offset control. Both branches are strict.

Also: StartMigration of a target VM and of a VM whose migration runs
(FAILED_PRECONDITION), AbortMigration of a running migration (ABORTED), of an
aborted one (OK again) and of a finished one (FAILED_PRECONDITION), and an
abort right after the start on a fresh guest, whose source never pauses.

Environment as grpc_interop.py. Exit 0 pass, 1 fail, 77 skip (no
python3-grpcio, no generated messages, no /dev/kvm)."""

import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc_interop as gi  # noqa: E402
from grpc_interop import Failure, check, expect_status, wait_until  # noqa: E402

MIGRATION_ID = re.compile(r"[0-9a-f]{32}")
OUTCOME_TIMEOUT_S = 60


class Watch:
    """WatchEvents read on a thread into a list, so the test can wait for
    one event and still see every event that came before and after it."""

    def __init__(self, pb, ctl, request):
        self.pb = pb
        self.events = []
        self.error = None
        self.ended = False
        self.cond = threading.Condition()
        self.call = ctl.WatchEvents(request, timeout=240)
        # The daemon sends the response headers once it has taken the watch:
        # from here on no event is missed.
        self.call.initial_metadata()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for event in self.call:
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()
        except Exception as e:  # grpc.RpcError; CANCELLED once we close
            self.error = e
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def wait_for(self, what, predicate, timeout_s):
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                if self.ended:
                    raise Failure("%s: the watch ended first: %s" % (what, self.error))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure("%s: not within %d s; events: %s"
                                  % (what, timeout_s, self.describe()))
                self.cond.wait(left)

    def of_migration(self, migration_id):
        with self.cond:
            return [e for e in self.events
                    if e.HasField("migration") and e.migration.migration_id == migration_id]

    def describe(self):
        pb = self.pb
        out = []
        for e in self.events:
            what = pb.EventKind.Name(e.kind)
            if e.HasField("migration"):
                what += " %s %s" % (e.migration.migration_id,
                                    pb.MigrationStep.Name(e.migration.step))
            if e.HasField("vm"):
                what += " vm=%s" % e.vm.vm_id
            out.append("#%d %s" % (e.seq, what))
        return "[" + ", ".join(out) + "]"

    def close(self):
        self.call.cancel()
        self.thread.join(10)


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def find_vm(pb, ctl, vm_id):
    for vm in ctl.ListVms(pb.ListVmsRequest(), timeout=10).vms:
        if vm.vm_id == vm_id:
            return vm
    return None


def free_port():
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """A guest to move: a target minivmm registered on host-b (optional) and
    a --controlled source minivmm on host-a waiting for its daemon."""

    def __init__(self, run, pb, a, b, ctl_a, ctl_b, vm_id, with_target=True):
        minivmm = os.path.join(run.build_root, "client", "minivmm")
        self.vm_id = vm_id
        self.target = self.target_out = None
        if with_target:
            port_file = os.path.join(run.workdir, vm_id + ".target.port")
            self.target, self.target_out = run.spawn(
                vm_id + " target minivmm",
                [minivmm, "target", "--listen", "127.0.0.1:0", "--port-file", port_file,
                 "--vm-id", vm_id, "--vcounterd", b.vmm_socket, "--vcpus", "2"])
            to_port = wait_until("%s: target minivmm port" % vm_id,
                                 lambda: gi.read_port(port_file), 30, self.target_alive)
            self.target_vm = wait_until(
                "%s: target registered on host-b" % vm_id,
                lambda: self._complete(find_vm(pb, ctl_b, vm_id)), 30, self.target_alive)
        else:
            # Nobody listens there: the source's abort message to its target
            # minivmm goes nowhere, which minivmm ignores.
            to_port = free_port()
        self.source, self.source_out = run.spawn(
            vm_id + " source minivmm",
            [minivmm, "source", "--controlled", "--to", "127.0.0.1:%d" % to_port,
             "--vm-id", vm_id, "--vcounterd", a.vmm_socket, "--vcpus", "2", "--seconds", "1"])
        wait_until("%s: source waits for a controller" % vm_id,
                   lambda: "source: vm=%s waiting for a controller" % vm_id
                   in read_text(self.source_out), 30, self.source_alive)
        self.source_vm = find_vm(pb, ctl_a, vm_id)

    @staticmethod
    def _complete(vm):
        return vm if vm is not None and vm.registration_complete else None

    def source_alive(self):
        return self.source.poll() is None

    def target_alive(self):
        return self.target.poll() is None

    def wait_exit(self):
        """Both minivmms must end by themselves; their exit statuses."""
        statuses = []
        for name, proc in (("source", self.source), ("target", self.target)):
            if proc is None:
                statuses.append(None)
                continue
            try:
                statuses.append(proc.wait(timeout=60))
            except Exception:
                raise Failure("%s: the %s minivmm did not end within 60 s" % (self.vm_id, name))
        return statuses


def check_started(pb, m, vm_id, peer_address):
    check(MIGRATION_ID.fullmatch(m.migration_id), "migration_id %r" % m.migration_id)
    check(m.step == pb.MIGRATION_STEP_PREPARING,
          "StartMigration returned step %s" % pb.MigrationStep.Name(m.step))
    check(m.started_by_controller, "started_by_controller false")
    check(m.vm_id == vm_id and m.role == pb.ROLE_SOURCE, "vm %r role %s"
          % (m.vm_id, pb.Role.Name(m.role)))
    check(m.peer_identity == "host-b.test" and m.peer_address == peer_address,
          "peer %r at %r" % (m.peer_identity, m.peer_address))
    check(m.failure_reason == "" and not m.HasField("report"), "fresh migration has %r / report"
          % m.failure_reason)


def check_report(pb, m, vm_id, n_vcpus):
    """The target applied: offsets moved by one delta, time accounted."""
    check(m.HasField("report"), "DONE without a report")
    r = m.report
    check(r.migration_id == m.migration_id and r.vm_id == vm_id,
          "report of %r/%r" % (r.migration_id, r.vm_id))
    check(len(r.offsets_before) == n_vcpus and len(r.offsets_after) == n_vcpus,
          "report offsets %d/%d for %d vCPUs" % (len(r.offsets_before), len(r.offsets_after),
                                                  n_vcpus))
    moved = {(after - before) % (1 << 64) for before, after in zip(r.offsets_before,
                                                                   r.offsets_after)}
    check(moved == {r.delta_cycles % (1 << 64)},
          "offsets moved by %s, delta_cycles %d: phase not kept" % (sorted(moved),
                                                                     r.delta_cycles))
    # One host: the target's anchor comes after the source's, within reason.
    check(0 < r.elapsed_ns < 60 * 10**9, "elapsed_ns %d" % r.elapsed_ns)
    check(r.error_bound_ns > 0, "error_bound_ns 0")
    check(r.guest_tsc_khz > 0 and r.generation >= 1, "guest_tsc_khz %d generation %d"
          % (r.guest_tsc_khz, r.generation))


def case_registered(pb, guest):
    src, dst = guest.source_vm, guest.target_vm
    check(src is not None, "host-a's ListVms lacks %s" % guest.vm_id)
    check(src.role == pb.ROLE_SOURCE, "source role %s" % pb.Role.Name(src.role))
    check(src.registration_complete, "source registration not complete")
    check(src.registered_by_pid == guest.source.pid,
          "registered_by_pid %d, the source minivmm is %d"
          % (src.registered_by_pid, guest.source.pid))
    check(src.registered_by_uid == os.getuid(), "registered_by_uid %d" % src.registered_by_uid)
    check(src.vcpu_count == 2 and src.guest_tsc_khz > 0, "vcpu_count %d guest_tsc_khz %d"
          % (src.vcpu_count, src.guest_tsc_khz))
    check(src.arch == pb.COUNTER_ARCH_X86_TSC, "arch %s" % pb.CounterArch.Name(src.arch))
    check(dst.role == pb.ROLE_TARGET and dst.registered_by_pid == guest.target.pid,
          "target role %s pid %d (minivmm %d)" % (pb.Role.Name(dst.role),
                                                  dst.registered_by_pid, guest.target.pid))
    check(dst.offset_control or "offset control" in dst.probe_detail,
          "target without offset control does not say why: %r" % dst.probe_detail)
    print("note: the target VM registered with offset_control=%s (%s)"
          % (dst.offset_control, dst.probe_detail or "honoured"))


def case_start_target_vm(grpc, pb, ctl_b, a_port, vm_id):
    expect_status(grpc, "StartMigration of host-b's target VM",
                  grpc.StatusCode.FAILED_PRECONDITION, ["target"], ctl_b.StartMigration,
                  pb.StartMigrationRequest(vm_id=vm_id, peer_address="127.0.0.1:%d" % a_port,
                                           peer_name="host-a.test"), timeout=10)


def case_flow(grpc, pb, state, guest, watch, ctl_a, ctl_b, b):
    peer_address = "127.0.0.1:%d" % b.peer_port
    honoured = guest.target_vm.offset_control
    registered = watch.wait_for("VM_REGISTERED of %s" % guest.vm_id,
                                lambda e: e.kind == pb.EVENT_KIND_VM_REGISTERED
                                and e.vm.vm_id == guest.vm_id, 10)
    check(registered.vm.registered_by_pid == guest.source.pid,
          "VM_REGISTERED event pid %d" % registered.vm.registered_by_pid)

    started = ctl_a.StartMigration(pb.StartMigrationRequest(
        vm_id=guest.vm_id, peer_address=peer_address, peer_name="host-b.test"), timeout=10)
    check_started(pb, started, guest.vm_id, peer_address)
    mid = state["migration_id"] = started.migration_id

    outcome = watch.wait_for("MIGRATION_OUTCOME of %s" % mid,
                             lambda e: e.kind == pb.EVENT_KIND_MIGRATION_OUTCOME
                             and e.migration.migration_id == mid, OUTCOME_TIMEOUT_S).migration
    state["outcome"] = outcome
    steps = [e for e in watch.of_migration(mid) if e.kind == pb.EVENT_KIND_MIGRATION_STEP]
    check(steps, "no MIGRATION_STEP event before the outcome: %s" % watch.describe())
    check(steps[0].migration.step == pb.MIGRATION_STEP_PREPARING,
          "first step event %s" % pb.MigrationStep.Name(steps[0].migration.step))
    numbers = [e.migration.step for e in steps]
    check(numbers == sorted(numbers) and outcome.step > numbers[-1],
          "steps out of order: %s" % watch.describe())
    for e in watch.of_migration(mid):
        check(e.migration.started_by_controller and e.migration.vm_id == guest.vm_id,
              "event #%d: started_by_controller %s vm %r" % (e.seq,
                                                              e.migration.started_by_controller,
                                                              e.migration.vm_id))
        check(e.realtime_ns > 0, "event #%d without realtime_ns" % e.seq)

    if honoured:
        check(outcome.step == pb.MIGRATION_STEP_DONE,
              "the target VM has offset control, yet the outcome is %s: %r"
              % (pb.MigrationStep.Name(outcome.step), outcome.failure_reason))
        check_report(pb, outcome, guest.vm_id, 2)
    else:
        check(outcome.step == pb.MIGRATION_STEP_FAILED,
              "the target VM lacks offset control, yet the outcome is %s"
              % pb.MigrationStep.Name(outcome.step))
        check("offset control" in outcome.failure_reason,
              "failure_reason does not name offset control: %r" % outcome.failure_reason)
        check(not outcome.HasField("report"), "a FAILED migration with a report")

    got = ctl_a.GetMigration(pb.GetMigrationRequest(migration_id=mid), timeout=10)
    check(got.step == outcome.step and got.failure_reason == outcome.failure_reason,
          "GetMigration says %s %r, the watch %s %r"
          % (pb.MigrationStep.Name(got.step), got.failure_reason,
             pb.MigrationStep.Name(outcome.step), outcome.failure_reason))
    check(got.started_by_controller and got.peer_address == peer_address,
          "GetMigration: started_by_controller %s peer_address %r"
          % (got.started_by_controller, got.peer_address))
    check(got.report == outcome.report, "GetMigration's report differs from the outcome's")
    listed = ctl_a.ListMigrations(pb.ListMigrationsRequest(vm_id=guest.vm_id), timeout=10)
    check([m.migration_id for m in listed.migrations] == [mid],
          "ListMigrations(%s): %s" % (guest.vm_id, [m.migration_id for m in listed.migrations]))
    running = ctl_a.ListMigrations(pb.ListMigrationsRequest(running_only=True), timeout=10)
    check(mid not in [m.migration_id for m in running.migrations],
          "a finished migration listed as running")
    if honoured:
        there = ctl_b.GetMigration(pb.GetMigrationRequest(migration_id=mid), timeout=10)
        check(there.step == pb.MIGRATION_STEP_DONE and there.role == pb.ROLE_TARGET,
              "host-b has %s as %s %s" % (mid, pb.Role.Name(there.role),
                                          pb.MigrationStep.Name(there.step)))

    # What the source VMM was told, and did.
    source_status, target_status = guest.wait_exit()
    out, target_out = read_text(guest.source_out), read_text(guest.target_out)
    for line in out.splitlines():
        if line.startswith("source: notice") or line.startswith("source: migration="):
            print("note: source minivmm: " + line)
    check("source: notice migration=%s step=" % mid in out,
          "the source minivmm printed no notice of %s:\n%s" % (mid, out))
    if honoured:
        check("source: migration=%s started by a controller, prepared with host-b.test at %s"
              % (mid, peer_address) in out, "source was not prepared:\n%s" % out)
        check("source: handed off, generation=1" in out, "source did not hand off:\n%s" % out)
        check("handoff vm=%s migration=%s" % (guest.vm_id, mid) in target_out,
              "target printed no handoff:\n%s" % target_out)
        check(source_status == 0 and target_status == 0,
              "minivmm exit statuses %s/%s" % (source_status, target_status))
    else:
        line = "source: migration=%s failed before the pause: " % mid
        check(line in out and "offset control" in out.split(line, 1)[1].splitlines()[0],
              "the source minivmm did not say the migration failed before the pause "
              "naming offset control:\n%s" % out)
        check("last_guest_tsc" not in out and "handed off" not in out,
              "the source paused its guest:\n%s" % out)
        check("target: the source called the migration off" in target_out,
              "the target minivmm was not told:\n%s" % target_out)
    unregistered = watch.wait_for("VM_UNREGISTERED of %s" % guest.vm_id,
                                  lambda e: e.kind == pb.EVENT_KIND_VM_UNREGISTERED
                                  and e.vm.vm_id == guest.vm_id, 10)
    outcomes = [e for e in watch.of_migration(mid)
                if e.kind == pb.EVENT_KIND_MIGRATION_OUTCOME]
    check(len(outcomes) == 1, "%d outcome events for %s" % (len(outcomes), mid))
    check(unregistered.seq > outcomes[0].seq, "VM_UNREGISTERED before the outcome")
    seqs = [e.seq for e in watch.events]
    check(seqs == sorted(set(seqs)), "event seq not increasing: %s" % seqs)


def case_abort_finished(grpc, pb, ctl_a, state):
    check("outcome" in state, "no finished migration (the flow case failed)")
    mid, outcome = state["migration_id"], state["outcome"]
    # daemon/control.c: a FAILED migration "already failed: <reason>"; a
    # DONE one "the target applied". Either way nothing changes.
    needle = "already failed" if outcome.step == pb.MIGRATION_STEP_FAILED else "applied"
    expect_status(grpc, "AbortMigration of a %s migration" % pb.MigrationStep.Name(outcome.step),
                  grpc.StatusCode.FAILED_PRECONDITION, [mid, needle], ctl_a.AbortMigration,
                  pb.AbortMigrationRequest(migration_id=mid, reason="too late"), timeout=10)
    got = ctl_a.GetMigration(pb.GetMigrationRequest(migration_id=mid), timeout=10)
    check(got.step == outcome.step and got.failure_reason == outcome.failure_reason,
          "the refused abort changed the migration: %s %r" % (pb.MigrationStep.Name(got.step),
                                                               got.failure_reason))


def case_busy(grpc, pb, run, a, b, ctl_a, ctl_b):
    """A migration held in PREPARING: its peer address accepts TCP (the
    kernel's backlog) and never answers the TLS handshake."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        peer_address = "127.0.0.1:%d" % hole.getsockname()[1]
        guest = Guest(run, pb, a, b, ctl_a, ctl_b, "vm-busy", with_target=False)
        watch = Watch(pb, ctl_a, pb.WatchEventsRequest(vm_id="vm-busy"))
        try:
            started = ctl_a.StartMigration(pb.StartMigrationRequest(
                vm_id="vm-busy", peer_address=peer_address, peer_name="host-b.test"),
                timeout=10)
            check_started(pb, started, "vm-busy", peer_address)
            mid = started.migration_id
            expect_status(grpc, "a second StartMigration while one runs",
                          grpc.StatusCode.FAILED_PRECONDITION, ["already has migration", mid],
                          ctl_a.StartMigration,
                          pb.StartMigrationRequest(vm_id="vm-busy", peer_address=peer_address,
                                                   peer_name="host-b.test"), timeout=10)
            running = ctl_a.ListMigrations(pb.ListMigrationsRequest(running_only=True),
                                           timeout=10)
            check([m.migration_id for m in running.migrations] == [mid],
                  "running migrations: %s" % [m.migration_id for m in running.migrations])
            hs = ctl_a.GetHostStatus(pb.GetHostStatusRequest(), timeout=10)
            check(hs.migrations_running == 1, "migrations_running %d" % hs.migrations_running)

            aborted = ctl_a.AbortMigration(pb.AbortMigrationRequest(
                migration_id=mid, reason="interop: held"), timeout=10)
            check(aborted.step == pb.MIGRATION_STEP_ABORTED,
                  "AbortMigration of a running migration: %s"
                  % pb.MigrationStep.Name(aborted.step))
            check("aborted by" in aborted.failure_reason and
                  "interop: held" in aborted.failure_reason,
                  "failure_reason %r" % aborted.failure_reason)
            outcome = watch.wait_for("ABORTED of %s" % mid,
                                     lambda e: e.kind == pb.EVENT_KIND_MIGRATION_OUTCOME
                                     and e.migration.migration_id == mid, 10).migration
            check(outcome.step == pb.MIGRATION_STEP_ABORTED, "watch outcome %s"
                  % pb.MigrationStep.Name(outcome.step))
            # An aborted migration aborted again: OK, unchanged (control.c).
            again = ctl_a.AbortMigration(pb.AbortMigrationRequest(migration_id=mid,
                                                                   reason="twice"), timeout=10)
            check(again.step == pb.MIGRATION_STEP_ABORTED and
                  again.failure_reason == aborted.failure_reason,
                  "second abort: %s %r" % (pb.MigrationStep.Name(again.step),
                                           again.failure_reason))
            guest.wait_exit()
            out = read_text(guest.source_out)
            check("source: migration=%s aborted before the pause: " % mid in out,
                  "the source minivmm did not say it was called off:\n%s" % out)
            check("last_guest_tsc" not in out, "the source paused its guest:\n%s" % out)
        finally:
            watch.close()


def case_abort_at_once(grpc, pb, run, a, b, ctl_a, ctl_b):
    """Start, then abort at once, on a fresh guest pair. The target may have
    refused the prepare first (no offset control here): FAILED; else
    ABORTED. Nothing else."""
    guest = Guest(run, pb, a, b, ctl_a, ctl_b, "vm2")
    peer_address = "127.0.0.1:%d" % b.peer_port
    watch = Watch(pb, ctl_a, pb.WatchEventsRequest(vm_id="vm2"))
    try:
        started = ctl_a.StartMigration(pb.StartMigrationRequest(
            vm_id="vm2", peer_address=peer_address, peer_name="host-b.test"), timeout=10)
        mid = started.migration_id
        try:
            aborted = ctl_a.AbortMigration(pb.AbortMigrationRequest(
                migration_id=mid, reason="interop: at once"), timeout=10)
            abort_status = "OK"
            check(aborted.step == pb.MIGRATION_STEP_ABORTED,
                  "AbortMigration answered OK with step %s" % pb.MigrationStep.Name(aborted.step))
        except grpc.RpcError as e:
            abort_status = e.code().name
            check(e.code() == grpc.StatusCode.FAILED_PRECONDITION and
                  "already failed" in (e.details() or ""),
                  "AbortMigration: %s %r" % (e.code().name, e.details()))
        outcome = watch.wait_for("outcome of %s" % mid,
                                 lambda e: e.kind == pb.EVENT_KIND_MIGRATION_OUTCOME
                                 and e.migration.migration_id == mid,
                                 OUTCOME_TIMEOUT_S).migration
        print("note: abort at once: AbortMigration %s, outcome %s: %s"
              % (abort_status, pb.MigrationStep.Name(outcome.step), outcome.failure_reason))
        if outcome.step == pb.MIGRATION_STEP_ABORTED:
            check(abort_status == "OK", "outcome ABORTED but AbortMigration %s" % abort_status)
            check("aborted by" in outcome.failure_reason and
                  "interop: at once" in outcome.failure_reason,
                  "failure_reason %r" % outcome.failure_reason)
            word = "aborted"
        elif outcome.step == pb.MIGRATION_STEP_FAILED:
            check(abort_status == "FAILED_PRECONDITION",
                  "outcome FAILED but AbortMigration %s" % abort_status)
            check(not guest.target_vm.offset_control,
                  "FAILED although the target has offset control: %r" % outcome.failure_reason)
            check("offset control" in outcome.failure_reason,
                  "failure_reason %r" % outcome.failure_reason)
            word = "failed"
        else:
            raise Failure("outcome %s, expected ABORTED or FAILED"
                          % pb.MigrationStep.Name(outcome.step))
        got = ctl_a.GetMigration(pb.GetMigrationRequest(migration_id=mid), timeout=10)
        check(got.step == outcome.step, "GetMigration %s" % pb.MigrationStep.Name(got.step))

        guest.wait_exit()
        out, target_out = read_text(guest.source_out), read_text(guest.target_out)
        # On a host whose KVM honours offsets the PrepareAck can beat the
        # abort, the source then pauses at 'prepared': this case fails there
        # and says so, rather than accept a paused guest.
        check("source: migration=%s %s before the pause: " % (mid, word) in out,
              "the source minivmm did not say it was called off before the pause:\n%s" % out)
        check("last_guest_tsc" not in out and "handed off" not in out,
              "the source paused its guest:\n%s" % out)
        check("target: the source called the migration off" in target_out,
              "the target minivmm was not told:\n%s" % target_out)
    finally:
        watch.close()


def main():
    grpc, pb = gi.load_stack()
    if not os.path.exists("/dev/kvm"):
        gi.skip("no /dev/kvm here: the migration needs real KVM guests (minivmm)")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        gi.skip("/dev/kvm is not readable and writable for uid %d" % os.getuid())
    run = gi.Run("grpc_interop_migration")
    ctl_a = ctl_b = watch = None
    try:
        a = run.daemon("host-a", "host-a.test", extra_args=["--allow-peer", "host-b.test"])
        b = run.daemon("host-b", "host-b.test", listen_peers=True,
                       extra_args=["--allow-peer", "host-a.test"])
        ctl_a = gi.unix_control(grpc, pb, a.control_socket)
        ctl_b = gi.unix_control(grpc, pb, b.control_socket)
        # Open before the source registers, so its VM_REGISTERED is seen too.
        watch = Watch(pb, ctl_a, pb.WatchEventsRequest(vm_id="vm1"))
        state = {}
        guest = Guest(run, pb, a, b, ctl_a, ctl_b, "vm1")
        if run.case("both VMs registered (ListVms on each daemon)", case_registered, pb, guest):
            run.case("StartMigration of a target VM is FAILED_PRECONDITION",
                     case_start_target_vm, grpc, pb, ctl_b, free_port(), "vm1")
            run.case("controller-driven migration: watch, outcome, GetMigration, minivmm",
                     case_flow, grpc, pb, state, guest, watch, ctl_a, ctl_b, b)
            run.case("AbortMigration of a finished migration is FAILED_PRECONDITION",
                     case_abort_finished, grpc, pb, ctl_a, state)
        run.case("a running migration: second start refused, abort, abort again", case_busy,
                 grpc, pb, run, a, b, ctl_a, ctl_b)
        run.case("abort right after start: ABORTED (or FAILED), source never paused",
                 case_abort_at_once, grpc, pb, run, a, b, ctl_a, ctl_b)
    except Exception as e:
        run.fail("setup", "%s: %s" % (type(e).__name__, e))
    finally:
        if watch is not None:
            watch.close()
        for ctl in (ctl_a, ctl_b):
            if ctl is not None:
                ctl.close()
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
