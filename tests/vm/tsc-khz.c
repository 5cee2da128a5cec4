/* tsc-khz - prints this machine's TSC rate in kHz, measured against
 * CLOCK_MONOTONIC_RAW over 3 x 100 ms (the median). run-in-vm passes it to a
 * kernel-patch/ guest as tsc_early_khz=: under QEMU TCG the guest's TSC is the
 * host's, and a kernel with KVM built in initialises KVM with the early
 * calibration, which is ~1000 ppm off under TCG, so every vCPU would report a
 * TSC rate it does not run at. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

#include "../../common/clockns.h"

/* The narrowest of a few (tsc, ns, tsc) brackets: the midpoint's pairing. */
static void pair(uint64_t *ret_tsc, uint64_t *ret_ns)
{
	uint64_t best = UINT64_MAX;

	for (int i = 0; i < 32; i++) {
		uint64_t t0 = __rdtsc(), ns = clock_ns(CLOCK_MONOTONIC_RAW), t1 = __rdtsc();

		if (t1 - t0 < best) {
			best = t1 - t0;
			*ret_tsc = t0 + (t1 - t0) / 2;
			*ret_ns = ns;
		}
	}
}

int main(void)
{
	uint64_t khz[3];

	for (int i = 0; i < 3; i++) {
		struct timespec nap = { 0, 100000000 };
		uint64_t tsc0, ns0, tsc1, ns1;

		pair(&tsc0, &ns0);
		nanosleep(&nap, NULL);
		pair(&tsc1, &ns1);
		khz[i] = ((tsc1 - tsc0) * 1000000 + (ns1 - ns0) / 2) / (ns1 - ns0);
	}
	for (int i = 0; i < 2; i++)
		for (int j = i + 1; j < 3; j++)
			if (khz[j] < khz[i]) {
				uint64_t t = khz[i];

				khz[i] = khz[j];
				khz[j] = t;
			}
	printf("%" PRIu64 "\n", khz[1]);
	return 0;
}
