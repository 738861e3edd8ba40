// lib/exp.h — exp_floats: expf over an array, in vector registers, with the bits of the C
// library's expf (glibc's, which the program's results were computed with).
// Part of sirt (one translation unit: sirt.c includes this file); it knows nothing of the model.
//
// Why: the softmaxes and GELU call expf for every element, and a call to the library's scalar
// expf costs more than the rest of those kernels together. A vector exp of our own that rounded
// differently would change every number the program computes (and every stored result); this one
// computes exactly what glibc's expf computes, so nothing changes but the speed.
//
// The method (glibc's, from Arm's optimized-routines; the constants below are the published
// ones): with N = 32, write x·N/ln2 = k + r, k an integer and |r| <= 1/2; then
//   exp(x) = 2^(k/N) · 2^(r/N),  2^(k/N) = 2^floor(k/N) · 2^((k mod N)/N)  (a table of N values),
//   2^(r/N) ≈ 1 + c2·r + c1·r² + c0·r³,
// all in double precision, rounded to float once at the end. Rounding k uses the 1.5·2^52
// trick: adding it to z leaves k in the low bits of the double. With FMA instructions, glibc's
// expf computes r = z − k with one rounding (a fused multiply-add from x), and so does this.
// Arguments with |x| >= 88 (glibc's own threshold for its special cases: overflow, deep
// underflow, infinities, NaN) go to the library's expf, one by one.
// The condition: glibc picks its FMA build of expf at run time (a CPU with FMA and AVX2), this
// file at compile time (__FMA__); they agree when the program is compiled for the CPU it runs
// on, as the Makefile's -march=native does. Compiled without FMA and run on a CPU with it, 2 of
// the 2^32 arguments round differently (tests/test_core.c checks both, and millions more).

#ifndef SIRT_LIB_EXP_H
#define SIRT_LIB_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

// exp_table[i] = the bits of 2^(i/32) as a double, minus i << 47, so that adding k << 47
// (k's low 5 bits being i) puts floor(k/32) into the exponent.
static const uint64_t exp_table[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540};

// GELU, SwiGLU and classifier_forward hand exp_floats this many elements at a time (a buffer on
// their stack); attention's softmax and classifier_backward pass whole rows, in place.
enum { EXP_BLOCK = 256 };

// exp(x) for |x| < 88: no branches and no calls, so that a loop over an array vectorizes.
static inline float exp_in_range(float x) {
    const double inv_ln2_n = 0x1.71547652b82fep+0 * 32, shift = 0x1.8p+52;
    const double c0 = 0x1.c6af84b912394p-5 / (32.0 * 32.0 * 32.0);
    const double c1 = 0x1.ebfce50fac4f3p-3 / (32.0 * 32.0), c2 = 0x1.62e42ff0c52d6p-1 / 32.0;
    double z = inv_ln2_n * (double)x;
    double kd = z + shift; // k in the low bits
    uint64_t ki;
    memcpy(&ki, &kd, sizeof ki);
    kd -= shift;
#ifdef __FMA__
    double r = fma(inv_ln2_n, (double)x, -kd); // fused, as the library's FMA build computes it
#else
    double r = z - kd;
#endif
    uint64_t bits = exp_table[ki % 32] + (ki << 47);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    double p = c0 * r + c1, r2 = r * r, y = c2 * r + 1.0;
    y = p * r2 + y;
    return (float)(y * scale);
}

// out[i] = expf(in[i]) for i < n; out may be in. 64 at a time: when all of a chunk lies in
// (-88, 88), one vector pass; otherwise (rare) element by element, the library's expf taking the
// arguments outside.
static void exp_floats(float *out, const float *in, size_t n) {
    for (size_t i0 = 0; i0 < n; i0 += 64) {
        const size_t m = n - i0 < 64 ? n - i0 : 64;
        const float *x = in + i0;
        float *y = out + i0;
        int outside = 0;
        for (size_t i = 0; i < m; i++) outside |= !(fabsf(x[i]) < 88.0f); // NaN counts as outside
        if (!outside) {
            for (size_t i = 0; i < m; i++) y[i] = exp_in_range(x[i]);
        } else {
            for (size_t i = 0; i < m; i++) y[i] = fabsf(x[i]) < 88.0f ? exp_in_range(x[i]) : expf(x[i]);
        }
    }
}

#endif // SIRT_LIB_EXP_H
