/* test_vm_registry.c - the VM registry (daemon/vm_registry.c): one owner of
 * the registered VMs, and what its observers hear, in which order, and
 * while the VM is still found or already gone. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "vm_registry.h"

struct heard {
	int observer;
	enum vm_event event;
	char vm_id[VC_VM_ID_MAX + 1];
	bool found; /* vm_registry_find saw it at that moment */
};

static struct vm_registry reg;
static struct heard heard[16];
static size_t n_heard;

static void observer(int which, enum vm_event event, struct vm_entry *vm)
{
	assert_true(n_heard < sizeof(heard) / sizeof(heard[0]));
	heard[n_heard].observer = which;
	heard[n_heard].event = event;
	snprintf(heard[n_heard].vm_id, sizeof(heard[n_heard].vm_id), "%s", vm->vm_id);
	heard[n_heard].found = vm_registry_find(&reg, vm->vm_id) == vm;
	n_heard++;
}

static void first(void *userdata, enum vm_event event, struct vm_entry *vm)
{
	assert_ptr_equal(userdata, &reg);
	observer(1, event, vm);
}

static void second(void *userdata, enum vm_event event, struct vm_entry *vm)
{
	assert_ptr_equal(userdata, &reg);
	observer(2, event, vm);
}

static int setup(void **state)
{
	(void)state;
	memset(&reg, 0, sizeof(reg));
	n_heard = 0;
	assert_int_equal(vm_registry_observe(&reg, first, &reg), 0);
	assert_int_equal(vm_registry_observe(&reg, second, &reg), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	vm_registry_clear(&reg);
	return 0;
}

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* A VM of n_vcpus vCPUs holding pipe ends as its fds (returned in fds). */
static struct vm_entry *new_vm(const char *id, uint32_t n_vcpus, int *fds)
{
	struct vm_entry *vm;
	int p[2];

	for (uint32_t i = 0; i < 1 + n_vcpus; i += 2) {
		assert_int_equal(pipe2(p, O_CLOEXEC), 0);
		fds[i] = p[0];
		if (i + 1 < 1 + n_vcpus)
			fds[i + 1] = p[1];
		else
			close(p[1]);
	}
	vm = vm_entry_new(id, n_vcpus, fds, 1 + (size_t)n_vcpus);
	assert_non_null(vm);
	return vm;
}

static void test_add_find_count_newest_first(void **state)
{
	int fds_a[3], fds_b[2];
	struct vm_entry *a = new_vm("vm-a", 2, fds_a), *b = new_vm("vm-b", 1, fds_b);

	(void)state;
	assert_int_equal(vm_registry_count(&reg), 0);
	assert_null(vm_registry_find(&reg, "vm-a"));
	vm_registry_add(&reg, a);
	vm_registry_add(&reg, b);
	assert_int_equal(vm_registry_count(&reg), 2);
	assert_ptr_equal(vm_registry_find(&reg, "vm-a"), a);
	assert_ptr_equal(vm_registry_find(&reg, "vm-b"), b);
	assert_null(vm_registry_find(&reg, "vm-"));
	assert_ptr_equal(vm_registry_first(&reg), b);
	assert_ptr_equal(b->next, a);
	/* Adding announces nothing: a registration is announced once probed. */
	assert_int_equal(n_heard, 0);
	assert_int_equal(a->n_fds, 3);
	assert_memory_equal(a->fds, fds_a, sizeof(fds_a));
}

static void test_observers_hear_in_order(void **state)
{
	int fds[2];
	struct vm_entry *vm = new_vm("vm-a", 1, fds);

	(void)state;
	vm_registry_add(&reg, vm);
	vm->probed = true;
	vm_registry_announce(&reg, vm);
	vm_registry_changed(&reg, vm);
	assert_int_equal(n_heard, 4);
	assert_true(heard[0].observer == 1 && heard[0].event == VM_EVENT_REGISTERED);
	assert_true(heard[1].observer == 2 && heard[1].event == VM_EVENT_REGISTERED);
	assert_true(heard[2].observer == 1 && heard[2].event == VM_EVENT_CHANGED);
	assert_true(heard[3].observer == 2 && heard[3].event == VM_EVENT_CHANGED);
	assert_string_equal(heard[3].vm_id, "vm-a");
}

/* A registered VM leaving: UNREGISTERED while it is still found (its
 * migrations end, watchers hear it), then REMOVED once it is not (the fd
 * store rewrites a record without it), then its fds are closed. */
static void test_a_registered_vm_leaves_in_two_steps_and_its_fds_close(void **state)
{
	int fds[3], other_fds[2];
	struct vm_entry *vm = new_vm("vm-a", 2, fds), *other = new_vm("vm-b", 1, other_fds);

	(void)state;
	vm_registry_add(&reg, vm);
	vm_registry_add(&reg, other);
	vm->probed = true;
	vm_registry_remove(&reg, vm);
	assert_int_equal(n_heard, 4);
	for (size_t i = 0; i < 2; i++) {
		assert_int_equal(heard[i].event, VM_EVENT_UNREGISTERED);
		assert_true(heard[i].found);
	}
	for (size_t i = 2; i < 4; i++) {
		assert_int_equal(heard[i].event, VM_EVENT_REMOVED);
		assert_false(heard[i].found);
	}
	assert_int_equal(vm_registry_count(&reg), 1);
	assert_ptr_equal(vm_registry_first(&reg), other);
	for (size_t i = 0; i < 3; i++)
		assert_false(fd_open(fds[i]));
	for (size_t i = 0; i < 2; i++)
		assert_true(fd_open(other_fds[i]));
}

/* One whose registration never finished (no probe): nobody announced it,
 * so nobody hears it unregistered; the fd store still hears it removed. */
static void test_an_unfinished_registration_goes_quietly(void **state)
{
	int fds[2];
	struct vm_entry *vm = new_vm("vm-a", 1, fds);

	(void)state;
	vm_registry_add(&reg, vm);
	vm_registry_remove(&reg, vm);
	assert_int_equal(n_heard, 2);
	assert_int_equal(heard[0].event, VM_EVENT_REMOVED);
	assert_int_equal(heard[1].event, VM_EVENT_REMOVED);
	assert_int_equal(vm_registry_count(&reg), 0);
	assert_false(fd_open(fds[0]));
}

/* Shutdown: every entry freed and its fds closed, nobody told (the fd
 * store keeps the VMs for the next run). */
static void test_clear_frees_all_silently(void **state)
{
	int fds_a[2], fds_b[2];

	(void)state;
	vm_registry_add(&reg, new_vm("vm-a", 1, fds_a));
	vm_registry_add(&reg, new_vm("vm-b", 1, fds_b));
	vm_registry_first(&reg)->probed = true;
	vm_registry_clear(&reg);
	assert_int_equal(n_heard, 0);
	assert_int_equal(vm_registry_count(&reg), 0);
	assert_null(vm_registry_first(&reg));
	assert_false(fd_open(fds_a[0]) || fd_open(fds_a[1]) || fd_open(fds_b[0]) ||
		     fd_open(fds_b[1]));
}

static void test_limits_of_entries_and_observers(void **state)
{
	int fds[3] = { 0, 1, 2 };

	(void)state;
	/* More fds than the VM and its vCPUs: refused, nothing taken. */
	assert_null(vm_entry_new("vm-a", 1, fds, 3));
	assert_int_equal(vm_registry_observe(&reg, first, &reg), 0);
	assert_int_equal(vm_registry_observe(&reg, second, &reg), 0);
	assert_int_equal(vm_registry_observe(&reg, first, &reg), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_add_find_count_newest_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_observers_hear_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_a_registered_vm_leaves_in_two_steps_and_its_fds_close, setup,
			teardown),
		cmocka_unit_test_setup_teardown(test_an_unfinished_registration_goes_quietly, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_clear_frees_all_silently, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits_of_entries_and_observers, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
