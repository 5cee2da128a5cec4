/* vcounter.h - libvcounter: how a VMM delegates its VM's system-counter
 * handoff to the local vcounterd. All calls are synchronous; they return 0
 * (or a documented positive value) on success and -errno on failure, with a
 * sentence from the daemon in vcounter_last_error(). While a call waits, the
 * library also runs the KVM ioctls the daemon asks for on the VM's own fds
 * (KVM only accepts them from the VMM's process). */
#ifndef VCOUNTER_VCOUNTER_H
#define VCOUNTER_VCOUNTER_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VCOUNTER_DEFAULT_SOCKET	   "/run/vcounterd/vmm.sock"
#define VCOUNTER_MIGRATION_ID_SIZE 33 /* 32 hex digits + NUL */

enum vcounter_role {
	VCOUNTER_ROLE_SOURCE = 1,
	VCOUNTER_ROLE_TARGET = 2,
};

struct vcounter;

struct vcounter_vm_info {
	char backend[32];	/* "kvm-x86", "none", ... */
	bool offset_control;	/* KVM honours offset writes on this host */
	char probe_detail[256]; /* why (not) */
	uint32_t guest_tsc_khz;
};

struct vcounter_report {
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char vm_id[64];
	char backend[32];
	uint64_t generation;
	uint32_t n_vcpus;
	uint64_t *offsets_before; /* n_vcpus entries: source offsets */
	uint64_t *offsets_after;  /* n_vcpus entries: applied, read back */
	int64_t elapsed_ns;	  /* host time accounted between the anchors, >= 0 */
	int64_t delta_cycles;	  /* added to every source offset */
	uint64_t error_bound_ns;  /* UINT64_MAX: a host clock is unsynchronised */
	uint64_t apply_latency_ns;
	uint32_t guest_tsc_khz;
	bool error_bound_exceeded;
	/* The target's clock read earlier than the source's anchor by this: the
	 * guest's counter was held (elapsed_ns 0), never moved back below what
	 * the guest read; included in error_bound_ns. */
	uint64_t clamped_ns;
	char timescale[8]; /* what elapsed_ns counts: "tai", or "utc" when a host
			    * keeps no TAI offset */
	/* What the guest's kvmclock showed after the apply: "ok", "diverged"
	 * (advanced kvmclock_error_ns more than the TSC), "master-clock-lost"
	 * (KVM_CLOCK_TSC_STABLE at the source, not after), or "unchecked". */
	char kvmclock_check[24];
	uint32_t kvmclock_flags_source; /* KVM_GET_CLOCK flags at the source's read */
	uint32_t kvmclock_flags_before; /* on the target before the apply */
	uint32_t kvmclock_flags_after;	/* and after it */
	int64_t kvmclock_error_ns;
	/* Each host's share of error_bound_ns (UINT64_MAX: unknown) and what
	 * estimated it: "adjtimex", "chrony", "linuxptp" or "fixed" (vcounterd
	 * --sync-source). */
	char source_sync[16];
	uint64_t source_maxerror_ns;
	char target_sync[16];
	uint64_t target_maxerror_ns;
};

/* Connect to the daemon's VMM socket (NULL: VCOUNTER_DEFAULT_SOCKET).
 *
 * When vcounterd restarts, the next call finds it gone and connects again
 * to the same path, once per call, and gives the new daemon this
 * connection's VMs: by AttachVm when it recovered them from systemd's fd
 * store (systemctl restart, a crash restarted by Restart=), else (no
 * systemd, or a full stop and start) by registering them again with the
 * fds held here (a target whose migration's "done" notice came since, as
 * the source it now is), which runs the probe again (it waits for vCPUs inside
 * KVM_RUN: pause them, or expect the call to take that long). The call then
 * goes out as if nothing happened; one the old daemon had already received
 * fails with -ECONNRESET ("vcounterd restarted during the call"). The
 * connection keeps its fd number (vcounter_fd()) across this. */
int vcounter_connect(const char *socket_path, struct vcounter **ret_vc);
/* Close the connection; the daemon forgets this connection's VMs. NULL ok. */
void vcounter_close(struct vcounter *vc);

/* Sentence describing the last failure on vc ("" if none). */
const char *vcounter_last_error(const struct vcounter *vc);

/* Register a VM: vm_fd and every vCPU fd (index = vCPU id) travel to the
 * daemon by SCM_RIGHTS. The fds stay owned by the caller and must stay open
 * until vcounter_unregister_vm().
 *
 * Registration never writes the VM, so a VM whose guest has run (a VMM
 * started before vcounterd) may register. Offset control is probed by
 * write-then-read-back on a scratch VM the library creates in this process
 * (KVM_CREATE_VM, KVM_CREATE_VCPU 0) and closes during the call: same host,
 * same KVM module. Its /dev/kvm is opened by path, or, when that fails (a
 * sandbox), duplicated from a /dev/kvm fd this process already holds; with
 * neither, the call fails and vcounter_last_error() says "probe failed:
 * cannot create the probe's scratch VM: /dev/kvm: ...".
 *
 * The VM's own vCPUs are read (offsets, TSC kHz; KVM_GET_CLOCK on the VM):
 * vCPU ioctls wait for the vCPU mutex that KVM_RUN holds until it returns
 * to userspace, so a VMM registering a VM whose vCPUs have started pauses
 * them around this call - every vCPU thread out of KVM_RUN from before the
 * call until it returns (QEMU: pause_all_vcpus() before, resume_all_vcpus()
 * after). A vCPU left in KVM_RUN makes the call wait until its KVM_RUN
 * returns: forever for a guest that never needs userspace (minivm's rdtsc
 * loop). Before the vCPUs first run, no pause is needed. The pause lasts
 * the call, measured 21 ms on a kvm_pvm host and 99 ms in the emulated
 * nested rig (the first registration in a process includes measuring the
 * host TSC rate, ~20 ms); creating and closing the scratch VM take 0.3 ms
 * and 0.3 ms of it there, 34 ms and 29 ms in the rig (medians). */
int vcounter_register_vm(struct vcounter *vc, const char *vm_id, enum vcounter_role role, int vm_fd,
			 const int *vcpu_fds, unsigned n_vcpus, struct vcounter_vm_info *ret_info);
int vcounter_unregister_vm(struct vcounter *vc, const char *vm_id);

/* Source: start an outgoing migration of vm_id to the daemon at
 * peer_address ("host:port"), whose certificate must carry peer_name. The
 * current counter state goes to the target, which pre-computes. */
int vcounter_migrate_out(struct vcounter *vc, const char *vm_id, const char *peer_address,
			 const char *peer_name, char ret_migration_id[VCOUNTER_MIGRATION_ID_SIZE]);
/* Source: the guest is paused: every vCPU thread is out of KVM_RUN (vCPU
 * ioctls wait for the vCPU mutex KVM_RUN holds, so the offsets are read
 * here, not while the guest runs). Returns after the target daemon holds the
 * final state; the VMM may then send its own state to the target VMM. */
int vcounter_report_paused(struct vcounter *vc, const char *vm_id, const char *migration_id,
			   uint64_t *ret_generation);
/* Target: vCPU state is loaded and no vCPU has run; apply the counter. The
 * vCPUs may run when this returns 0, not before. One round trip: the daemon
 * sent the write ahead, when the final state reached it. Applying twice
 * returns the first report and writes nothing. */
int vcounter_apply(struct vcounter *vc, const char *vm_id, const char *migration_id,
		   struct vcounter_report **ret_report);
void vcounter_report_free(struct vcounter_report *report);

/* A migration of one of this connection's VMs moved. A fleet controller can
 * start or abort migrations on the daemon (service Control, vcounterctl);
 * this is how the VMM learns of them and does its part:
 *  - source, step "prepared": the target validated the state; migrate the
 *    guest, pause it, then vcounter_report_paused(migration_id);
 *  - target, step "prepared": a migration for this VM is coming; once the
 *    vCPU state is loaded, vcounter_apply(migration_id);
 *  - "aborted" or "failed" (terminal): stop; a paused source resumes. The
 *    source VM's counter was never written.
 * Every step is told, also for migrations the VMM started itself. */
struct vcounter_notice {
	char migration_id[VCOUNTER_MIGRATION_ID_SIZE];
	char vm_id[64];
	enum vcounter_role role;
	char step[16]; /* "preparing", "prepared", "finalizing", "final", "applying",
			  "applied", "done", "aborted", "failed" */
	bool terminal; /* done, aborted, failed */
	uint64_t generation;
	char peer_identity[256];
	char peer_address[256]; /* source: the target daemon */
	char reason[256];	/* aborted, failed: why */
};

/* The connection's socket, for poll(): readable when the daemon sent
 * something (a notice, or a KVM op only libvcounter can run): then call
 * vcounter_next_notice(vc, 0, ...). */
int vcounter_fd(const struct vcounter *vc);
/* Wait up to timeout_ms (-1: no limit, 0: only what has arrived) for the
 * next notice, running the daemon's KVM ops meanwhile. 1 with *ret filled,
 * 0 when none came, -errno. Notices that arrive during other calls are kept
 * in order (the oldest dropped beyond 256) and returned first. */
int vcounter_next_notice(struct vcounter *vc, int timeout_ms, struct vcounter_notice *ret);

#ifdef __cplusplus
}
#endif

#endif
