/* vm_store.c - encode and decode the state record kept in systemd's fd
 * store (vm_store.h has the layout). Everything read is bounds-checked
 * before use: the record may be truncated or corrupted. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "macro.h"
#include "vm_store.h"
#include "wire.h"

uint32_t vm_store_crc32(const uint8_t *data, size_t len)
{
	uint32_t crc = 0xffffffffu;

	/* Bitwise CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320): the
	 * record is small and written once per registration. */
	for (size_t i = 0; i < len; i++) {
		crc ^= data[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1u));
	}
	return ~crc;
}

bool vm_store_fd_name_is_valid(const char *name)
{
	size_t n;

	if (!name || strncmp(name, "vm", 2) != 0)
		return false;
	n = strlen(name + 2);
	if (n == 0 || n > VM_STORE_FD_NAME_MAX - 2)
		return false;
	return strspn(name + 2, "0123456789") == n;
}

struct writer {
	uint8_t *buf;
	size_t len, cap;
	int error;
};

static void put(struct writer *w, const void *data, size_t n)
{
	if (w->error)
		return;
	if (w->len + n > VM_STORE_MAX_BYTES) {
		w->error = -E2BIG;
		return;
	}
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 1024;
		uint8_t *p;

		while (cap < w->len + n)
			cap *= 2;
		p = realloc(w->buf, cap);
		if (!p) {
			w->error = -ENOMEM;
			return;
		}
		w->buf = p;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, data, n);
	w->len += n;
}

static void put_u8(struct writer *w, uint8_t v)
{
	put(w, &v, 1);
}

static void put_u32(struct writer *w, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

	put(w, b, sizeof(b));
}

static void put_u64(struct writer *w, uint64_t v)
{
	put_u32(w, (uint32_t)v);
	put_u32(w, (uint32_t)(v >> 32));
}

static void put_bytes(struct writer *w, const void *data, size_t n)
{
	put_u32(w, (uint32_t)n);
	put(w, data, n);
}

static void put_str(struct writer *w, const char *s)
{
	put_bytes(w, s, strlen(s));
}

static void store_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static bool entry_is_valid(const struct vm_store_entry *e)
{
	return vm_id_is_valid(e->vm_id) && vm_store_fd_name_is_valid(e->fd_name) &&
	       (e->role == VM_ROLE_SOURCE || e->role == VM_ROLE_TARGET) && e->n_vcpus >= 1 &&
	       e->n_vcpus <= VC_MAX_VCPUS && (int)e->backend >= 0 &&
	       e->backend < _BACKEND_KIND_MAX && (int)e->arch >= 0 && e->arch < _COUNTER_ARCH_MAX &&
	       (!e->has_state || e->state.n_vcpus <= VC_MAX_VCPUS);
}

int vm_store_encode(const struct vm_store_entry *entries, size_t n, uint8_t **ret_buf,
		    size_t *ret_len)
{
	struct writer w = { 0 };
	uint8_t header[VM_STORE_HEADER_BYTES] = { 0 };

	/* Nothing vm_store_decode would refuse. */
	if (n > VM_STORE_MAX_VMS)
		return -E2BIG;
	put(&w, header, sizeof(header));
	put_u32(&w, (uint32_t)n);
	for (size_t i = 0; i < n && !w.error; i++) {
		const struct vm_store_entry *e = &entries[i];

		if (!entry_is_valid(e)) {
			w.error = -EINVAL;
			break;
		}
		put_str(&w, e->vm_id);
		put_str(&w, e->fd_name);
		put_u8(&w, (uint8_t)e->role);
		put_u32(&w, e->n_vcpus);
		put_u32(&w, (uint32_t)e->pid);
		put_u32(&w, (uint32_t)e->uid);
		put_u8(&w, (uint8_t)e->backend);
		put_u8(&w, (uint8_t)e->arch);
		put_u8(&w, e->offset_control);
		put_str(&w, e->probe_detail);
		put_u32(&w, e->guest_tsc_khz);
		put_u64(&w, e->tsc_scaling_ratio);
		put_u32(&w, e->tsc_scaling_frac_bits);
		put_u8(&w, e->has_state);
		if (e->has_state) {
			struct wire_counter_state_pb pb;
			size_t len;
			uint8_t *packed;

			wire_counter_state_to_pb(&e->state, &pb);
			len = vcounter__v1__counter_state__get_packed_size(&pb.state);
			packed = malloc(len ? len : 1);
			if (!packed) {
				w.error = -ENOMEM;
				break;
			}
			vcounter__v1__counter_state__pack(&pb.state, packed);
			put_bytes(&w, packed, len);
			free(packed);
		}
		put_u8(&w, e->arrived);
	}
	if (w.error) {
		free(w.buf);
		return w.error;
	}
	memcpy(w.buf, VM_STORE_MAGIC, 4);
	store_u32(w.buf + 4, VM_STORE_VERSION);
	store_u32(w.buf + 8, (uint32_t)w.len);
	store_u32(w.buf + 12,
		  vm_store_crc32(w.buf + VM_STORE_HEADER_BYTES, w.len - VM_STORE_HEADER_BYTES));
	*ret_buf = w.buf;
	*ret_len = w.len;
	return 0;
}

struct reader {
	const uint8_t *p;
	size_t left;
	bool short_read;
};

static const uint8_t *take(struct reader *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->short_read || n > r->left) {
		r->short_read = true;
		return NULL;
	}
	r->p += n;
	r->left -= n;
	return p;
}

static uint32_t load_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint8_t get_u8(struct reader *r)
{
	const uint8_t *p = take(r, 1);

	return p ? p[0] : 0;
}

static uint32_t get_u32(struct reader *r)
{
	const uint8_t *p = take(r, 4);

	return p ? load_u32(p) : 0;
}

static uint64_t get_u64(struct reader *r)
{
	uint64_t lo = get_u32(r);

	return lo | (uint64_t)get_u32(r) << 32;
}

/* A string of at most max bytes into buf (size max + 1); false if longer. */
static bool get_str(struct reader *r, char *buf, size_t max)
{
	uint32_t n = get_u32(r);
	const uint8_t *p;

	if (r->short_read || n > max)
		return false;
	p = take(r, n);
	if (!p)
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	return memchr(buf, '\0', n) == NULL;
}

static int decode_entry(struct reader *r, uint32_t version, struct vm_store_entry *e, char *err,
			size_t err_size)
{
	if (!get_str(r, e->vm_id, VC_VM_ID_MAX) || !get_str(r, e->fd_name, VM_STORE_FD_NAME_MAX))
		return errmsg(err, err_size, -EBADMSG, "VM id or fd name malformed");
	e->role = (enum vm_role)get_u8(r);
	e->n_vcpus = get_u32(r);
	e->pid = (pid_t)get_u32(r);
	e->uid = (uid_t)get_u32(r);
	e->backend = (enum backend_kind)get_u8(r);
	e->arch = (enum counter_arch)get_u8(r);
	e->offset_control = get_u8(r) != 0;
	if (!get_str(r, e->probe_detail, sizeof(e->probe_detail) - 1))
		return errmsg(err, err_size, -EBADMSG, "vm=%s: probe detail malformed", e->vm_id);
	e->guest_tsc_khz = get_u32(r);
	e->tsc_scaling_ratio = get_u64(r);
	e->tsc_scaling_frac_bits = get_u32(r);
	e->has_state = get_u8(r) != 0;
	if (e->has_state) {
		uint32_t len = get_u32(r);
		const uint8_t *p = take(r, len);
		Vcounter__V1__CounterState *pb;
		char why[256] = "";
		int q;

		if (!p)
			return errmsg(err, err_size, -EBADMSG, "vm=%s: truncated counter state",
				      e->vm_id);
		pb = vcounter__v1__counter_state__unpack(NULL, len, p);
		if (!pb)
			return errmsg(err, err_size, -EBADMSG,
				      "vm=%s: counter state does not unpack", e->vm_id);
		q = wire_counter_state_from_pb(pb, &e->state, why, sizeof(why));
		vcounter__v1__counter_state__free_unpacked(pb, NULL);
		if (q < 0)
			return errmsg(err, err_size, -EBADMSG, "vm=%s: counter state invalid: %s",
				      e->vm_id, why);
	}
	e->arrived = version >= 2 && get_u8(r) != 0;
	if (r->short_read)
		return errmsg(err, err_size, -EBADMSG, "truncated");
	if (!entry_is_valid(e) || e->pid <= 0)
		return errmsg(err, err_size, -EBADMSG, "vm=%s: a field is out of range", e->vm_id);
	return 0;
}

int vm_store_decode(const uint8_t *buf, size_t len, struct vm_store_entry **ret_entries,
		    size_t *ret_n, char *err, size_t err_size)
{
	_cleanup_free_ struct vm_store_entry *entries = NULL;
	struct reader r;
	uint32_t version, total, crc, n;
	int q;

	if (len < VM_STORE_HEADER_BYTES + 4)
		return errmsg(err, err_size, -EBADMSG, "%zu bytes: shorter than the header", len);
	if (memcmp(buf, VM_STORE_MAGIC, 4) != 0)
		return errmsg(err, err_size, -EBADMSG, "bad magic");
	version = load_u32(buf + 4);
	if (version < VM_STORE_VERSION_MIN || version > VM_STORE_VERSION)
		return errmsg(err, err_size, -EPROTONOSUPPORT,
			      "version %u, this vcounterd reads %u to %u", version,
			      VM_STORE_VERSION_MIN, VM_STORE_VERSION);
	total = load_u32(buf + 8);
	if (total > VM_STORE_MAX_BYTES)
		return errmsg(err, err_size, -E2BIG, "length %u over the maximum", total);
	if (total != len)
		return errmsg(err, err_size, -EBADMSG, "length field %u, record has %zu bytes",
			      total, len);
	crc = vm_store_crc32(buf + VM_STORE_HEADER_BYTES, len - VM_STORE_HEADER_BYTES);
	if (crc != load_u32(buf + 12))
		return errmsg(err, err_size, -EBADMSG, "checksum mismatch");
	r = (struct reader){ .p = buf + VM_STORE_HEADER_BYTES,
			     .left = len - VM_STORE_HEADER_BYTES };
	n = get_u32(&r);
	if (n > VM_STORE_MAX_VMS)
		return errmsg(err, err_size, -EBADMSG, "%u VMs, more than a daemon holds", n);
	if (n > 0) {
		entries = calloc(n, sizeof(*entries));
		if (!entries)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < n; i++) {
		q = decode_entry(&r, version, &entries[i], err, err_size);
		if (q < 0)
			return q;
		for (uint32_t j = 0; j < i; j++)
			if (strcmp(entries[j].vm_id, entries[i].vm_id) == 0 ||
			    strcmp(entries[j].fd_name, entries[i].fd_name) == 0)
				return errmsg(err, err_size, -EBADMSG,
					      "vm=%s: VM id or fd name twice", entries[i].vm_id);
	}
	if (r.left != 0)
		return errmsg(err, err_size, -EBADMSG, "%zu bytes after the last VM", r.left);
	*ret_entries = TAKE_PTR(entries);
	*ret_n = n;
	return 0;
}
