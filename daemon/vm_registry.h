/* vm_registry.h - the VMs registered with this daemon, and their one owner:
 * an entry is added, found, walked and removed here and nowhere else, and
 * those who care (the migrations, the control API's watchers, systemd's fd
 * store) hear of a VM's registration, change and removal as observers
 * instead of being called by name. Removal frees the entry: its fds are
 * closed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "counter_state.h"

struct event;

struct vm_entry {
	struct vm_entry *next;
	char vm_id[VC_VM_ID_MAX + 1];
	enum vm_role role;
	uint64_t conn_id; /* the VMM connection that registered it */
	pid_t pid;
	uid_t uid;
	int *fds; /* VM fd then vCPU fds, held until unregister/disconnect */
	size_t n_fds;
	uint32_t n_vcpus;
	bool complete; /* every vCPU fd has arrived (RegisterVm may take several) */
	bool probed;
	/* A target whose incoming migration is done: the VM lives here, so it
	 * may also leave as a source (migration.c, target_arrived). */
	bool arrived;
	enum backend_kind backend;
	enum counter_arch arch; /* of the state it registered with */
	bool offset_control;
	char probe_detail[256];
	uint32_t guest_tsc_khz;
	uint64_t tsc_scaling_ratio;
	uint32_t tsc_scaling_frac_bits;
	/* Counter state read at registration, before the vCPUs first ran:
	 * per-vCPU ioctls wait for the vCPU mutex that KVM_RUN holds, so a
	 * running VM's offsets are only read again once the VMM paused it. */
	struct counter_state *registered_state;
	/* Its FDNAME in systemd's fd store (fdstore.h); "" when not stored. */
	char fd_name[16];
	/* Recovered from the store: its VMM's exit (a pidfd), which drops the
	 * VM if it had not reattached. NULL otherwise. */
	struct event *vmm_exit_ev;
};

enum vm_event {
	/* Probed and served: the VMM has (or is about to get) its reply. */
	VM_EVENT_REGISTERED,
	/* What a restart must know of it changed (it arrived as a target). */
	VM_EVENT_CHANGED,
	/* A registered VM is leaving; it is still in the registry. */
	VM_EVENT_UNREGISTERED,
	/* Any VM, out of the registry now, about to be freed. */
	VM_EVENT_REMOVED,
};

typedef void (*vm_observer_fn)(void *userdata, enum vm_event event, struct vm_entry *vm);

#define VM_REGISTRY_MAX_OBSERVERS 4

struct vm_registry {
	struct vm_entry *head; /* newest first */
	size_t n;
	struct {
		vm_observer_fn fn;
		void *userdata;
	} observers[VM_REGISTRY_MAX_OBSERVERS];
	size_t n_observers;
};

/* Observers hear each event in the order they subscribed. -ENOSPC past
 * VM_REGISTRY_MAX_OBSERVERS. */
int vm_registry_observe(struct vm_registry *reg, vm_observer_fn fn, void *userdata);

/* A new entry holding fds[0..n_fds) (taken) of a VM of n_vcpus vCPUs, room
 * for all 1 + n_vcpus; NULL when out of memory (the fds are then still the
 * caller's). Not in the registry until vm_registry_add. */
struct vm_entry *vm_entry_new(const char *vm_id, uint32_t n_vcpus, const int *fds, size_t n_fds);

/* An entry never added (a registration that did not finish): its fds
 * closed, freed. NULL. */
struct vm_entry *vm_entry_free(struct vm_entry *vm);

/* Link vm in; no event (a registration is announced once probed; a VM
 * restored from the fd store was announced by the run that stored it). */
void vm_registry_add(struct vm_registry *reg, struct vm_entry *vm);
struct vm_entry *vm_registry_find(const struct vm_registry *reg, const char *vm_id);
static inline size_t vm_registry_count(const struct vm_registry *reg)
{
	return reg->n;
}
static inline struct vm_entry *vm_registry_first(const struct vm_registry *reg)
{
	return reg->head;
}

/* VM_EVENT_REGISTERED / VM_EVENT_CHANGED to every observer. */
void vm_registry_announce(struct vm_registry *reg, struct vm_entry *vm);
void vm_registry_changed(struct vm_registry *reg, struct vm_entry *vm);

/* Remove vm: if it was registered (probed), VM_EVENT_UNREGISTERED while it
 * is still found; then it is unlinked, VM_EVENT_REMOVED, and freed: its fds
 * closed, its VMM's exit watch dropped. */
void vm_registry_remove(struct vm_registry *reg, struct vm_entry *vm);
/* Every entry freed, no event (shutdown: the fd store keeps them). */
void vm_registry_clear(struct vm_registry *reg);
