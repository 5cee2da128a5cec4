/* minivm.h - the reference VMM's VM core: a real KVM VM whose vCPUs run a
 * tiny real-mode guest that keeps storing its own rdtsc, so the TSC a guest
 * sees can be observed across pause, save, load and a counter handoff. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MINIVM_MAX_VCPUS 256
#define MINIVM_ERROR_MAX 256

struct minivm;

/* What vCPU i's guest last stored. tsc is written by one aligned 8-byte
 * store, so it is never torn; seq counts completed samples and is bumped
 * right after each tsc store, so tsc belongs to sample seq or seq + 1. */
struct minivm_observation {
	uint64_t tsc;
	uint64_t seq;
};

/* Open /dev/kvm, create the VM, its memory (guest code copied in) and
 * n_vcpus vCPUs in real mode at the guest's entry, vCPU i with SI = i.
 * Nothing runs yet. Installs a no-op SIGUSR1 handler for the process:
 * minivm_pause() uses SIGUSR1 to kick vCPU threads out of KVM_RUN.
 * -errno; ret_error (if not NULL, MINIVM_ERROR_MAX bytes) says why. */
int minivm_create(unsigned n_vcpus, struct minivm **ret_vm, char *ret_error);
/* Pauses if running, closes everything. NULL is fine; returns NULL. */
struct minivm *minivm_free(struct minivm *vm);

static inline void minivm_freep(struct minivm **vm)
{
	minivm_free(*vm);
}

/* One thread per vCPU running KVM_RUN; returns once every vCPU's guest has
 * stored a new sample (the guest really runs), or -EIO with "this host's
 * KVM cannot run the guest: ..." in minivm_last_error() (the vCPUs are
 * paused again), -EBUSY if already running. */
int minivm_start(struct minivm *vm);
/* Kick every vCPU out of KVM_RUN (immediate_exit + SIGUSR1) and join its
 * thread. 0 if the guest ran until paused; -EIO if a vCPU had stopped on
 * its own (an unexpected KVM exit), with the exit in minivm_last_error().
 * Paused already: 0. */
int minivm_pause(struct minivm *vm);
bool minivm_is_running(const struct minivm *vm);

/* Observations of every vCPU; n must be the VM's vCPU count. Safe while
 * running (each field is one atomic load) and while paused. */
int minivm_read_observations(const struct minivm *vm, struct minivm_observation *ret_obs, size_t n);

/* Saved state: a header, then per vCPU KVM_GET_REGS and KVM_GET_SREGS (all
 * the guest uses: no FPU, no interrupts, no devices), then guest memory. No
 * TSC: that is what the counter handoff moves, by offset. */
size_t minivm_state_size(const struct minivm *vm);
/* Paused VMs only (-EBUSY); -ENOBUFS if size < minivm_state_size(). */
int minivm_save(struct minivm *vm, void *buf, size_t size);
/* Load saved state into a paused VM with the same vCPU count (-EINVAL on
 * a bad or mismatched blob). The VM's vCPUs resume where the source's
 * stopped once minivm_start() runs them. */
int minivm_load(struct minivm *vm, const void *buf, size_t size);

/* For vcounter_register_vm(): the VM fd and the vCPU fds (index = vCPU id),
 * owned by vm. */
int minivm_vm_fd(const struct minivm *vm);
const int *minivm_vcpu_fds(const struct minivm *vm);
unsigned minivm_n_vcpus(const struct minivm *vm);

/* Sentence about the last failure ("" if none). */
const char *minivm_last_error(const struct minivm *vm);
