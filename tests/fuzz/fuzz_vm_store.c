/* fuzz_vm_store - libFuzzer target: the fd-store state record decoder
 * (daemon/vm_store.h). A record that decodes must encode again and decode to
 * the same entries. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vm_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_store_entry *entries = NULL, *again = NULL;
	size_t n = 0, n_again = 0, len = 0;
	uint8_t *buf = NULL;
	char err[256];

	if (vm_store_decode(data, size, &entries, &n, err, sizeof(err)) < 0)
		return 0;
	if (vm_store_encode(entries, n, &buf, &len) < 0)
		abort(); /* a decoded record must encode again */
	if (vm_store_decode(buf, len, &again, &n_again, err, sizeof(err)) < 0 || n_again != n)
		abort();
	free(again);
	free(buf);
	free(entries);
	return 0;
}
