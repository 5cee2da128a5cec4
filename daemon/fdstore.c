/* fdstore.c - registered VMs' fds and a state record in systemd's fd store,
 * and the VMs rebuilt from them after a restart (fdstore.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <event2/event.h>

#include "cleanup.h"
#include "fd_check.h"
#include "fdstore.h"
#include "log.h"
#include "pidwatch.h"
#include "macro.h"
#include "unix_fd.h"
#include "vcd.h"
#include "vm_store.h"
#include "vmm_server.h"

_Static_assert(VM_STORE_MAX_VMS == VCD_MAX_VMS, "a store record holds every VM a daemon can");

#define STATE_FD_NAME "state"

static void on_vm(void *userdata, enum vm_event event, struct vm_entry *vm);

int fdstore_init(struct vcd *vcd)
{
	vcd->fdstore = getenv("NOTIFY_SOCKET") != NULL;
	return vm_registry_observe(&vcd->vms, on_vm, vcd);
}

/* FDSTORE=1 for fds under name, in messages of at most SCM_MAX_FD fds
 * (systemd appends fds sent under a name it already holds). */
static int store_fds(const char *name, const int *fds, size_t n)
{
	char msg[64];
	int r;

	snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
	for (size_t sent = 0; sent < n;) {
		size_t chunk = n - sent < UNIX_FD_MAX_FDS ? n - sent : UNIX_FD_MAX_FDS;

		r = sd_pid_notify_with_fds(0, 0, msg, fds + sent, (unsigned)chunk);
		if (r < 0)
			return r;
		if (r == 0)
			return -ENOTCONN;
		sent += chunk;
	}
	return 0;
}

static void remove_fds(const char *name)
{
	char msg[64];
	int r;

	snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
	r = sd_pid_notify(0, 0, msg);
	if (r <= 0)
		log_debug_errno(r, "fd store: cannot remove %s", name);
}

static void entry_from_vm(const struct vm_entry *vm, struct vm_store_entry *e)
{
	memset(e, 0, sizeof(*e));
	snprintf(e->vm_id, sizeof(e->vm_id), "%s", vm->vm_id);
	snprintf(e->fd_name, sizeof(e->fd_name), "%s", vm->fd_name);
	e->role = vm->role;
	e->n_vcpus = vm->n_vcpus;
	e->pid = vm->pid;
	e->uid = vm->uid;
	e->backend = vm->backend;
	e->arch = vm->arch;
	e->offset_control = vm->offset_control;
	snprintf(e->probe_detail, sizeof(e->probe_detail), "%s", vm->probe_detail);
	e->guest_tsc_khz = vm->guest_tsc_khz;
	e->tsc_scaling_ratio = vm->tsc_scaling_ratio;
	e->tsc_scaling_frac_bits = vm->tsc_scaling_frac_bits;
	e->has_state = vm->registered_state != NULL;
	if (vm->registered_state)
		e->state = *vm->registered_state;
	e->arrived = vm->arrived;
}

/* A sealed memfd holding buf: systemd keeps it, nobody can change it. */
static int memfd_with(const uint8_t *buf, size_t len)
{
	_cleanup_close_ int fd = memfd_create("vcounterd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		return -errno;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, buf + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
		return -errno;
	return TAKE_FD(fd);
}

/* Replace the stored record with one naming every stored VM. */
static void save_state(struct vcd *vcd)
{
	_cleanup_free_ struct vm_store_entry *entries = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	_cleanup_close_ int fd = -1;
	size_t n = 0, len;
	int r;

	entries = calloc(vm_registry_count(&vcd->vms) ? vm_registry_count(&vcd->vms) : 1,
			 sizeof(*entries));
	if (!entries) {
		log_warning("fd store: out of memory for the state record");
		return;
	}
	for (struct vm_entry *vm = vm_registry_first(&vcd->vms); vm; vm = vm->next)
		if (vm->fd_name[0])
			entry_from_vm(vm, &entries[n++]);
	r = vm_store_encode(entries, n, &buf, &len);
	if (r >= 0)
		r = fd = memfd_with(buf, len);
	/* Remove first: stored under a name already held, the new memfd would
	 * be added to the old one, not replace it. */
	remove_fds(STATE_FD_NAME);
	if (r >= 0)
		r = store_fds(STATE_FD_NAME, &fd, 1);
	if (r < 0)
		log_warning_errno(r,
				  "fd store: cannot store the state record of %zu VMs; "
				  "a restart now loses them (their VMMs register again)",
				  n);
	else
		log_debug("fd store: state record of %zu VMs, %zu bytes", n, len);
}

static void vm_add(struct vcd *vcd, struct vm_entry *vm)
{
	int r;

	if (!vcd->fdstore)
		return;
	snprintf(vm->fd_name, sizeof(vm->fd_name), "vm%llu",
		 (unsigned long long)vcd->next_fd_name++);
	r = store_fds(vm->fd_name, vm->fds, vm->n_fds);
	if (r < 0) {
		log_warning_errno(r,
				  "vm=%s: cannot keep its fds in the fd store "
				  "(FileDescriptorStoreMax= too low?); a restart loses it",
				  vm->vm_id);
		remove_fds(vm->fd_name);
		vm->fd_name[0] = '\0';
		return;
	}
	save_state(vcd);
}

/* Is vm in the store, and the store to be kept up to date? At shutdown
 * the VMs stay in it for the next run. */
static bool stored(const struct vcd *vcd, const struct vm_entry *vm)
{
	return vcd->fdstore && vm->fd_name[0] && !vcd->stopping;
}

/* The registry's news: a VM registered is stored, one whose role or
 * registered state changed (a target that arrived) rewrites the record, one
 * removed leaves the store. */
static void on_vm(void *userdata, enum vm_event event, struct vm_entry *vm)
{
	struct vcd *vcd = userdata;

	switch (event) {
	case VM_EVENT_REGISTERED:
		vm_add(vcd, vm);
		break;
	case VM_EVENT_CHANGED:
		if (stored(vcd, vm))
			save_state(vcd);
		break;
	case VM_EVENT_REMOVED:
		if (!stored(vcd, vm))
			break;
		remove_fds(vm->fd_name);
		vm->fd_name[0] = '\0';
		save_state(vcd);
		break;
	case VM_EVENT_UNREGISTERED:
		break; /* REMOVED follows, once the record can leave it out */
	}
}

static int read_record(int fd, uint8_t **ret_buf, size_t *ret_len)
{
	_cleanup_free_ uint8_t *buf = NULL;
	struct stat st;
	size_t len;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	if (st.st_size < 0 || (uint64_t)st.st_size > VM_STORE_MAX_BYTES)
		return -E2BIG;
	len = (size_t)st.st_size;
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	for (size_t off = 0; off < len;) {
		ssize_t n = pread(fd, buf + off, len - off, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		off += (size_t)n;
	}
	*ret_buf = TAKE_PTR(buf);
	*ret_len = len;
	return 0;
}

/* The fds stored under e->fd_name, as VM fd then vCPU 0..n-1 whatever
 * order the store kept them in (fd_check names each one's kind and vCPU
 * id), checked as a registration. Takes them from fds (set to -1). */
static int collect_vm_fds(const struct vm_store_entry *e, struct fdstore_fd *fds, size_t n,
			  int **ret_fds, char *err, size_t err_size)
{
	size_t want = 1 + (size_t)e->n_vcpus, got = 0;
	_cleanup_free_ int *out = malloc(want * sizeof(int));
	int r = 0;

	if (!out)
		return -ENOMEM;
	for (size_t i = 0; i < want; i++)
		out[i] = -1;
	for (size_t i = 0; i < n; i++) {
		enum fd_kind kind;
		uint32_t index = 0;
		size_t slot;

		if (fds[i].fd < 0 || strcmp(fds[i].name, e->fd_name) != 0)
			continue;
		got++;
		if (r == 0 && fd_check_classify(fds[i].fd, &kind, &index) == 0 &&
		    (kind == FD_KIND_KVM_VM || (kind == FD_KIND_KVM_VCPU && index < e->n_vcpus))) {
			slot = kind == FD_KIND_KVM_VM ? 0 : 1 + (size_t)index;
			if (out[slot] < 0) {
				out[slot] = fds[i].fd;
				fds[i].fd = -1;
				continue;
			}
		}
		if (r == 0) {
			snprintf(err, err_size, "fd %zu under %s is not one of its KVM fds", i,
				 e->fd_name);
			r = -EINVAL;
		}
	}
	if (r == 0 && got != want) {
		snprintf(err, err_size, "%zu fds stored under %s, expected %zu (VM + %u vCPUs)",
			 got, e->fd_name, want, e->n_vcpus);
		r = -EINVAL;
	}
	if (r == 0)
		r = fd_check_registration(out, want, e->n_vcpus, err, err_size);
	if (r < 0) {
		for (size_t i = 0; i < want; i++)
			if (out[i] >= 0)
				close(out[i]);
		return r;
	}
	*ret_fds = TAKE_PTR(out);
	return 0;
}

/* The VM e names, holding fds (1 + its vCPUs, taken on success), in the
 * registry; NULL when out of memory. */
static struct vm_entry *vm_from_entry(struct vcd *vcd, const struct vm_store_entry *e, int *fds)
{
	_cleanup_free_ struct counter_state *state = NULL;
	struct vm_entry *vm;

	if (e->has_state) {
		state = malloc(sizeof(*state));
		if (!state)
			return NULL;
		*state = e->state;
	}
	vm = vm_entry_new(e->vm_id, e->n_vcpus, fds, 1 + (size_t)e->n_vcpus);
	if (!vm)
		return NULL;
	vm->registered_state = TAKE_PTR(state);
	free(fds); /* copied: the entry holds them now */
	snprintf(vm->fd_name, sizeof(vm->fd_name), "%s", e->fd_name);
	vm->role = e->role;
	vm->conn_id = 0; /* detached until its VMM sends AttachVm */
	vm->pid = e->pid;
	vm->uid = e->uid;
	vm->complete = true;
	vm->probed = true;
	vm->backend = e->backend;
	vm->arch = e->arch;
	vm->offset_control = e->offset_control;
	snprintf(vm->probe_detail, sizeof(vm->probe_detail), "%s", e->probe_detail);
	vm->guest_tsc_khz = e->guest_tsc_khz;
	vm->tsc_scaling_ratio = e->tsc_scaling_ratio;
	vm->tsc_scaling_frac_bits = e->tsc_scaling_frac_bits;
	vm->arrived = e->arrived;
	vm_registry_add(&vcd->vms, vm);
	return vm;
}

/* A recovered VM's VMM exited (its pidfd is readable): if it never came
 * back, nobody can use the VM, and its fds would keep the guest's memory. */
static void vmm_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct vcd *vcd = arg;

	for (struct vm_entry *vm = vm_registry_first(&vcd->vms); vm; vm = vm->next) {
		if (!vm->vmm_exit_ev || event_get_fd(vm->vmm_exit_ev) != fd)
			continue;
		if (vm->conn_id == 0) {
			vmm_drop_vm(vcd, vm, "its VMM exited before reattaching");
		} else {
			vm->vmm_exit_ev = pidwatch_unref(vm->vmm_exit_ev);
		}
		return;
	}
}

/* Watch the VMM process of a recovered VM; best effort (no pidfd: the VM
 * stays until its VMM reattaches, or the daemon stops). */
static void watch_vmm(struct vcd *vcd, struct vm_entry *vm)
{
	int r = pidwatch_new(vcd->base, vm->pid, vmm_exit_cb, vcd, &vm->vmm_exit_ev);

	if (r < 0)
		log_debug_errno(r, "vm=%s: cannot watch VMM pid=%d", vm->vm_id, (int)vm->pid);
}

static void bump_fd_name(struct vcd *vcd, const char *name)
{
	unsigned long long k;

	if (vm_store_fd_name_is_valid(name)) {
		k = strtoull(name + 2, NULL, 10);
		if (k >= vcd->next_fd_name)
			vcd->next_fd_name = k + 1;
	}
}

int fdstore_restore(struct vcd *vcd, struct fdstore_fd *fds, size_t n)
{
	_cleanup_free_ struct vm_store_entry *entries = NULL;
	_cleanup_free_ uint8_t *buf = NULL;
	size_t n_entries = 0, len = 0, n_state = 0;
	int state_fd = -1, recovered = 0, r;
	char err[256] = "";

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		bump_fd_name(vcd, fds[i].name);
		if (strcmp(fds[i].name, STATE_FD_NAME) == 0) {
			state_fd = fds[i].fd;
			n_state++;
		}
	}
	if (n_state != 1) {
		r = -EBADMSG;
		snprintf(err, sizeof(err), "%zu state records stored, expected 1", n_state);
	} else {
		r = read_record(state_fd, &buf, &len);
		if (r < 0)
			snprintf(err, sizeof(err), "cannot read it: %s", strerror(-r));
		else
			r = vm_store_decode(buf, len, &entries, &n_entries, err, sizeof(err));
	}
	if (r < 0) {
		log_warning("fd store: state record unusable (%s): dropping the %zu stored fds; "
			    "their VMMs register again",
			    err, n);
		n_entries = 0;
	}
	for (size_t i = 0; i < n_entries; i++) {
		const struct vm_store_entry *e = &entries[i];
		struct vm_entry *vm;
		int *vm_fds = NULL;

		if (vm_registry_find(&vcd->vms, e->vm_id) ||
		    vm_registry_count(&vcd->vms) >= vcd->config.max_vms) {
			log_warning("vm=%s step=recover: dropped: already known or too many VMs",
				    e->vm_id);
			continue;
		}
		if (kill(e->pid, 0) < 0 && errno == ESRCH) {
			log_warning("vm=%s step=recover: dropped: its VMM pid=%d is gone", e->vm_id,
				    (int)e->pid);
			continue;
		}
		r = collect_vm_fds(e, fds, n, &vm_fds, err, sizeof(err));
		if (r < 0) {
			log_warning("vm=%s step=recover: dropped: %s", e->vm_id, err);
			remove_fds(e->fd_name);
			continue;
		}
		vm = vm_from_entry(vcd, e, vm_fds);
		if (!vm) {
			unix_fd_close_all(vm_fds, 1 + (size_t)e->n_vcpus);
			free(vm_fds);
			remove_fds(e->fd_name);
			log_warning_errno(-ENOMEM, "vm=%s step=recover: dropped", e->vm_id);
			continue;
		}
		watch_vmm(vcd, vm);
		recovered++;
		log_info("vm=%s role=%s vcpus=%u pid=%d step=recover: recovered from the fd store "
			 "(%s), detached until its VMM reattaches",
			 e->vm_id, vm_role_to_string(e->role), e->n_vcpus, (int)e->pid, e->fd_name);
	}
	/* Whatever no recovered VM took leaves the store. */
	for (size_t i = 0; i < n; i++) {
		if (fds[i].fd < 0)
			continue;
		if (strcmp(fds[i].name, STATE_FD_NAME) != 0) {
			bool named = false;

			for (size_t j = 0; j < i; j++)
				named |= strcmp(fds[j].name, fds[i].name) == 0 && fds[j].fd == -2;
			if (!named)
				remove_fds(fds[i].name);
		}
		close(fds[i].fd);
		fds[i].fd = -2; /* closed, and its name removed */
	}
	if (vcd->fdstore)
		save_state(vcd);
	if (n_entries > 0 || recovered > 0)
		log_info("fd store: %d of %zu stored VMs recovered", recovered, n_entries);
	return recovered;
}
