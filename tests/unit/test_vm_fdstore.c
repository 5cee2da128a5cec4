/* test_vm_fdstore.c - systemd's fd store as daemon/fdstore.c uses it, alone:
 * NOTIFY_SOCKET is this test's datagram socket, so every FDSTORE=1 and
 * FDSTOREREMOVE=1 the module sends, and the fds they carry, arrive here as
 * they would at systemd; what the test hands back is what systemd would pass
 * a restarted daemon (LISTEN_FDNAMES). The VMs are real KVM VMs (skipped
 * without /dev/kvm), the registry real, the VMM socket faked (vmm_drop_vm).
 * The whole daemon under systemd's protocol is test_fdstore's. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <linux/kvm.h>

#include "fdstore.h"
#include "unix_fd.h"
#include "vcd.h"
#include "vm_registry.h"
#include "vmm_server.h"

static struct vcd vcd;
static char dir[64], notify_path[96];
static int notify_fd = -1;
static unsigned drops;

/* ---- the VMM socket, faked ---- */

void vmm_drop_vm(struct vcd *v, struct vm_entry *vm, const char *why)
{
	drops++;
	vm_registry_remove(&v->vms, vm);
}

/* ---- what systemd would hold ---- */

struct store {
	struct fdstore_fd fds[16];
	size_t n;
	unsigned removes;
};

static void store_drop(struct store *st, const char *name)
{
	for (size_t i = 0; i < st->n;) {
		if (strcmp(st->fds[i].name, name) == 0) {
			close(st->fds[i].fd);
			st->fds[i] = st->fds[--st->n];
		} else {
			i++;
		}
	}
}

/* Read every notification queued: FDSTORE=1 adds its fds under FDNAME,
 * FDSTOREREMOVE=1 drops that name, as systemd does. */
static void drain(struct store *st)
{
	char buf[512];
	int fds[UNIX_FD_MAX_FDS];
	size_t n_fds;
	ssize_t len;

	while ((len = unix_fd_recv(notify_fd, buf, sizeof(buf) - 1, fds, &n_fds)) > 0) {
		const char *name;

		buf[len] = '\0';
		name = strstr(buf, "FDNAME=");
		assert_non_null(name);
		name += strlen("FDNAME=");
		if (strncmp(buf, "FDSTOREREMOVE=1\n", 16) == 0) {
			assert_int_equal(n_fds, 0);
			store_drop(st, name);
			st->removes++;
			continue;
		}
		assert_true(strncmp(buf, "FDSTORE=1\n", 10) == 0);
		for (size_t i = 0; i < n_fds; i++) {
			assert_true(st->n < sizeof(st->fds) / sizeof(st->fds[0]));
			snprintf(st->fds[st->n].name, sizeof(st->fds[st->n].name), "%s", name);
			st->fds[st->n++].fd = fds[i];
		}
	}
}

static size_t count_named(const struct store *st, const char *name)
{
	size_t n = 0;

	for (size_t i = 0; i < st->n; i++)
		n += strcmp(st->fds[i].name, name) == 0;
	return n;
}

/* ---- the daemon's side ---- */

/* A registered 1-vCPU KVM VM, announced as the VMM socket does. */
static struct vm_entry *register_vm(const char *vm_id)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), fds[2];
	struct vm_entry *vm;

	if (kvm < 0) {
		print_message("skipped: no /dev/kvm (%s)\n", strerror(errno));
		skip();
	}
	fds[0] = ioctl(kvm, KVM_CREATE_VM, 0);
	assert_true(fds[0] >= 0);
	fds[1] = ioctl(fds[0], KVM_CREATE_VCPU, 0);
	assert_true(fds[1] >= 0);
	close(kvm);
	vm = vm_entry_new(vm_id, 1, fds, 2);
	assert_non_null(vm);
	vm->role = VM_ROLE_TARGET;
	vm->pid = getpid();
	vm->uid = getuid();
	vm->complete = vm->probed = true;
	vm_registry_add(&vcd.vms, vm);
	vm_registry_announce(&vcd.vms, vm);
	return vm;
}

static void daemon_up(void)
{
	memset(&vcd, 0, sizeof(vcd));
	vcd.base = event_base_new();
	assert_non_null(vcd.base);
	vcd.config.max_vms = 8;
	assert_int_equal(fdstore_init(&vcd), 0);
	assert_true(vcd.fdstore);
}

static void daemon_down(void)
{
	/* As the manager stops: the VMs stay in the store. */
	vcd.stopping = true;
	vm_registry_clear(&vcd.vms);
	event_base_free(vcd.base);
}

static int setup(void **state)
{
	struct sockaddr_un sa;

	snprintf(dir, sizeof(dir), "/tmp/vc-fdstore-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(notify_path, sizeof(notify_path), "%s/notify", dir);
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(notify_fd >= 0);
	assert_int_equal(unix_fd_address(notify_path, &sa), 0);
	assert_int_equal(bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setenv("NOTIFY_SOCKET", notify_path, 1);
	drops = 0;
	daemon_up();
	return 0;
}

static int teardown(void **state)
{
	daemon_down();
	unsetenv("NOTIFY_SOCKET");
	close(notify_fd);
	unlink(notify_path);
	rmdir(dir);
	return 0;
}

/* ---- tests ---- */

static void test_a_registered_vm_survives_a_restart(void **state)
{
	struct store st = { .n = 0 };
	struct vm_entry *vm;
	int recovered;

	register_vm("vm-a");
	drain(&st);
	/* Its VM and vCPU fds, and the state record naming it. */
	assert_int_equal(count_named(&st, "vm0"), 2);
	assert_int_equal(count_named(&st, "state"), 1);

	/* The daemon stops; systemd passes the store to the next run. */
	daemon_down();
	daemon_up();
	recovered = fdstore_restore(&vcd, st.fds, st.n);
	assert_int_equal(recovered, 1);
	vm = vm_registry_find(&vcd.vms, "vm-a");
	assert_non_null(vm);
	assert_int_equal(vm->role, VM_ROLE_TARGET);
	assert_int_equal(vm->n_vcpus, 1);
	assert_int_equal(vm->n_fds, 2);
	assert_string_equal(vm->fd_name, "vm0");
	/* The restored fds are the VM's, not copies of nothing. */
	assert_true(ioctl(vm->fds[1], KVM_GET_TSC_KHZ, 0) > 0);
	/* fdstore_restore took the fds it was handed. */
	st.n = 0;
	/* A new registration gets a name not in use: vm1. */
	drain(&st);
	register_vm("vm-b");
	drain(&st);
	assert_int_equal(count_named(&st, "vm1"), 2);
	for (size_t i = 0; i < st.n; i++)
		close(st.fds[i].fd);
}

static void test_a_vm_that_leaves_leaves_the_store(void **state)
{
	struct store st = { .n = 0 };
	struct vm_entry *vm = register_vm("vm-a");

	drain(&st);
	assert_int_equal(count_named(&st, "vm0"), 2);
	vm_registry_remove(&vcd.vms, vm);
	drain(&st);
	assert_int_equal(count_named(&st, "vm0"), 0);
	/* The record was rewritten without it (the old one removed first). */
	assert_int_equal(count_named(&st, "state"), 1);
	daemon_down();
	daemon_up();
	assert_int_equal(fdstore_restore(&vcd, st.fds, st.n), 0);
	assert_int_equal(vm_registry_count(&vcd.vms), 0);
}

static void test_a_bad_record_drops_everything_stored(void **state)
{
	struct store st = { .n = 0 };
	int junk[2];

	register_vm("vm-a");
	drain(&st);
	daemon_down();
	daemon_up();
	/* The record replaced by garbage (a pipe's bytes), as a corrupted or
	 * foreign store would hand it over. */
	store_drop(&st, "state");
	assert_int_equal(pipe2(junk, O_CLOEXEC), 0);
	assert_int_equal(write(junk[1], "not a record", 12), 12);
	close(junk[1]);
	snprintf(st.fds[st.n].name, sizeof(st.fds[st.n].name), "state");
	st.fds[st.n++].fd = junk[0];
	st.removes = 0;
	assert_int_equal(fdstore_restore(&vcd, st.fds, st.n), 0);
	assert_int_equal(vm_registry_count(&vcd.vms), 0);
	/* Every fd was closed and the VM's name removed from the store. */
	for (size_t i = 0; i < st.n; i++)
		assert_true(fcntl(st.fds[i].fd, F_GETFD) < 0 || st.fds[i].fd == -2);
	st.n = 0;
	drain(&st);
	assert_true(st.removes >= 1);
	for (size_t i = 0; i < st.n; i++)
		close(st.fds[i].fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_registered_vm_survives_a_restart, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_vm_that_leaves_leaves_the_store, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_bad_record_drops_everything_stored, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
