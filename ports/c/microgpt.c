/*
microgpt in C: a port of microgpt/atomic.py written from SPEC.md.

It trains the same tiny GPT (GPT-2 shape, RMSNorm, no biases, ReLU) on the lines of input.txt and
prints exactly what `python microgpt/atomic.py` prints: the header, one loss per step and 20
samples. Every float operation is the one atomic.py's Value graph performs, in the same order, and
the random stream is Python's own (MT19937, random(), gauss(), shuffle(), choices()), re-implemented
here, so the output is bit-identical: nothing is fed in from Python.

The backward pass is written by hand, layer by layer, in the style of llm.c: each layer has a
forward and a backward, with the shapes of its buffers in comments. Where a value receives gradient
from three or more places, the contributions are added in the order atomic.py's backward() adds
them (reverse topological order of its graph, SPEC.md section 8), because float addition is not
associative and the last bits matter for a bit-exact run.

Build and run:
    cc -O2 -o microgpt ports/c/microgpt.c -lm
    ./microgpt                 # reads input.txt, seed 42, 1000 steps, 20 samples
    ./microgpt -s 7 -n 50      # another seed, 50 steps (the learning rate decays over 50)
Only the run's lines go to stdout; errors go to stderr. C99 and libc only.
*/

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <math.h>
#include <errno.h>

// No fused multiply-add: a*b + c must round twice, as Python does. GCC contracts by default in its
// GNU dialect on targets with FMA (aarch64, or -march=native on x86-64); Clang honors the C99 pragma.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize ("fp-contract=off")
#endif

// ----------------------------------------------------------------------------------------------
// The model config (atomic.py's defaults). -D on the command line may change them for experiments.
#ifndef N_LAYER
#define N_LAYER 1
#endif
#ifndef N_EMBD
#define N_EMBD 16
#endif
#ifndef N_HEAD
#define N_HEAD 4
#endif
#ifndef BLOCK_SIZE
#define BLOCK_SIZE 16
#endif
#define C N_EMBD                  // width of the residual stream
#define HD (N_EMBD / N_HEAD)      // head_dim
#define FF (4 * N_EMBD)           // width of the MLP's hidden layer
#define T_MAX BLOCK_SIZE          // positions per document

#if N_EMBD % N_HEAD != 0
#error "N_EMBD must be divisible by N_HEAD"
#endif

static const double LEARNING_RATE = 0.01, BETA1 = 0.85, BETA2 = 0.99, EPS_ADAM = 1e-8;
static const double TEMPERATURE = 0.5;
static const int NUM_SAMPLES = 20;

// Python's `a ** b` on floats is the C library's py_pow(a, b). Compilers rewrite py_pow(x, 2.0) as x * x
// and py_pow(x, -1.0) as 1.0 / x, which is not always what pow returns (glibc's pow is not correctly
// rounded: about 1 call in 1200 differs in the last bit), so every ** goes through this pointer,
// which the compiler cannot see through.
static double (*volatile py_pow)(double, double) = pow;

static void fail(const char *msg, const char *detail) {
    fprintf(stderr, "microgpt: %s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) fail("out of memory", NULL);
    return p;
}

// ----------------------------------------------------------------------------------------------
// Python's `random`, as the reference uses it (SPEC.md section 4).
// MT19937 (Matsumoto and Nishimura's mt19937ar.c, as CPython's _randommodule.c has it).
#define MT_N 624
#define MT_M 397

typedef struct {
    uint32_t mt[MT_N];
    int mti;
    int has_gauss_next;   // Random.gauss() caches the second value of each pair
    double gauss_next;
} Random;

static void init_genrand(Random *r, uint32_t s) {
    r->mt[0] = s;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
}

static void init_by_array(Random *r, const uint32_t *key, size_t key_length) {
    init_genrand(r, 19650218u);
    size_t i = 1, j = 0;
    size_t k = MT_N > key_length ? MT_N : key_length;
    for (; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
        i++; j++;
        if (i >= MT_N) { r->mt[0] = r->mt[MT_N - 1]; i = 1; }
        if (j >= key_length) j = 0;
    }
    for (k = MT_N - 1; k; k--) {
        r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
        i++;
        if (i >= MT_N) { r->mt[0] = r->mt[MT_N - 1]; i = 1; }
    }
    r->mt[0] = 0x80000000u;  // MSB is 1, assuring a non-zero initial array
}

static uint32_t genrand_uint32(Random *r) {
    static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
    uint32_t y;
    if (r->mti >= MT_N) {
        int kk;
        for (kk = 0; kk < MT_N - MT_M; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1u];
        }
        for (; kk < MT_N - 1; kk++) {
            y = (r->mt[kk] & 0x80000000u) | (r->mt[kk + 1] & 0x7fffffffu);
            r->mt[kk] = r->mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1u];
        }
        y = (r->mt[MT_N - 1] & 0x80000000u) | (r->mt[0] & 0x7fffffffu);
        r->mt[MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1u];
        r->mti = 0;
    }
    y = r->mt[r->mti++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

// random.seed(n) for an integer n given in decimal (any size, any sign): the key is the 32-bit
// words of abs(n), least significant first; n == 0 gives the key [0].
static int random_seed(Random *r, const char *decimal) {
    const char *s = decimal;
    if (*s == '-' || *s == '+') s++;
    if (!*s) return -1;
    size_t len = strlen(s);
    uint32_t *key = xmalloc(sizeof(uint32_t) * (len / 9 + 2));
    size_t nwords = 1;  // key[0..nwords) holds abs(n), little-endian base 2^32
    for (; *s; s++) {
        if (*s < '0' || *s > '9') { free(key); return -1; }
        uint64_t carry = (uint64_t)(*s - '0');
        for (size_t w = 0; w < nwords; w++) {  // key = key * 10 + digit
            uint64_t v = (uint64_t)key[w] * 10u + carry;
            key[w] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry) key[nwords++] = (uint32_t)carry;
    }
    while (nwords > 1 && key[nwords - 1] == 0) nwords--;  // leading zeros ("007") add no words
    init_by_array(r, key, nwords);
    r->has_gauss_next = 0;  // Random.seed() also forgets gauss's cached value
    free(key);
    return 0;
}

// random(): a double in [0, 1) with 53 random bits, from two 32-bit outputs.
static double random_random(Random *r) {
    uint32_t a = genrand_uint32(r) >> 5, b = genrand_uint32(r) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

// getrandbits(k) for 1 <= k <= 32: the top k bits of one 32-bit output.
static uint32_t getrandbits(Random *r, int k) {
    return genrand_uint32(r) >> (32 - k);
}

// _randbelow(n): rejection sampling on bit_length(n) bits (n >= 1, n < 2^32).
static uint32_t randbelow(Random *r, uint32_t n) {
    int k = 0;
    for (uint32_t m = n; m; m >>= 1) k++;  // n.bit_length()
    uint32_t x = getrandbits(r, k);
    while (x >= n) x = getrandbits(r, k);
    return x;
}

// gauss(mu, sigma): Box-Muller on two random() values; the pair's second value is kept for the
// next call (this is Random.gauss, not Random.normalvariate).
static double random_gauss(Random *r, double mu, double sigma) {
    double z;
    if (r->has_gauss_next) {
        z = r->gauss_next;
        r->has_gauss_next = 0;
    } else {
        double x2pi = random_random(r) * (2.0 * 3.141592653589793);
        double g2rad = sqrt(-2.0 * log(1.0 - random_random(r)));
        z = cos(x2pi) * g2rad;
        r->gauss_next = sin(x2pi) * g2rad;
        r->has_gauss_next = 1;
    }
    return mu + z * sigma;
}

// choices(range(n), weights=w)[0]: cumulative sums (itertools.accumulate, left to right), then
// bisect_right(cum, random() * total, 0, n - 1).
static int random_choice_weighted(Random *r, const double *w, int n, double *cum /* (n,) scratch */) {
    cum[0] = w[0];
    for (int i = 1; i < n; i++) cum[i] = cum[i - 1] + w[i];
    double total = cum[n - 1] + 0.0;
    double x = random_random(r) * total;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (x < cum[mid]) hi = mid; else lo = mid + 1;
    }
    return lo;
}

// ----------------------------------------------------------------------------------------------
// Data (SPEC.md section 2): UTF-8 text -> code points, universal newlines, one document per
// non-empty stripped line.
typedef struct { uint32_t *cp; int len; } Doc;

static int is_py_space(uint32_t c) {  // str.isspace(), which str.strip() uses
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// Strict UTF-8 (as Python's codec): no overlongs, no surrogates, nothing above U+10FFFF.
// Returns the number of code points written to out, or -1 (with *bad = the byte offset).
static long utf8_decode(const unsigned char *s, long n, uint32_t *out, long *bad) {
    long i = 0, m = 0;
    while (i < n) {
        unsigned c = s[i];
        int len; uint32_t cp, min;
        if (c < 0x80) { out[m++] = c; i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else { *bad = i; return -1; }
        if (i + len > n) { *bad = i; return -1; }
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) { *bad = i; return -1; }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) { *bad = i; return -1; }
        out[m++] = cp;
        i += len;
    }
    return m;
}

static Doc *load_docs(const char *path, int *ndocs) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "microgpt: cannot open %s: %s (put the training text there: UTF-8, one document per line)\n",
                path, strerror(errno));
        exit(1);
    }
    size_t cap = 1 << 16, n = 0, got;
    unsigned char *bytes = xmalloc(cap);
    while ((got = fread(bytes + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) { cap *= 2; bytes = realloc(bytes, cap); if (!bytes) fail("out of memory", NULL); }
    }
    if (ferror(f)) fail("cannot read", path);
    fclose(f);

    uint32_t *text = xmalloc(sizeof(uint32_t) * (n + 1));
    long bad = 0;
    long m = utf8_decode(bytes, (long)n, text, &bad);
    free(bytes);
    if (m < 0) {
        fprintf(stderr, "microgpt: %s is not valid UTF-8 (at byte %ld): save it as UTF-8 text\n", path, bad);
        exit(1);
    }
    // Universal newlines, as Python's text mode reads: "\r\n" -> "\n", a lone "\r" -> "\n".
    long w = 0;
    for (long i = 0; i < m; i++) {
        if (text[i] == '\r') {
            text[w++] = '\n';
            if (i + 1 < m && text[i + 1] == '\n') i++;
        } else {
            text[w++] = text[i];
        }
    }
    m = w;
    // Split on "\n", strip each line, keep the non-empty ones. (atomic.py also strips the whole
    // text first; that changes nothing, since every line is stripped and empty lines dropped.)
    int cap_docs = 1024, nd = 0;
    Doc *docs = xmalloc(sizeof(Doc) * cap_docs);
    long start = 0;
    for (long i = 0; i <= m; i++) {
        if (i < m && text[i] != '\n') continue;
        long a = start, b = i;  // the line is text[a:b]
        while (a < b && is_py_space(text[a])) a++;
        while (b > a && is_py_space(text[b - 1])) b--;
        if (b > a) {
            if (nd == cap_docs) {
                cap_docs *= 2;
                docs = realloc(docs, sizeof(Doc) * cap_docs);
                if (!docs) fail("out of memory", NULL);
            }
            docs[nd].cp = text + a;   // points into `text`, which lives until exit
            docs[nd].len = (int)(b - a);
            nd++;
        }
        start = i + 1;
    }
    if (nd == 0) fail("no documents: the input has no non-empty line", path);
    *ndocs = nd;
    return docs;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void put_utf8(uint32_t c) {  // code point -> UTF-8 bytes on stdout
    if (c < 0x80) putchar((int)c);
    else if (c < 0x800) { putchar(0xc0 | (c >> 6)); putchar(0x80 | (c & 0x3f)); }
    else if (c < 0x10000) { putchar(0xe0 | (c >> 12)); putchar(0x80 | ((c >> 6) & 0x3f)); putchar(0x80 | (c & 0x3f)); }
    else { putchar(0xf0 | (c >> 18)); putchar(0x80 | ((c >> 12) & 0x3f));
           putchar(0x80 | ((c >> 6) & 0x3f)); putchar(0x80 | (c & 0x3f)); }
}

// ----------------------------------------------------------------------------------------------
// The parameters: one flat array in atomic.py's order, each matrix row-major (rows = outputs).
typedef struct {
    double *wte;      // (V, C)
    double *wpe;      // (T_MAX, C)
    double *lm_head;  // (V, C)
    double *wq[N_LAYER], *wk[N_LAYER], *wv[N_LAYER], *wo[N_LAYER];  // (C, C) each
    double *fc1[N_LAYER];  // (FF, C)
    double *fc2[N_LAYER];  // (C, FF)
} Params;

// 2VC + TC + L(4C^2 + 2FC): 4192 for the names and the defaults.
static size_t num_params(int V) {
    return 2 * (size_t)V * C + (size_t)T_MAX * C + (size_t)N_LAYER * (4 * C * C + 2 * FF * C);
}

static void point_params(Params *p, double *base, int V) {
    double *q = base;
    p->wte = q; q += (size_t)V * C;
    p->wpe = q; q += (size_t)T_MAX * C;
    p->lm_head = q; q += (size_t)V * C;
    for (int l = 0; l < N_LAYER; l++) {
        p->wq[l] = q; q += C * C;
        p->wk[l] = q; q += C * C;
        p->wv[l] = q; q += C * C;
        p->wo[l] = q; q += C * C;
        p->fc1[l] = q; q += FF * C;
        p->fc2[l] = q; q += C * FF;
    }
}

// The activations of one position, all that the backward pass reads.
typedef struct {
    double ms_eps, scale;  // (mean(x^2) + 1e-5) and its ** -0.5
} RmsCache;

typedef struct {
    double x_in[C];           // the layer's input (the residual stream)
    RmsCache rms1;
    double xn1[C];            // rmsnorm(x_in)
    double q[C], k[C], v[C];  // this position's query, key, value (k, v: the KV cache)
    double ex[N_HEAD][T_MAX]; // exp(logit - max) of the attention logits over positions 0..pos
    double total[N_HEAD];     // sum of ex
    double inv[N_HEAD];       // total ** -1
    double w[N_HEAD][T_MAX];  // attention weights ex * inv
    double x_attn[C];         // the heads' outputs, concatenated
    double xa[C];             // after the attention block's residual add
    RmsCache rms2;
    double xn2[C];            // rmsnorm(xa)
    double h1[FF];            // fc1 output (before ReLU)
    double hr[FF];            // after ReLU
} LayerActs;

typedef struct {
    double e[C];              // wte[tok] + wpe[pos]
    RmsCache rms0;
    LayerActs layer[N_LAYER];
    double x_out[C];          // the last layer's output, lm_head's input
} PosActs;

// ----------------------------------------------------------------------------------------------
// Layers: forward and backward pairs. Sums start from 0.0 and add left to right, as Python's sum().

// y = W x: out (nout,), w (nout, nin), x (nin,)
static void linear_forward(double *out, const double *w, const double *x, int nout, int nin) {
    for (int r = 0; r < nout; r++) {
        double s = 0.0;
        for (int j = 0; j < nin; j++) s += w[r * nin + j] * x[j];
        out[r] = s;
    }
}

// The backward of one output row r: dw[r,:] += x * dout[r], dx += w[r,:] * dout[r]. The caller
// visits the rows in the order atomic.py's backward adds them into x (SPEC.md section 8).
static void linear_backward_row(double *dx, double *dw, const double *w, const double *x, double dout_r,
                                int r, int nin) {
    for (int j = 0; j < nin; j++) {
        dw[r * nin + j] += x[j] * dout_r;
        dx[j] += w[r * nin + j] * dout_r;
    }
}

// The usual order: rows from last to first.
static void linear_backward(double *dx, double *dw, const double *w, const double *x, const double *dout,
                            int nout, int nin) {
    for (int r = nout - 1; r >= 0; r--) linear_backward_row(dx, dw, w, x, dout[r], r, nin);
}

// rmsnorm(x) = x * (mean(x^2) + 1e-5) ** -0.5; the mean is sum(x*x) * n ** -1 (Value's division).
static void rmsnorm_forward(double *out, RmsCache *c, const double *x, int n) {
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double ms = ss * py_pow((double)n, -1.0);
    c->ms_eps = ms + 1e-5;
    c->scale = py_pow(c->ms_eps, -0.5);
    for (int i = 0; i < n; i++) out[i] = x[i] * c->scale;
}

// dx must already hold the gradient from x's other consumer (the residual add), if any: in
// atomic.py's graph that contribution arrives first, then x * scale's, then x * x's twice.
static void rmsnorm_backward(double *dx, const double *dout, const double *x, const RmsCache *c, int n) {
    double dscale = 0.0;
    for (int i = n - 1; i >= 0; i--) dscale += x[i] * dout[i];
    double dms_eps = (-0.5 * py_pow(c->ms_eps, -1.5)) * dscale;  // d(a ** -0.5)/da = -0.5 a ** -1.5
    double dss = py_pow((double)n, -1.0) * dms_eps;              // d(ms)/d(ss) = n ** -1; ms_eps = ms + 1e-5
    for (int i = 0; i < n; i++) {
        dx[i] += c->scale * dout[i];
        dx[i] += x[i] * dss;  // x * x has x as both operands: two contributions
        dx[i] += x[i] * dss;
    }
}

// softmax over n logits (max-subtracted): ex, total, inv = total ** -1, probs = ex * inv.
static void softmax_forward(double *probs, double *ex, double *total, double *inv, const double *logits, int n) {
    double max_val = logits[0];
    for (int i = 1; i < n; i++) if (logits[i] > max_val) max_val = logits[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        ex[i] = exp(logits[i] + (-max_val));  // Value's a - b is a + (-b)
        s += ex[i];
    }
    *total = s;
    *inv = py_pow(s, -1.0);                       // Value's a / b is a * b ** -1
    for (int i = 0; i < n; i++) probs[i] = ex[i] * *inv;
}

// Multi-head causal attention of position `pos` over the KV cache of positions 0..pos.
// q (C,), keys/values: positions' k, v (C,) each, out x_attn (C,).
static void attention_forward(LayerActs *a, PosActs *acts, int li, int pos) {
    const double att_scale = py_pow(py_pow((double)HD, 0.5), -1.0);  // "/ head_dim ** 0.5"
    double logits[T_MAX];
    for (int h = 0; h < N_HEAD; h++) {
        int hs = h * HD;
        for (int t = 0; t <= pos; t++) {
            const double *kt = acts[t].layer[li].k;
            double dot = 0.0;
            for (int j = 0; j < HD; j++) dot += a->q[hs + j] * kt[hs + j];
            logits[t] = dot * att_scale;
        }
        softmax_forward(a->w[h], a->ex[h], &a->total[h], &a->inv[h], logits, pos + 1);
        for (int j = 0; j < HD; j++) {
            double s = 0.0;
            for (int t = 0; t <= pos; t++) s += a->w[h][t] * acts[t].layer[li].v[hs + j];
            a->x_attn[hs + j] = s;
        }
    }
}

// The gradient of the attention at position `pos`: from dx_attn (C,) into dq (C,) and into the
// dk, dv accumulators of positions 0..pos (T_MAX, C), which later positions have already added to.
static void attention_backward(double *dq, double (*dk)[C], double (*dv)[C], const double *dx_attn,
                               const LayerActs *a, const PosActs *acts, int li, int pos) {
    const double att_scale = py_pow(py_pow((double)HD, 0.5), -1.0);
    for (int h = 0; h < N_HEAD; h++) {
        int hs = h * HD;
        double dinv[T_MAX], ddot[T_MAX], dw[T_MAX];
        for (int t = 0; t <= pos; t++) {
            const double *vt = acts[t].layer[li].v;
            dw[t] = 0.0;  // w_t feeds the head's outputs j = 0..HD-1: their gradients arrive last j first
            for (int j = HD - 1; j >= 0; j--) {
                dw[t] += vt[hs + j] * dx_attn[hs + j];
                dv[t][hs + j] += a->w[h][t] * dx_attn[hs + j];
            }
            dinv[t] = a->ex[h][t] * dw[t];  // w_t = ex_t * inv_t, inv_t one node per t
        }
        const double dinv_dtotal = -1.0 * py_pow(a->total[h], -2.0);  // d(a ** -1)/da = -1 * a ** -2
        double dtotal = 0.0;
        for (int t = pos; t >= 0; t--) dtotal += dinv_dtotal * dinv[t];
        for (int t = 0; t <= pos; t++) {
            double dex = a->inv[h] * dw[t] + dtotal;  // two contributions: order cannot matter
            double dlogit = a->ex[h][t] * dex;         // d(exp(d))/dd = exp(d); logit - max: 1
            ddot[t] = att_scale * dlogit;
        }
        for (int t = pos; t >= 0; t--) {  // q feeds the dots t = 0..pos: last t first
            const double *kt = acts[t].layer[li].k;
            for (int j = 0; j < HD; j++) {
                dq[hs + j] += kt[hs + j] * ddot[t];
                dk[t][hs + j] += a->q[hs + j] * ddot[t];
            }
        }
    }
}

// The whole network at one position: logits (V,) for the token after `token` at `pos`.
static void gpt_forward(double *logits, const Params *p, PosActs *acts, int token, int pos, int V) {
    PosActs *pa = &acts[pos];
    for (int i = 0; i < C; i++) pa->e[i] = p->wte[token * C + i] + p->wpe[pos * C + i];
    double x[C];
    rmsnorm_forward(x, &pa->rms0, pa->e, C);
    for (int l = 0; l < N_LAYER; l++) {
        LayerActs *a = &pa->layer[l];
        memcpy(a->x_in, x, sizeof x);
        rmsnorm_forward(a->xn1, &a->rms1, a->x_in, C);
        linear_forward(a->q, p->wq[l], a->xn1, C, C);
        linear_forward(a->k, p->wk[l], a->xn1, C, C);
        linear_forward(a->v, p->wv[l], a->xn1, C, C);
        attention_forward(a, acts, l, pos);
        double ao[C];
        linear_forward(ao, p->wo[l], a->x_attn, C, C);
        for (int i = 0; i < C; i++) a->xa[i] = ao[i] + a->x_in[i];
        rmsnorm_forward(a->xn2, &a->rms2, a->xa, C);
        linear_forward(a->h1, p->fc1[l], a->xn2, FF, C);
        for (int i = 0; i < FF; i++) a->hr[i] = a->h1[i] > 0 ? a->h1[i] : 0.0;
        double h2[C];
        linear_forward(h2, p->fc2[l], a->hr, C, FF);
        for (int i = 0; i < C; i++) x[i] = h2[i] + a->xa[i];
    }
    memcpy(pa->x_out, x, sizeof x);
    linear_forward(logits, p->lm_head, x, V, C);
}

// ----------------------------------------------------------------------------------------------
// The model and one training step on one document: forward over its n positions, the loss, then
// the backward pass, which fills the gradients (g, zero on entry).
typedef struct {
    int V;
    Params p, g;                   // parameters and their gradients (same layout)
    PosActs acts[T_MAX];           // per position: everything the backward pass reads
    double *logits, *probs, *cum;  // (V,) scratch each
    double *loss_ex;               // (T_MAX, V): exp(logit - max) of each position's loss softmax
    double loss_total[T_MAX], loss_inv[T_MAX], loss_prob[T_MAX];  // its sum, sum ** -1, prob[target]
} Model;

static double train_forward(Model *m, const int *tokens, int n) {
    int V = m->V;
    double s = 0.0;  // sum(losses), from 0, left to right
    for (int pos = 0; pos < n; pos++) {
        gpt_forward(m->logits, &m->p, m->acts, tokens[pos], pos, V);
        double *ex = m->loss_ex + (size_t)pos * V;
        softmax_forward(m->probs, ex, &m->loss_total[pos], &m->loss_inv[pos], m->logits, V);
        double prob = m->probs[tokens[pos + 1]];
        m->loss_prob[pos] = prob;
        s += log(prob) * -1;  // -x is x * -1
    }
    return s * (1.0 / n);     // (1/n) * sum(losses)
}

static void train_backward(Model *m, const int *tokens, int n) {
    int V = m->V;
    const Params *p = &m->p;
    Params *g = &m->g;
    static double dk[N_LAYER][T_MAX][C], dv[N_LAYER][T_MAX][C];  // gradients of the KV cache
    memset(dk, 0, sizeof dk);
    memset(dv, 0, sizeof dv);
    double *dlogits = m->probs;  // (V,) reuse as scratch
    // The graph's positions come in order, so its backward walks them last to first.
    for (int pos = n - 1; pos >= 0; pos--) {
        PosActs *pa = &m->acts[pos];
        int target = tokens[pos + 1];
        // loss = (1/n) * sum(-log(prob_target)): each position's term gets 1/n.
        double dlosspos = 1.0 / n;
        double dlog = -1.0 * dlosspos;                    // the * -1
        double dprob = (1 / m->loss_prob[pos]) * dlog;    // d(log a)/da = 1/a, computed as 1/a first
        const double *ex = m->loss_ex + (size_t)pos * V;
        double dinv = ex[target] * dprob;                 // prob = ex[target] * inv
        double dtotal = (-1.0 * py_pow(m->loss_total[pos], -2.0)) * dinv;
        for (int i = 0; i < V; i++) {
            double dex = dtotal;                          // total = sum(ex)
            if (i == target) dex = m->loss_inv[pos] * dprob + dtotal;
            dlogits[i] = ex[i] * dex;                     // exp's local gradient is exp(d)
        }
        // lm_head: its rows reach x in the order target first, then 0..V-1, so the backward
        // adds them V-1..0 (skipping target), then target.
        double dx[C] = {0};
        for (int r = V - 1; r >= 0; r--)
            if (r != target) linear_backward_row(dx, g->lm_head, p->lm_head, pa->x_out, dlogits[r], r, C);
        linear_backward_row(dx, g->lm_head, p->lm_head, pa->x_out, dlogits[target], target, C);

        for (int l = N_LAYER - 1; l >= 0; l--) {
            LayerActs *a = &pa->layer[l];
            // MLP block: x_out = fc2(relu(fc1(rmsnorm(xa)))) + xa
            double dxa[C], dhr[FF] = {0}, dh1[FF], dxn2[C] = {0};
            for (int i = 0; i < C; i++) dxa[i] = 0.0 + dx[i];   // the residual's contribution comes first
            linear_backward(dhr, g->fc2[l], p->fc2[l], a->hr, dx, C, FF);
            for (int i = 0; i < FF; i++) dh1[i] = (a->h1[i] > 0 ? 1.0 : 0.0) * dhr[i];
            linear_backward(dxn2, g->fc1[l], p->fc1[l], a->xn2, dh1, FF, C);
            rmsnorm_backward(dxa, dxn2, a->xa, &a->rms2, C);
            // Attention block: xa = wo(attention(q, k, v)) + x_in
            double dx_in[C], dx_attn[C] = {0}, dq[C] = {0}, dxn1[C] = {0};
            for (int i = 0; i < C; i++) dx_in[i] = 0.0 + dxa[i];
            linear_backward(dx_attn, g->wo[l], p->wo[l], a->x_attn, dxa, C, C);
            attention_backward(dq, dk[l], dv[l], dx_attn, a, m->acts, l, pos);
            // q, k, v: their rows reach xn1 head by head (q rows, k rows, v rows; at position 0
            // the q and k rows alternate), so the backward adds them in the reverse of that order.
            for (int h = N_HEAD - 1; h >= 0; h--) {
                int hs = h * HD;
                for (int j = HD - 1; j >= 0; j--)
                    linear_backward_row(dxn1, g->wv[l], p->wv[l], a->xn1, dv[l][pos][hs + j], hs + j, C);
                if (pos == 0) {
                    for (int j = HD - 1; j >= 0; j--) {
                        linear_backward_row(dxn1, g->wk[l], p->wk[l], a->xn1, dk[l][pos][hs + j], hs + j, C);
                        linear_backward_row(dxn1, g->wq[l], p->wq[l], a->xn1, dq[hs + j], hs + j, C);
                    }
                } else {
                    for (int j = HD - 1; j >= 0; j--)
                        linear_backward_row(dxn1, g->wk[l], p->wk[l], a->xn1, dk[l][pos][hs + j], hs + j, C);
                    for (int j = HD - 1; j >= 0; j--)
                        linear_backward_row(dxn1, g->wq[l], p->wq[l], a->xn1, dq[hs + j], hs + j, C);
                }
            }
            rmsnorm_backward(dx_in, dxn1, a->x_in, &a->rms1, C);
            memcpy(dx, dx_in, sizeof dx);
        }
        // Embedding: x = rmsnorm(wte[tok] + wpe[pos]), no residual around this rmsnorm.
        double de[C] = {0};
        rmsnorm_backward(de, dx, pa->e, &pa->rms0, C);
        int tok = tokens[pos];
        for (int i = 0; i < C; i++) {
            g->wte[tok * C + i] += de[i];
            g->wpe[pos * C + i] += de[i];
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Adam with bias correction; the learning rate decays linearly to zero over num_steps.
static void adam_update(double *param, double *grad, double *m, double *v, size_t np, int step, int num_steps) {
    double lr_t = LEARNING_RATE * (1 - (double)step / num_steps);
    double bc1 = 1 - py_pow(BETA1, step + 1), bc2 = 1 - py_pow(BETA2, step + 1);
    for (size_t i = 0; i < np; i++) {
        m[i] = BETA1 * m[i] + (1 - BETA1) * grad[i];
        v[i] = BETA2 * v[i] + (1 - BETA2) * py_pow(grad[i], 2.0);
        double m_hat = m[i] / bc1;
        double v_hat = v[i] / bc2;
        param[i] -= lr_t * m_hat / (py_pow(v_hat, 0.5) + EPS_ADAM);
        grad[i] = 0.0;
    }
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [-s SEED] [-n STEPS] [-i FILE] [-v]\n"
            "  Trains microgpt on FILE (default input.txt: UTF-8, one document per line) for STEPS\n"
            "  steps (default 1000) from random.seed(SEED) (default 42), then prints 20 samples,\n"
            "  exactly as `python microgpt/atomic.py` does.\n"
            "  -v: also write each step's loss and, after training, every parameter in full\n"
            "      (C99 hex floats, which Python's float.fromhex reads) to stderr, to compare bits.\n",
            argv0);
}

int main(int argc, char **argv) {
    const char *seed = "42", *path = "input.txt";
    int num_steps = 1000, verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { usage(argv[0]); return 0; }
        if (!strcmp(argv[i], "-v")) { verbose = 1; continue; }
        if (i + 1 >= argc || argv[i][0] != '-' || argv[i][1] == 0 || argv[i][2] != 0) { usage(argv[0]); return 2; }
        char opt = argv[i][1];
        const char *val = argv[++i];
        if (opt == 's') seed = val;
        else if (opt == 'i') path = val;
        else if (opt == 'n') {
            char *end;
            long n = strtol(val, &end, 10);
            if (*end || end == val || n < 1 || n > 1000000000L) {
                fprintf(stderr, "microgpt: -n wants a step count >= 1, got %s\n", val);
                return 2;
            }
            num_steps = (int)n;
        } else { usage(argv[0]); return 2; }
    }

    Random rng;
    if (random_seed(&rng, seed) != 0) {
        fprintf(stderr, "microgpt: -s wants an integer seed, got %s\n", seed);
        return 2;
    }

    // The dataset: one document per non-empty stripped line, shuffled.
    int ndocs;
    Doc *docs = load_docs(path, &ndocs);
    for (int i = ndocs - 1; i >= 1; i--) {  // random.shuffle
        int j = (int)randbelow(&rng, (uint32_t)i + 1);
        Doc tmp = docs[i]; docs[i] = docs[j]; docs[j] = tmp;
    }
    printf("num docs: %d\n", ndocs);

    // The tokenizer: the sorted distinct code points get ids 0..n-1; BOS = n.
    long total_len = 0;
    for (int d = 0; d < ndocs; d++) total_len += docs[d].len;
    uint32_t *uchars = xmalloc(sizeof(uint32_t) * (size_t)total_len);
    long nu = 0;
    for (int d = 0; d < ndocs; d++)
        for (int i = 0; i < docs[d].len; i++) uchars[nu++] = docs[d].cp[i];
    qsort(uchars, (size_t)nu, sizeof(uint32_t), cmp_u32);
    long w = 0;
    for (long i = 0; i < nu; i++) if (w == 0 || uchars[i] != uchars[w - 1]) uchars[w++] = uchars[i];
    nu = w;
    const int BOS = (int)nu, V = (int)nu + 1;
    printf("vocab size: %d\n", V);

    // The parameters, drawn from gauss(0, 0.08) in atomic.py's order, row by row.
    Model m = {0};
    m.V = V;
    size_t np = num_params(V);
    double *param = xmalloc(sizeof(double) * np), *grad = xmalloc(sizeof(double) * np);
    point_params(&m.p, param, V);
    point_params(&m.g, grad, V);
    for (size_t i = 0; i < np; i++) param[i] = random_gauss(&rng, 0.0, 0.08);
    printf("num params: %zu\n", np);
    m.logits = xmalloc(sizeof(double) * V);
    m.probs = xmalloc(sizeof(double) * V);
    m.cum = xmalloc(sizeof(double) * V);
    m.loss_ex = xmalloc(sizeof(double) * (size_t)T_MAX * V);
    double *adam_m = xmalloc(sizeof(double) * np), *adam_v = xmalloc(sizeof(double) * np);

    int *tokens = xmalloc(sizeof(int) * (T_MAX + 1));
    for (int step = 0; step < num_steps; step++) {
        // One document per step, framed by BOS on both sides, cut to the context window.
        const Doc *doc = &docs[step % ndocs];
        int len = doc->len + 2;
        int n = len - 1 < T_MAX ? len - 1 : T_MAX;
        tokens[0] = BOS;
        for (int i = 1; i <= n; i++) {
            if (i - 1 == doc->len) { tokens[i] = BOS; break; }
            uint32_t *hit = bsearch(&doc->cp[i - 1], uchars, (size_t)nu, sizeof(uint32_t), cmp_u32);
            tokens[i] = (int)(hit - uchars);
        }
        double loss = train_forward(&m, tokens, n);
        train_backward(&m, tokens, n);
        adam_update(param, grad, adam_m, adam_v, np, step, num_steps);
        printf("step %4d / %4d | loss %.4f\n", step + 1, num_steps, loss);
        if (verbose) fprintf(stderr, "loss %d %a\n", step + 1, loss);
    }
    if (verbose) {  // every parameter in full, in atomic.py's order
        fprintf(stderr, "params");
        for (size_t i = 0; i < np; i++) fprintf(stderr, " %a", param[i]);
        fprintf(stderr, "\n");
    }

    // Sampling: from BOS, draw each next token from softmax(logits / temperature), stop at BOS.
    printf("--- samples ---\n");
    const double inv_temp = py_pow(TEMPERATURE, -1.0);  // "l / temperature" is l * temperature ** -1
    double *scaled = xmalloc(sizeof(double) * V), *ex = xmalloc(sizeof(double) * V);
    uint32_t sample[T_MAX];
    for (int s = 0; s < NUM_SAMPLES; s++) {
        int token = BOS, len = 0;
        for (int pos = 0; pos < T_MAX; pos++) {
            gpt_forward(m.logits, &m.p, m.acts, token, pos, V);
            for (int i = 0; i < V; i++) scaled[i] = m.logits[i] * inv_temp;
            double total, inv;
            softmax_forward(m.probs, ex, &total, &inv, scaled, V);
            token = random_choice_weighted(&rng, m.probs, V, m.cum);
            if (token == BOS) break;
            sample[len++] = uchars[token];
        }
        printf("sample %2d: ", s + 1);
        for (int i = 0; i < len; i++) put_utf8(sample[i]);
        putchar('\n');
    }
    return 0;
}
