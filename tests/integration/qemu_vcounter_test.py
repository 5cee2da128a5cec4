#!/usr/bin/env python3
"""qemu_vcounter_test.py BUILD_DIR - the patched QEMU (qemu-patch/) with two real vcounterd on
this host's /dev/kvm: registration, query-vcounter, and every way a migration is refused before
the guest stops (peer down, target QEMU without the object, this host's KVM ignoring offsets),
with vcounterd's reason in query-migrate and the source left running; fallback=on migrates by
value instead.

The guest is QEMU's firmware alone (no kernel): what is tested here is QEMU's and the daemons'
side of a migration; a Linux guest's clocks are measured in the nested-KVM rig (tests/qemu/).
Exit 77 (skip) when /dev/kvm or the patched QEMU cannot be had, with the reason."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(TOP, "build")
QEMU = None
FIRMWARE = ["/usr/share/seabios", "/usr/share/qemu"]


def skip(reason):
    print(f"qemu_vcounter_test: SKIP: {reason}")
    sys.exit(SKIP)


def find_qemu():
    if os.environ.get("VC_QEMU"):
        return os.environ["VC_QEMU"]
    r = subprocess.run([os.path.join(TOP, "qemu-patch", "build-qemu")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        print("qemu_vcounter_test: qemu-patch/build-qemu failed")
        sys.exit(99)
    for line in r.stdout.splitlines():
        if line.startswith("dir="):
            return os.path.join(line[4:], "bin", "qemu-system-x86_64")
    sys.exit(99)


class Qmp:
    """A QMP client: one command at a time, events kept aside."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rw")
        self.events = []
        json.loads(self.file.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd_raw(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(f"QEMU closed QMP during {name}")
            reply = json.loads(line)
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def cmd(self, name, **args):
        reply = self.cmd_raw(name, **args)
        if "error" in reply:
            raise RuntimeError(f"{name}: {reply['error']['desc']}")
        return reply["return"]

    def close(self):
        self.sock.close()


class Rig:
    """Two vcounterd (host-a, host-b) on loopback with real certificates, and QEMU processes."""

    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="vc-qemu-")
        self.dir = self.tmp.name
        self.procs = []
        self.logs = []
        certs = os.path.join(BUILD, "tests", "certs")
        subprocess.run([os.path.join(TOP, "tests", "gen-certs.sh"), certs], check=True)
        self.certs = certs
        self.daemons = {}
        for name, peer in (("a", "b"), ("b", "a")):
            args = [os.path.join(BUILD, "daemon", "vcounterd"),
                    "--vmm-socket", self.path(f"{name}.sock"),
                    "--control-socket", self.path(f"{name}.ctl"),
                    "--host-name", f"host-{name}.test",
                    "--ca", f"{certs}/ca.pem", "--cert", f"{certs}/host-{name}.pem",
                    "--key", f"{certs}/host-{name}.key", "--allow-peer", f"host-{peer}.test",
                    "--listen", "127.0.0.1:0", "--port-file", self.path(f"{name}.port")]
            log = open(self.path(f"host-{name}.log"), "w")
            self.daemons[name] = self.spawn(args, log)
        for name in ("a", "b"):
            self.wait_file(self.path(f"{name}.port"))
            self.wait_file(self.path(f"{name}.sock"))

    def path(self, name):
        return os.path.join(self.dir, name)

    def spawn(self, args, log):
        self.logs.append(log)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    @staticmethod
    def wait_file(path, timeout=20):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path) or os.path.getsize(path) == 0 and path.endswith(".port"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear")
            time.sleep(0.02)

    def port(self, name):
        with open(self.path(f"{name}.port")) as f:
            return int(f.read().strip())

    def qemu(self, tag, vcounter=None, incoming=None, extra=(), machine="microvm", smp="2"):
        """Start QEMU (KVM, microvm, 2 vCPUs, firmware only) with QMP on tag.qmp."""
        args = [QEMU]
        for d in FIRMWARE:
            args += ["-L", d]
        args += ["-M", machine, "-accel", "kvm", "-cpu", "qemu64", "-smp", smp, "-m", "64",
                 "-nodefaults", "-display", "none", "-no-user-config",
                 "-qmp", f"unix:{self.path(tag + '.qmp')},server=on,wait=off"]
        if vcounter:
            args += ["-object", "vcounter,id=vc0," + vcounter]
        if incoming:
            args += ["-incoming", incoming]
        args += list(extra)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.path.join(BUILD, "client")
        log = open(self.path(tag + ".log"), "w")
        self.logs.append(log)
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(p)
        self.wait_file(self.path(tag + ".qmp"))
        return p, Qmp(self.path(tag + ".qmp"))

    def log(self, tag):
        with open(self.path(tag + ".log")) as f:
            return f.read()

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()
        for name, p in self.daemons.items():
            # A daemon must outlive every QEMU that came and went: never crash.
            if p.returncode not in (0, -signal.SIGTERM):
                raise AssertionError(f"vcounterd host-{name} exited {p.returncode}:\n"
                                     + open(self.path(f"host-{name}.log")).read())
        self.tmp.cleanup()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_migration(qmp, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        info = qmp.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"migration still {info.get('status')}")
        time.sleep(0.05)


def vm_a(peer_port, extra=""):
    return f"vm-id=vm-q,socket={RIG.path('a.sock')},peer-address=127.0.0.1:{peer_port}," \
           f"peer-name=host-b.test{extra}"


class QemuVcounterTest(unittest.TestCase):
    def setUp(self):
        self.started = []

    def tearDown(self):
        for p, q in self.started:
            try:
                q.cmd_raw("quit")
            except (OSError, EOFError):
                pass
            q.close()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    def start(self, *args, **kw):
        p, q = RIG.qemu(*args, **kw)
        self.started.append((p, q))
        return p, q

    def test_registers_at_start_and_reports_backend(self):
        _, q = self.start("reg", vcounter=vm_a(RIG.port("b")))
        info = q.cmd("query-vcounter")
        self.assertTrue(info["registered"], info)
        self.assertEqual(info["role"], "source")
        self.assertEqual(info["vm-id"], "vm-q")
        self.assertIn(info["backend"], ("kvm-x86", "kvm-syscounter"))
        self.assertIsInstance(info["offset-control"], bool)
        self.assertTrue(info["probe-detail"])
        self.assertIn("clock-flags", info)
        ctl = subprocess.run([os.path.join(BUILD, "client", "vcounterctl"), "--socket",
                              RIG.path("a.ctl"), "--json", "vms"], stdout=subprocess.PIPE,
                             text=True, check=True)
        self.assertIn("vm-q", ctl.stdout)

    def test_incoming_qemu_registers_as_target(self):
        _, q = self.start("tgt", vcounter=f"vm-id=vm-t,socket={RIG.path('b.sock')}",
                          incoming="defer")
        info = q.cmd("query-vcounter")
        self.assertTrue(info["registered"], info)
        self.assertEqual(info["role"], "target")

    def test_object_add_registers_a_running_vm(self):
        _, q = self.start("late")
        self.assertEqual(q.cmd("query-status")["status"], "running")
        q.cmd("object-add", **{"qom-type": "vcounter", "id": "vc0", "vm-id": "vm-late",
                                "socket": RIG.path("a.sock")})
        info = q.cmd("query-vcounter")
        self.assertTrue(info["registered"], info)
        self.assertEqual(q.cmd("query-status")["status"], "running")
        with self.assertRaisesRegex(RuntimeError, "only one vcounter object"):
            q.cmd("object-add", **{"qom-type": "vcounter", "id": "vc1", "vm-id": "x"})

    def test_vcpu_hotplug_registers_anew(self):
        # q35 (microvm has no CPU hot-plug), stopped (-S): device_add creates the KVM vCPU; the
        # object registers the VM again with every vCPU fd, and the daemon holds the new count.
        _, q = self.start("hotplug", vcounter=f"vm-id=vm-hp,socket={RIG.path('a.sock')}",
                          machine="q35", smp="1,maxcpus=2", extra=["-S"])
        self.assertEqual(q.cmd("query-vcounter")["vcpus"], 1)
        free = [c for c in q.cmd("query-hotpluggable-cpus") if "qom-path" not in c]
        self.assertEqual(len(free), 1, free)
        q.cmd("device_add", driver=free[0]["type"], id="cpu1", **free[0]["props"])
        deadline = time.monotonic() + 20
        while q.cmd("query-vcounter").get("vcpus") != 2:
            self.assertLess(time.monotonic(), deadline, q.cmd("query-vcounter"))
            time.sleep(0.05)
        info = q.cmd("query-vcounter")
        self.assertTrue(info["registered"], info)
        self.assertNotIn("error", info)
        ctl = subprocess.run([os.path.join(BUILD, "client", "vcounterctl"), "--socket",
                              RIG.path("a.ctl"), "--json", "vms"], stdout=subprocess.PIPE,
                             text=True, check=True)
        vms = [v for v in json.loads(ctl.stdout)["vms"] if v["vm_id"] == "vm-hp"]
        self.assertEqual([v["vcpu_count"] for v in vms], [2], ctl.stdout)
        self.assertIn("registering anew", RIG.log("hotplug"))

    def test_no_daemon_leaves_the_vm_running_unregistered(self):
        _, q = self.start("nod", vcounter="vm-id=vm-n,socket=" + RIG.path("nothing.sock"))
        info = q.cmd("query-vcounter")
        self.assertFalse(info["registered"])
        self.assertIn("cannot reach vcounterd", info["error"])
        self.assertEqual(q.cmd("query-status")["status"], "running")

    def migrate_and_expect_refusal(self, src_vcounter, dst_vcounter, pattern, dst_tag):
        port = free_port()
        _, src = self.start("src-" + dst_tag, vcounter=src_vcounter)
        dst_p, dst = self.start(dst_tag, vcounter=dst_vcounter, incoming=f"tcp:127.0.0.1:{port}")
        self.assertEqual(src.cmd("query-status")["status"], "running")
        src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src)
        self.assertEqual(info["status"], "failed", info)
        self.assertRegex(info.get("error-desc", ""), pattern)
        # Refused before the guest stopped: it never left the running state.
        status = src.cmd("query-status")
        self.assertEqual(status["status"], "running", status)
        stops = [e for e in src.events if e["event"] == "STOP"]
        self.assertEqual(stops, [], "the source guest was stopped")
        return src, dst_p

    def test_peer_down_fails_before_the_guest_stops(self):
        closed = free_port()
        src, _ = self.migrate_and_expect_refusal(
            vm_a(closed), f"vm-id=vm-q,socket={RIG.path('b.sock')}",
            rf"vcounterd refused the migration to 127\.0\.0\.1:{closed} \(host-b\.test\): .",
            "dst-peer-down")
        last = src.cmd("query-vcounter")["last-migration"]
        self.assertIn("refused", last["error"])
        if src.cmd("query-vcounter")["offset-control"]:
            # On a host whose KVM ignores offsets, the source refuses for that first.
            self.assertRegex(last["error"], r"(?i)connect|refused|unreachable")

    def test_target_without_the_object_refuses_at_the_start(self):
        # The source restores by offset; an unpatched (or unconfigured) target QEMU does not know
        # the section and fails at once, and so does the migration, the guest still running.
        self.migrate_and_expect_refusal(vm_a(RIG.port("b")), None, r".", "dst-plain")
        self.assertIn("vcounter", RIG.log("dst-plain"))

    def test_offset_control_unavailable_fails_before_the_guest_stops(self):
        _, probe = self.start("probe", vcounter=f"vm-id=vm-p,socket={RIG.path('a.sock')}")
        if probe.cmd("query-vcounter")["offset-control"]:
            self.skipTest("this host's KVM honours TSC offsets (the nested-KVM rig covers it)")
        self.migrate_and_expect_refusal(
            vm_a(RIG.port("b")), f"vm-id=vm-q,socket={RIG.path('b.sock')}",
            r"refused the migration .*offset control unavailable", "dst-no-offset")

    def test_fallback_migrates_by_value(self):
        port = free_port()
        closed = free_port()
        _, src = self.start("src-fb", vcounter=vm_a(closed, ",fallback=on"))
        _, dst = self.start("dst-fb", vcounter=f"vm-id=vm-q,socket={RIG.path('b.sock')}",
                            incoming=f"tcp:127.0.0.1:{port}")
        src.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src)
        self.assertEqual(info["status"], "completed", info)
        last = src.cmd("query-vcounter")["last-migration"]
        self.assertEqual(last["mode"], "value")
        self.assertIn("refused", last["error"])
        deadline = time.monotonic() + 20
        while dst.cmd("query-status")["status"] != "running":
            self.assertLess(time.monotonic(), deadline, "the target never ran")
            time.sleep(0.05)
        self.assertEqual(dst.cmd("query-vcounter")["last-migration"]["mode"], "value")
        self.assertIn("by value (fallback=on)", RIG.log("src-fb"))


RIG = None

if __name__ == "__main__":
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        skip("no usable /dev/kvm on this machine")
    for d in ("daemon/vcounterd", "client/libvcounter.so.0", "client/vcounterctl"):
        if not os.path.exists(os.path.join(BUILD, d)):
            skip(f"{d} is not built in {BUILD}")
    if not any(os.path.exists(os.path.join(d, "bios-microvm.bin")) for d in FIRMWARE):
        skip("no bios-microvm.bin (Debian package seabios or qemu-system-data)")
    QEMU = find_qemu()
    RIG = Rig()
    try:
        prog = unittest.main(argv=[sys.argv[0], "-v"], exit=False)
    finally:
        RIG.close()
    result = prog.result
    print(f"{result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped)}"
          f" passed, {len(result.failures) + len(result.errors)} failed,"
          f" {len(result.skipped)} skipped")
    sys.exit(0 if result.wasSuccessful() else 1)
