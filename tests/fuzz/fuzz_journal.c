/* fuzz_journal - libFuzzer target: the session journal's record decoder
 * (daemon/journal.h), which reads files a crash, a full disk or anyone with
 * access to the state directory may have left. A record that decodes must
 * encode again, byte for byte the same input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct journal_entry e, again;
	uint8_t *buf = NULL;
	size_t len = 0;
	char err[320];

	if (journal_decode(data, size, &e, err, sizeof(err)) < 0)
		return 0;
	if (journal_encode(&e, &buf, &len) < 0)
		abort(); /* a decoded record must encode again */
	if (journal_decode(buf, len, &again, err, sizeof(err)) < 0)
		abort();
	if (again.sequence != e.sequence || again.s.step != e.s.step ||
	    again.s.generation != e.s.generation ||
	    strcmp(again.s.migration_id, e.s.migration_id) != 0 ||
	    again.s.prepared.n_vcpus != e.s.prepared.n_vcpus)
		abort();
	free(buf);
	return 0;
}
