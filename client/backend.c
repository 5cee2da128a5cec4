/* backend.c - picks the counter backend a VM's KVM offers, in the order of
 * DESIGN.md section 4 or the operator's, and says what is missing when none
 * fits. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "macro.h"

/* DESIGN.md section 4: the KVM_GET/SET_SYSTEM_COUNTER_STATE patch first,
 * then upstream x86. arm64 (KVM_ARM_SET_COUNTER_OFFSET) cannot run on this
 * project's x86 machines and is not built. */
static const struct backend_ops *const backends[] = {
	&backend_kvm_syscounter,
	&backend_kvm_x86,
};

const struct backend_ops *backend_by_kind(enum backend_kind kind)
{
	for (size_t i = 0; i < ELEMENTSOF(backends); i++)
		if (backends[i]->kind == kind)
			return backends[i];
	return NULL;
}

/* "no counter backend for this VM: kvm-syscounter: <why>; kvm-x86: <why>" */
static void add_reason(char *detail, size_t detail_size, size_t *used, enum backend_kind kind,
		       const char *reason)
{
	const char *name = backend_kind_to_string(kind);
	int n;

	if (!detail || detail_size == 0 || *used >= detail_size)
		return;
	n = snprintf(detail + *used, detail_size - *used, "%s%s: %s",
		     *used == 0 ? "no counter backend for this VM: " : "; ", name ? name : "?",
		     reason[0] ? reason : "not available");
	if (n > 0)
		*used += (size_t)n;
}

const struct backend_ops *backend_select_from(const struct kvm_vm_fds *vm,
					      const enum backend_kind *allowed, size_t n_allowed,
					      char *detail, size_t detail_size)
{
	char reason[BACKEND_DETAIL_MAX];
	size_t used = 0;
	size_t n = n_allowed > 0 ? n_allowed : ELEMENTSOF(backends);

	if (detail && detail_size > 0)
		detail[0] = '\0';

	for (size_t i = 0; i < n; i++) {
		const struct backend_ops *b =
			n_allowed > 0 ? backend_by_kind(allowed[i]) : backends[i];
		enum backend_kind kind = n_allowed > 0 ? allowed[i] : b->kind;

		if (!b) {
			add_reason(detail, detail_size, &used, kind,
				   "not built into this libvcounter");
			continue;
		}
		reason[0] = '\0';
		if (b->detect(vm, reason, sizeof(reason)) == 0)
			return b;
		add_reason(detail, detail_size, &used, kind, reason);
	}
	return NULL;
}

const struct backend_ops *backend_select(const struct kvm_vm_fds *vm, char *detail,
					 size_t detail_size)
{
	return backend_select_from(vm, NULL, 0, detail, detail_size);
}
