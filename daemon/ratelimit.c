/* ratelimit.c - see ratelimit.h. */
#include "ratelimit.h"

bool ratelimit_pass(struct ratelimit *rl, uint64_t now_ns, uint64_t *ret_suppressed)
{
	bool pass;

	if (rl->interval_ns == 0 || rl->burst == 0) {
		pass = true;
	} else {
		/* A new interval: at the first event, or once the last one is
		 * over (a clock that went back starts one too). */
		if (!rl->started || now_ns < rl->begin_ns ||
		    now_ns - rl->begin_ns >= rl->interval_ns) {
			rl->started = true;
			rl->begin_ns = now_ns;
			rl->n = 0;
		}
		pass = rl->n < rl->burst;
		if (pass)
			rl->n++;
	}
	if (!pass) {
		rl->suppressed++;
		if (ret_suppressed)
			*ret_suppressed = 0;
		return false;
	}
	if (ret_suppressed)
		*ret_suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}
