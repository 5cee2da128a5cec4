/* vm_store.h - the record vcounterd keeps next to its VMs' fds in systemd's
 * file descriptor store (sd_pid_notify_with_fds(3), FDSTORE=1), so that a
 * restart finds its registered VMs again. Pure codec: no I/O.
 *
 * Layout, integers little-endian: magic "VCDS", u32 version, u32 total
 * length (header included), u32 CRC-32 (IEEE, zlib's) of the bytes after the
 * header, u32 VM count, then per VM: string vm_id, string fd_name, u8 role,
 * u32 n_vcpus, i32 pid, u32 uid, u8 backend, u8 arch, u8 offset_control,
 * string probe_detail, u32 guest_tsc_khz, u64 tsc_scaling_ratio, u32
 * frac_bits, u8 has_state, then (if has_state) a string holding the packed
 * protobuf CounterState registered_state, then (version 2) u8 arrived. A
 * string is u32 length + bytes. Version 1 records, without arrived, are
 * read as VMs that did not arrive: a daemon upgraded by a restart keeps its
 * VMs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "counter_state.h"

#define VM_STORE_MAGIC	      "VCDS"
#define VM_STORE_VERSION      2
#define VM_STORE_VERSION_MIN  1 /* the oldest record this daemon reads */
#define VM_STORE_HEADER_BYTES 16
#define VM_STORE_FD_NAME_MAX  15 /* "vm" + up to 13 digits */
/* VMs in one record: VCD_MAX_VMS, the most a daemon holds (fdstore.c checks
 * that the two agree). */
#define VM_STORE_MAX_VMS      4096
/* The largest record: every VM with a full probe detail and 1024 offsets. */
#define VM_STORE_MAX_BYTES    (64u << 20)

struct vm_store_entry {
	char vm_id[VC_VM_ID_MAX + 1];
	char fd_name[VM_STORE_FD_NAME_MAX + 1];
	enum vm_role role;
	uint32_t n_vcpus;
	pid_t pid;
	uid_t uid;
	enum backend_kind backend;
	enum counter_arch arch;
	bool offset_control;
	char probe_detail[256];
	uint32_t guest_tsc_khz;
	uint64_t tsc_scaling_ratio;
	uint32_t tsc_scaling_frac_bits;
	bool has_state;
	struct counter_state state; /* registered_state, when has_state */
	bool arrived;		    /* a target that may leave as a source (vcd.h) */
};

uint32_t vm_store_crc32(const uint8_t *data, size_t len);

/* Encode n entries into a malloc'd buffer: 0, or -EINVAL (an entry that
 * would not decode: bad id, fd name, enum), -E2BIG (more than
 * VM_STORE_MAX_VMS, or over VM_STORE_MAX_BYTES), -ENOMEM. */
int vm_store_encode(const struct vm_store_entry *entries, size_t n, uint8_t **ret_buf,
		    size_t *ret_len);

/* Decode and validate a record: 0 with a malloc'd array (NULL when n is 0),
 * or -EBADMSG (truncated, bad magic, length or checksum, a field out of
 * range; err says which), -EPROTONOSUPPORT (a version outside
 * VM_STORE_VERSION_MIN..VM_STORE_VERSION), -E2BIG,
 * -ENOMEM. */
int vm_store_decode(const uint8_t *buf, size_t len, struct vm_store_entry **ret_entries,
		    size_t *ret_n, char *err, size_t err_size);

/* Is name one of ours: "vm" followed by 1-13 decimal digits? */
bool vm_store_fd_name_is_valid(const char *name);
