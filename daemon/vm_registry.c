/* vm_registry.c - the VMs registered with this daemon. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "cleanup.h"
#include "unix_fd.h"
#include "pidwatch.h"
#include "vm_registry.h"

int vm_registry_observe(struct vm_registry *reg, vm_observer_fn fn, void *userdata)
{
	if (reg->n_observers >= VM_REGISTRY_MAX_OBSERVERS)
		return -ENOSPC;
	reg->observers[reg->n_observers].fn = fn;
	reg->observers[reg->n_observers].userdata = userdata;
	reg->n_observers++;
	return 0;
}

static void notify(struct vm_registry *reg, enum vm_event event, struct vm_entry *vm)
{
	for (size_t i = 0; i < reg->n_observers; i++)
		reg->observers[i].fn(reg->observers[i].userdata, event, vm);
}

struct vm_entry *vm_entry_new(const char *vm_id, uint32_t n_vcpus, const int *fds, size_t n_fds)
{
	struct vm_entry *vm = calloc(1, sizeof(*vm));

	if (!vm || n_fds > 1 + (size_t)n_vcpus ||
	    !(vm->fds = calloc(1 + (size_t)n_vcpus, sizeof(int)))) {
		free(vm);
		return NULL;
	}
	if (n_fds)
		memcpy(vm->fds, fds, n_fds * sizeof(int));
	vm->n_fds = n_fds;
	vm->n_vcpus = n_vcpus;
	snprintf(vm->vm_id, sizeof(vm->vm_id), "%s", vm_id);
	return vm;
}

void vm_registry_add(struct vm_registry *reg, struct vm_entry *vm)
{
	vm->next = reg->head;
	reg->head = vm;
	reg->n++;
}

struct vm_entry *vm_registry_find(const struct vm_registry *reg, const char *vm_id)
{
	for (struct vm_entry *vm = reg->head; vm; vm = vm->next)
		if (strcmp(vm->vm_id, vm_id) == 0)
			return vm;
	return NULL;
}

void vm_registry_announce(struct vm_registry *reg, struct vm_entry *vm)
{
	notify(reg, VM_EVENT_REGISTERED, vm);
}

void vm_registry_changed(struct vm_registry *reg, struct vm_entry *vm)
{
	notify(reg, VM_EVENT_CHANGED, vm);
}

struct vm_entry *vm_entry_free(struct vm_entry *vm)
{
	if (!vm)
		return NULL;
	vm->vmm_exit_ev = pidwatch_unref(vm->vmm_exit_ev);
	unix_fd_close_all(vm->fds, vm->n_fds);
	free(vm->fds);
	free(vm->registered_state);
	free(vm);
	return NULL;
}

static void unlink_entry(struct vm_registry *reg, struct vm_entry *vm)
{
	for (struct vm_entry **p = &reg->head; *p; p = &(*p)->next) {
		if (*p == vm) {
			*p = vm->next;
			reg->n--;
			return;
		}
	}
}

void vm_registry_remove(struct vm_registry *reg, struct vm_entry *vm)
{
	if (vm->probed)
		notify(reg, VM_EVENT_UNREGISTERED, vm);
	unlink_entry(reg, vm);
	notify(reg, VM_EVENT_REMOVED, vm);
	vm_entry_free(vm);
}

void vm_registry_clear(struct vm_registry *reg)
{
	while (reg->head) {
		struct vm_entry *vm = reg->head;

		unlink_entry(reg, vm);
		vm_entry_free(vm);
	}
}
