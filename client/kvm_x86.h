/* kvm_x86.h - the upstream x86 backend (backend_kvm_x86, in backend.h) and
 * the two vCPU ioctls everything that handles TSC offsets needs:
 * KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET, Documentation/virt/kvm/devices/
 * vcpu.rst section 4.1. vCPU ioctls wait for the vCPU mutex KVM_RUN holds:
 * call them on vCPUs that are not running. */
#pragma once

#include <stdint.h>

int kvm_x86_get_tsc_offset(int vcpu_fd, uint64_t *ret_offset);
int kvm_x86_set_tsc_offset(int vcpu_fd, uint64_t offset);
