/* backend.c - picks the counter backend a VM's KVM offers, in the order of
 * DESIGN.md section 4, and says what is missing when none fits. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "macro.h"

/* DESIGN.md section 4: the KVM_GET/SET_SYSTEM_COUNTER_STATE patch first,
 * then upstream x86, then arm64. Only kvm_x86 is built so far; the others
 * slot in here in that order. */
static const struct backend_ops *const backends[] = {
	&backend_kvm_x86,
};

const struct backend_ops *backend_select(const struct kvm_vm_fds *vm, char *detail,
					 size_t detail_size)
{
	char reason[BACKEND_DETAIL_MAX];
	size_t used = 0;
	int n;

	if (detail && detail_size > 0)
		detail[0] = '\0';

	for (size_t i = 0; i < ELEMENTSOF(backends); i++) {
		const char *name = backend_kind_to_string(backends[i]->kind);

		reason[0] = '\0';
		if (backends[i]->detect(vm, reason, sizeof(reason)) == 0)
			return backends[i];
		if (!detail || detail_size == 0 || used >= detail_size)
			continue;
		/* "no counter backend: kvm-x86: <why>[; <next>: <why>]" */
		n = snprintf(detail + used, detail_size - used, "%s%s: %s",
			     used == 0 ? "no counter backend for this VM: " : "; ",
			     name ? name : "?", reason[0] ? reason : "not available");
		if (n > 0)
			used += (size_t)n;
	}
	return NULL;
}
