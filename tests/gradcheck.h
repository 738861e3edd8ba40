// tests/gradcheck.h — gradient checking by central differences, shared by the test programs.
// Include after sirt.c and check.h.
#ifndef SIRT_TESTS_GRADCHECK_H
#define SIRT_TESTS_GRADCHECK_H

// Gradient checking by central differences. f is recomputed in float32 from scratch at each
// evaluation, so its values carry rounding noise of about 1e-7 relative; a difference quotient
// divides that noise by 2·eps. Two checks keep the signal well above the noise:
//   - directional: along u = grad/|grad| and two random unit directions,
//     (f(x + eps·u) − f(x − eps·u)) / 2eps must equal grad·u within tol·|grad|. A step of
//     eps spread over the whole tensor changes every entry a little, so the second-order
//     error is negligible and the quotient's noise is ~1e-7·|f| / eps.
//   - element-wise: at the entries of largest |grad| and at random entries, the quotient for
//     that entry alone must match within tol_elem · max|grad|.
typedef double (*ObjectiveFn)(void *ctx);

static void random_unit(float *u, size_t n, Rng *rng) {
    double norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        u[i] = rng_normal(rng);
        norm += (double)u[i] * u[i];
    }
    for (size_t i = 0; i < n; i++) u[i] /= sqrt(norm);
}

static double difference_quotient(ObjectiveFn f, void *ctx, float *x, const float *u, size_t n,
                                  double eps) {
    float *saved = xmalloc(n * sizeof(float));
    memcpy(saved, x, n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = saved[i] + eps * u[i];
    double plus = f(ctx);
    for (size_t i = 0; i < n; i++) x[i] = saved[i] - eps * u[i];
    double minus = f(ctx);
    memcpy(x, saved, n * sizeof(float));
    free(saved);
    return (plus - minus) / (2 * eps);
}

typedef struct {
    double eps_dir, tol_dir, eps_elem, tol_elem;
} GradTolerance;

static void check_gradient(const char *name, ObjectiveFn f, void *ctx, float *x,
                           const float *grad, size_t n, GradTolerance tol, Rng *rng) {
    double norm = 0.0, max_abs = 0.0;
    for (size_t i = 0; i < n; i++) {
        norm += (double)grad[i] * grad[i];
        if (fabs(grad[i]) > max_abs) max_abs = fabs(grad[i]);
    }
    norm = sqrt(norm);
    if (norm == 0.0) {
        check(0, "%s: gradient is exactly zero (nothing to check)", name);
        return;
    }
    float *u = xmalloc(n * sizeof(float));
    double dir_err = 0.0;
    for (int d = 0; d < 3; d++) {
        if (d == 0)
            for (size_t i = 0; i < n; i++) u[i] = grad[i] / norm;
        else random_unit(u, n, rng);
        double analytic = 0.0;
        for (size_t i = 0; i < n; i++) analytic += (double)grad[i] * u[i];
        double numeric = difference_quotient(f, ctx, x, u, n, tol.eps_dir);
        double err = fabs(numeric - analytic) / norm;
        if (err > dir_err) dir_err = err;
    }
    // element-wise: the 4 largest |grad| entries and 4 random ones
    memset(u, 0, n * sizeof(float));
    double elem_err = 0.0;
    size_t picked[4] = {0};
    for (int e = 0; e < 8 && (size_t)e < n; e++) {
        size_t idx = 0;
        if (e < 4) { // the e-th largest: largest among those below the previous picks
            double bound = INFINITY, best = -1.0;
            if (e > 0) bound = fabs(grad[picked[e - 1]]);
            for (size_t i = 0; i < n; i++) {
                double g = fabs(grad[i]);
                int taken = 0;
                for (int p = 0; p < e; p++) taken |= picked[p] == i;
                if (!taken && g <= bound && g > best) best = g, idx = i;
            }
            picked[e] = idx;
        } else idx = rng_u32(rng) % n;
        u[idx] = 1.0f;
        double numeric = difference_quotient(f, ctx, x, u, n, tol.eps_elem);
        u[idx] = 0.0f;
        double err = fabs(numeric - grad[idx]) / max_abs;
        if (err > elem_err) elem_err = err;
    }
    free(u);
    check(dir_err < tol.tol_dir && elem_err < tol.tol_elem,
          "%s: |grad| %.3g, directional error %.1e (tol %.0e), element error %.1e (tol %.0e)",
          name, norm, dir_err, tol.tol_dir, elem_err, tol.tol_elem);
}

#endif
