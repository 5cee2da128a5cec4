#!/usr/bin/env python3
# gen_counter_math_vectors.py - expected values for tests/unit/test_counter_math.c,
# computed with Python's exact integers and fractions (no 64/128-bit limits).
# Run: python3 tests/unit/gen_counter_math_vectors.py  and paste the output
# between the "generated" markers in test_counter_math.c.
from fractions import Fraction

ERANGE = 34
M64 = 1 << 64
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def scale(tsc, ratio, frac):
    # kvm_scale_tsc: mul_u64_u64_shr keeps the low 64 bits; ratio 0 = identity.
    if ratio == 0:
        return tsc
    return ((tsc * ratio) >> frac) % M64


def cycles(ns, khz):
    # Round half away from zero, on the exact rational ns * khz / 10^6.
    x = Fraction(ns * khz, 10**6)
    mag = abs(x)
    r = int(mag)
    if mag - r >= Fraction(1, 2):
        r += 1
    r = -r if x < 0 else r
    return (0, r) if I64_MIN <= r <= I64_MAX else (-ERANGE, 0)


def s64(v):
    v %= M64
    return v - M64 if v >= 1 << 63 else v


def plan(src_tai, src_tsc, src_ratio, src_frac, dst_tai, dst_tsc, dst_ratio, dst_frac, khz, ofs):
    # Documentation/virt/kvm/devices/vcpu.rst section 4, host-anchored:
    # guest TSC at the target anchor = guest TSC at the source anchor + cycles.
    # A target clock behind the source's holds the guest's counter: elapsed 0, the
    # shortfall reported as clamped.
    elapsed = dst_tai - src_tai
    if not I64_MIN <= elapsed <= I64_MAX:
        return (-ERANGE, 0, 0, 0, 0)
    clamped = -elapsed if elapsed < 0 else 0
    elapsed += clamped
    rc, cyc = cycles(elapsed, khz)
    if rc:
        return (rc, 0, 0, 0, 0)
    guest_at_src = scale(src_tsc, src_ratio, src_frac) + ofs
    ofs_dst = (guest_at_src + cyc - scale(dst_tsc, dst_ratio, dst_frac)) % M64
    return (0, elapsed, clamped, ofs_dst, s64(ofs_dst - ofs))


def u(v):
    return "UINT64_C(%d)" % v


def i(v):
    return "INT64_MIN" if v == I64_MIN else "INT64_C(%d)" % v


GHZ3_YEAR3 = 3 * 10**9 * 3 * 365 * 86400       # 3 GHz host up 3 years
GHZ4_DAYS100 = 4 * 10**9 * 100 * 86400         # 4 GHz host up 100 days
TAI_2024 = 1717171717 * 10**9 + 37 * 10**9     # mid-2024 in TAI ns
INTEL_3_OF_4 = (3 << 48) // 4                  # 4 GHz host, 3 GHz guest
AMD_2X = 2 << 32

scale_cases = [
    ("ratio 0 is identity", GHZ3_YEAR3, 0, 48),
    ("Intel ratio 1.0", GHZ3_YEAR3, 1 << 48, 48),
    ("Intel ratio 2.0", GHZ3_YEAR3, 2 << 48, 48),
    ("Intel ratio 3/4", GHZ4_DAYS100, INTEL_3_OF_4, 48),
    ("Intel 2445406/3000000 truncates", 299792458123456789, (2445406 << 48) // 3000000, 48),
    ("AMD ratio 1.0", GHZ4_DAYS100, 1 << 32, 32),
    ("AMD ratio 2.0", GHZ4_DAYS100, AMD_2X, 32),
    ("AMD ratio 0.5 odd tsc", 2 * GHZ4_DAYS100 + 1, 1 << 31, 32),
    ("product above 2^64 keeps low bits", M64 - 1, (1 << 48) + 1, 48),
    ("AMD 2x of max wraps", M64 - 1, AMD_2X, 32),
    ("frac 0 multiplies", 0x123456789ABCDEF, 3, 0),
    ("frac 63", M64 - 1, M64 - 1, 63),
]

cycles_cases = [
    ("zero", 0, 3000000),
    ("1 us at 3 GHz", 1000, 3000000),
    ("1 us at 2445406 kHz", 1000, 2445406),
    ("-1 us at 2445406 kHz", -1000, 2445406),
    ("1 ns at 3999999 kHz", 1, 3999999),
    ("0.5 rounds to 1", 1000, 500),
    ("-0.5 rounds to -1", -1000, 500),
    ("1.5 rounds to 2", 3000, 500),
    ("-1.5 rounds to -2", -3000, 500),
    ("0.499 rounds to 0", 1000, 499),
    ("-0.499 rounds to 0", -1000, 499),
    ("0.501 rounds to 1", 1000, 501),
    ("2.4999995 rounds to 2", 1, 2499999),
    ("half at 2445406 kHz", None, 2445406),
    ("negative half at 2445406 kHz", None, 2445406),
    ("half at 3999999 kHz", None, 3999999),
    ("150 ms at 2445406 kHz", 150 * 10**6, 2445406),
    ("3 days at 3999999 kHz", 3 * 86400 * 10**9, 3999999),
    ("-3 days at 3999999 kHz", -3 * 86400 * 10**9, 3999999),
    ("50 years at 4 GHz", 50 * 365 * 86400 * 10**9, 4000000),
    ("INT64_MAX at 1 GHz", I64_MAX, 1000000),
    ("INT64_MIN at 1 GHz", I64_MIN, 1000000),
    ("INT64_MAX at 1000001 kHz overflows", I64_MAX, 1000001),
    ("INT64_MIN at 1000001 kHz overflows", I64_MIN, 1000001),
    ("INT64_MAX at 3 GHz overflows", I64_MAX, 3000000),
    ("-100 years at 3999999 kHz overflows", -100 * 365 * 86400 * 10**9, 3999999),
    ("max kHz, 1 s", 10**9, (1 << 32) - 1),
    ("max kHz, INT64_MIN", I64_MIN, (1 << 32) - 1),
    ("largest ns at 3999999 kHz", "max", 3999999),
    ("one ns more at 3999999 kHz overflows", "max+1", 3999999),
    ("most negative ns at 3999999 kHz", "min", 3999999),
    ("one ns less at 3999999 kHz overflows", "min-1", 3999999),
]


def boundary_ns(which, khz):
    # Largest |ns| whose rounded cycles still fit: |ns| * khz + 500000 must stay
    # below (limit + 1) * 10^6, limit being 2^63 - 1 (positive) or 2^63.
    limit = I64_MAX if which.startswith("max") else -I64_MIN
    mag = ((limit + 1) * 10**6 - 500000 - 1) // khz
    mag += 1 if which.endswith("+1") or which.endswith("-1") else 0
    return mag if which.startswith("max") else -mag


def half_ns(khz, sign):
    for ns in range(1, 10**7):
        if (ns * khz) % 10**6 == 500000:
            return sign * ns
    raise ValueError(khz)


plan_cases = [
    # name, src_tai, src_tsc, src_ratio, src_frac, dst_tai, dst_tsc, dst_ratio, dst_frac, khz, ofs
    ("3 GHz, 150 ms blackout, offset 0",
     TAI_2024, GHZ3_YEAR3, 0, 48, TAI_2024 + 150 * 10**6, 3 * 10**9 * 100 * 86400, 0, 48,
     3000000, 0),
    ("guest booted after host: negative offset",
     TAI_2024, GHZ3_YEAR3, 0, 48, TAI_2024 + 150 * 10**6, 3 * 10**9 * 100 * 86400, 0, 48,
     3000000, M64 - 3 * 10**9 * 86400),
    ("target clock 2 ms behind: held, 2 ms clamped",
     TAI_2024, 2445406000 * 86400 * 30, 0, 48, TAI_2024 - 2 * 10**6, 2445406000 * 86400 * 31,
     0, 48, 2445406, 12345),
    ("offset near 0 wraps below 0",
     TAI_2024, 1000, 0, 48, TAI_2024 + 1000, GHZ3_YEAR3, 0, 48, 3000000, 5),
    ("offset near 2^64 wraps above",
     TAI_2024, GHZ3_YEAR3, 0, 48, TAI_2024 + 3 * 86400 * 10**9, 1000, 0, 48, 3000000, M64 - 7),
    ("1 us elapsed at 3999999 kHz",
     TAI_2024, GHZ4_DAYS100, 0, 48, TAI_2024 + 1000, GHZ4_DAYS100 + 10**9, 0, 48, 3999999, 42),
    ("Intel: 3 GHz host to 4 GHz host scaled 3/4",
     TAI_2024, GHZ3_YEAR3, 0, 48, TAI_2024 + 2 * 10**9, GHZ4_DAYS100, INTEL_3_OF_4, 48,
     3000000, M64 - 10**12),
    ("AMD: 2x on both sides",
     TAI_2024, GHZ4_DAYS100 // 2, AMD_2X, 32, TAI_2024 + 86400 * 10**9, GHZ3_YEAR3 // 2, AMD_2X,
     32, 3999999, 999),
    ("Intel 2x source to AMD 1x target",
     TAI_2024, GHZ3_YEAR3 // 2, 2 << 48, 48, TAI_2024 + 10**9 // 3, GHZ3_YEAR3 + 7, 1 << 32,
     32, 3000000, 1 << 63),
    ("elapsed beyond int64",
     0, 1, 0, 48, 1 << 63, 1, 0, 48, 3000000, 0),
    ("elapsed cycles beyond int64",
     TAI_2024, 1, 0, 48, TAI_2024 + 3 * 10**18, 1, 0, 48, 3999999, 0),
    ("most negative elapsed: held",
     1 << 63, 1, 0, 48, 0, 1, 0, 48, 1000000, 0),
]


def main():
    print("static const struct scale_vector scale_vectors[] = {")
    for name, tsc, ratio, frac in scale_cases:
        print('\t{ "%s",\n\t  %s, %s, %d,\n\t  %s },' % (name, u(tsc), u(ratio), frac,
                                                         u(scale(tsc, ratio, frac))))
    print("};\n")

    print("static const struct cycles_vector cycles_vectors[] = {")
    for name, ns, khz in cycles_cases:
        if isinstance(ns, str):
            ns = boundary_ns(ns, khz)
        if ns is None:
            ns = half_ns(khz, -1 if name.startswith("negative") else 1)
        rc, cyc = cycles(ns, khz)
        print('\t{ "%s",\n\t  %s, %d, %s, %s },' % (name, i(ns), khz,
                                                      "-ERANGE" if rc else "0", i(cyc)))
    print("};\n")

    print("static const struct plan_vector plan_vectors[] = {")
    for c in plan_cases:
        name, args = c[0], c[1:]
        rc, elapsed, clamped, ofs_dst, delta = plan(*args)
        (src_tai, src_tsc, src_ratio, src_frac, dst_tai, dst_tsc, dst_ratio, dst_frac, khz,
         ofs) = args
        print('\t{ "%s",\n\t  %s, %s,\n\t  %s, %d,\n\t  %s, %s,\n\t  %s, %d,\n\t  %d, %s,\n'
              '\t  %s, %s, %s,\n\t  %s, %s },' % (
                  name, u(src_tai), u(src_tsc), u(src_ratio), src_frac,
                  u(dst_tai), u(dst_tsc), u(dst_ratio), dst_frac, khz, u(ofs),
                  "-ERANGE" if rc else "0", i(elapsed), u(clamped), u(ofs_dst), i(delta)))
    print("};")


if __name__ == "__main__":
    main()
