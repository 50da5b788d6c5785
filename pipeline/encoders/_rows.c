/* Row encoders over Arrow arrays: the one compiled part of hdfs2kafka.
 *
 * Kafka wants one value per row, and building one Python object per value costs more than the
 * rest of the pipeline together (DESIGN.md, "Encoding is the other ceiling"). This module walks
 * Arrow arrays, received through the Arrow PyCapsule interface, and writes each row's JSON or
 * Avro binary straight into one `bytes` per row. It also splits decompressed Avro blocks into
 * their records, guided by a schema program compiled in Python (avro.py).
 *
 * The type mapping is documented in json.py and avro.py; this file implements it and nothing
 * else. Python code normalises exotic Arrow types (dictionaries, views, half floats, small or
 * wide decimals) into the ones handled here before calling in.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ Arrow C data interface */

struct ArrowSchema {
    const char *format;
    const char *name;
    const char *metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema **children;
    struct ArrowSchema *dictionary;
    void (*release)(struct ArrowSchema *);
    void *private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void **buffers;
    struct ArrowArray **children;
    struct ArrowArray *dictionary;
    void (*release)(struct ArrowArray *);
    void *private_data;
};

#define ARROW_FLAG_NULLABLE 2

/* ------------------------------------------------------------------ output buffer */

typedef struct {
    char *p;
    size_t len;
    size_t cap;
} Buf;

static int buf_grow(Buf *b, size_t need) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

#define RESERVE(b, n) \
    do { \
        if ((b)->len + (size_t)(n) > (b)->cap && buf_grow((b), (size_t)(n)) < 0) return -1; \
    } while (0)

static int put(Buf *b, const void *s, size_t n) {
    RESERVE(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static int putc1(Buf *b, char c) {
    RESERVE(b, 1);
    b->p[b->len++] = c;
    return 0;
}

/* ------------------------------------------------------------------ sharing the GIL */

/* A call encodes a whole unit (20,000 rows: 8-15 ms of JSON) in a worker thread. Held all that
 * time, the GIL would keep the event loop's thread waiting as long, and with it every timer,
 * socket and Kafka send. So the row loops let go of the GIL every YIELD_EVERY rows (about 1-2
 * ms of work): CPython hands it over there to a thread that has asked for it (the daemon asks
 * after 1 ms, sys.setswitchinterval) and the walk resumes when it comes back. That happens
 * between rows, where this code holds no borrowed reference another thread could invalidate:
 * the inputs (Arrow capsules, the prefix) are held by the call's arguments, the Arrow layout
 * was copied into C, and the output list is seen by no other code yet (its empty slots are
 * NULL, which the cyclic collector skips). */
#define YIELD_EVERY 4096

static inline void share_gil(int64_t row) {
    if (row && row % YIELD_EVERY == 0) {
        Py_BEGIN_ALLOW_THREADS
        Py_END_ALLOW_THREADS
    }
}

/* ------------------------------------------------------------------ typed view of arrays */

enum Kind {
    K_NULL, K_BOOL, K_I8, K_U8, K_I16, K_U16, K_I32, K_U32, K_I64, K_U64, K_F32, K_F64,
    K_STR, K_LSTR, K_BIN, K_LBIN, K_FBIN, K_DEC, K_DATE32, K_DATE64, K_TIME32, K_TIME64,
    K_TS, K_DUR, K_STRUCT, K_LIST, K_LLIST, K_FLIST, K_MAP, K_NUMTEXT, K_AVRO, K_LAVRO
};

typedef struct Node {
    int kind;
    int unit;      /* 0 s, 1 ms, 2 us, 3 ns */
    int has_tz;
    int scale;     /* decimal */
    int width;     /* fixed-size binary bytes, fixed-size list items */
    int nullable;
    int64_t offset;
    const uint8_t *validity;
    const uint8_t *values;
    const void *offsets;
    char *key;     /* JSON object key, `"name":`, escaped */
    size_t key_len;
    int64_t n_children;
    struct Node *children;
    int64_t last_day;   /* the day whose text is in day_text (dates repeat within a batch) */
    char day_text[16];
    size_t day_len;
    int32_t *prog;      /* K_AVRO: the JSON program of avro_json.py (words, then strings) */
    int32_t prog_root;
    int32_t prog_words;
    size_t prog_bytes;
} Node;

static void node_free(Node *n) {
    if (!n) return;
    for (int64_t i = 0; i < n->n_children; i++) node_free(&n->children[i]);
    free(n->children);
    free(n->key);
    free(n->prog);
}

static int json_string(Buf *b, const uint8_t *s, size_t n);

static int unit_of(char c) {
    switch (c) {
    case 's': return 0;
    case 'm': return 1;
    case 'u': return 2;
    case 'n': return 3;
    default: return -1;
    }
}

/* The value of `key` in an Arrow field's metadata (a count, then length-prefixed keys and
 * values), or NULL. */
static const char *metadata_value(const char *md, const char *key, int32_t *value_len) {
    if (!md) return NULL;
    size_t want = strlen(key);
    int32_t pairs, len;
    memcpy(&pairs, md, 4);
    md += 4;
    for (int32_t k = 0; k < pairs; k++) {
        memcpy(&len, md, 4);
        const char *name = md + 4;
        int32_t klen = len;
        md += 4 + len;
        memcpy(&len, md, 4);
        const char *val = md + 4;
        md += 4 + len;
        if ((size_t)klen == want && memcmp(name, key, want) == 0) {
            *value_len = len;
            return val;
        }
    }
    return NULL;
}

/* Whether a field's metadata says its strings are preformatted JSON numbers: json.py formats
 * float columns in bulk (shortest round-trip text) and marks them so. */
static int is_number_text(const char *md) {
    int32_t len;
    const char *val = metadata_value(md, "hdfs2kafka.json", &len);
    return val && len == 6 && memcmp(val, "number", 6) == 0;
}

/* A binary column of Avro-encoded values to write as JSON (avro_json.py): its program, copied
 * (metadata bytes need not be aligned). 0 when the field has none, -1 on error. */
static int program_load(Node *n, const char *val, int32_t len);

static int avro_program(Node *n, const char *md) {
    int32_t len;
    const char *val = metadata_value(md, "hdfs2kafka.avro", &len);
    if (!val) return 0;
    return program_load(n, val, len) < 0 ? -1 : 1;
}

static int program_load(Node *n, const char *val, int32_t len) {
    int32_t head[2];
    if (len < 8) goto bad;
    memcpy(head, val, 8);
    if (head[1] < 1 || head[0] < 0 || head[0] >= head[1] || (int64_t)head[1] * 4 > len - 8)
        goto bad;
    n->prog = malloc((size_t)len - 8);
    if (!n->prog) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(n->prog, val + 8, (size_t)len - 8);
    n->prog_root = head[0];
    n->prog_words = head[1];
    n->prog_bytes = (size_t)len - 8;
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "bad hdfs2kafka.avro program in a field's metadata");
    return -1;
}

static int node_init(Node *n, struct ArrowSchema *s, struct ArrowArray *a) {
    memset(n, 0, sizeof(*n));
    n->last_day = INT64_MIN;
    const char *f = s->format;
    n->nullable = (s->flags & ARROW_FLAG_NULLABLE) != 0;
    n->offset = a->offset;
    if (s->dictionary) {
        PyErr_SetString(PyExc_TypeError, "dictionary arrays must be decoded before encoding");
        return -1;
    }
    const void **bufs = a->buffers;
    if (a->n_buffers > 0) n->validity = bufs[0];
    if (s->name) {
        Buf kb = {0};
        if (json_string(&kb, (const uint8_t *)s->name, strlen(s->name)) < 0 || putc1(&kb, ':') < 0) {
            free(kb.p);
            return -1;
        }
        n->key = kb.p;
        n->key_len = kb.len;
    }
    int simple = 1;
    switch (f[0]) {
    case 'n': n->kind = K_NULL; break;
    case 'b': n->kind = K_BOOL; break;
    case 'c': n->kind = K_I8; break;
    case 'C': n->kind = K_U8; break;
    case 's': n->kind = K_I16; break;
    case 'S': n->kind = K_U16; break;
    case 'i': n->kind = K_I32; break;
    case 'I': n->kind = K_U32; break;
    case 'l': n->kind = K_I64; break;
    case 'L': n->kind = K_U64; break;
    case 'f': n->kind = K_F32; break;
    case 'g': n->kind = K_F64; break;
    case 'u': n->kind = K_STR; break;
    case 'U': n->kind = K_LSTR; break;
    case 'z': n->kind = K_BIN; break;
    case 'Z': n->kind = K_LBIN; break;
    default: simple = 0;
    }
    if (simple && f[1] != '\0') simple = 0, n->kind = -1;
    if (simple) {
        if (n->kind == K_STR && is_number_text(s->metadata)) n->kind = K_NUMTEXT;
        if ((n->kind == K_BIN || n->kind == K_LBIN) && s->metadata) {
            int rc = avro_program(n, s->metadata);
            if (rc < 0) return -1;
            if (rc) n->kind = n->kind == K_BIN ? K_AVRO : K_LAVRO;
        }
        if (n->kind == K_STR || n->kind == K_NUMTEXT || n->kind == K_LSTR || n->kind == K_BIN ||
            n->kind == K_LBIN || n->kind == K_AVRO || n->kind == K_LAVRO) {
            n->offsets = bufs[1];
            n->values = bufs[2];
        } else if (n->kind != K_NULL) {
            n->values = bufs[1];
        } else {
            n->validity = NULL;
        }
        return 0;
    }
    if (f[0] == 'w' && f[1] == ':') {
        n->kind = K_FBIN;
        n->width = atoi(f + 2);
        n->values = bufs[1];
        return 0;
    }
    if (f[0] == 'd' && f[1] == ':') {
        const char *comma = strchr(f + 2, ',');
        if (!comma) goto unsupported;
        const char *comma2 = strchr(comma + 1, ',');
        if (comma2 && atoi(comma2 + 1) != 128) goto unsupported;
        n->kind = K_DEC;
        n->scale = atoi(comma + 1);
        n->values = bufs[1];
        return 0;
    }
    if (f[0] == 't') {
        n->values = bufs[1];
        if (f[1] == 'd' && f[2] == 'D') { n->kind = K_DATE32; return 0; }
        if (f[1] == 'd' && f[2] == 'm') { n->kind = K_DATE64; return 0; }
        n->unit = unit_of(f[2]);
        if (n->unit < 0) goto unsupported;
        if (f[1] == 't') { n->kind = (n->unit <= 1) ? K_TIME32 : K_TIME64; return 0; }
        if (f[1] == 'D') { n->kind = K_DUR; return 0; }
        if (f[1] == 's' && f[3] == ':') {
            n->kind = K_TS;
            n->has_tz = f[4] != '\0';
            return 0;
        }
        goto unsupported;
    }
    if (f[0] == '+') {
        switch (f[1]) {
        case 's': n->kind = K_STRUCT; break;
        case 'l': n->kind = K_LIST; n->offsets = bufs[1]; break;
        case 'L': n->kind = K_LLIST; n->offsets = bufs[1]; break;
        case 'm': n->kind = K_MAP; n->offsets = bufs[1]; break;
        case 'w':
            n->kind = K_FLIST;
            n->width = atoi(f + 3);
            break;
        default: goto unsupported;
        }
        n->n_children = s->n_children;
        n->children = calloc((size_t)(s->n_children ? s->n_children : 1), sizeof(Node));
        if (!n->children) {
            PyErr_NoMemory();
            return -1;
        }
        for (int64_t i = 0; i < s->n_children; i++) {
            if (node_init(&n->children[i], s->children[i], a->children[i]) < 0) return -1;
        }
        if (n->kind == K_MAP) {
            /* entries: struct<key, value> */
            if (n->n_children != 1 || n->children[0].n_children != 2) goto unsupported;
        }
        return 0;
    }
unsupported:
    PyErr_Format(PyExc_TypeError, "unsupported Arrow format '%s' for column '%s'", f,
                 s->name ? s->name : "");
    return -1;
}

static inline int is_valid(const Node *n, int64_t i) {
    if (!n->validity) return 1;
    int64_t j = n->offset + i;
    return (n->validity[j >> 3] >> (j & 7)) & 1;
}

static inline int64_t list_start(const Node *n, int64_t i) {
    int64_t j = n->offset + i;
    if (n->kind == K_LLIST) return ((const int64_t *)n->offsets)[j];
    if (n->kind == K_FLIST) return j * n->width;
    return ((const int32_t *)n->offsets)[j];
}

static inline int64_t list_end(const Node *n, int64_t i) {
    int64_t j = n->offset + i + 1;
    if (n->kind == K_LLIST) return ((const int64_t *)n->offsets)[j];
    if (n->kind == K_FLIST) return j * n->width;
    return ((const int32_t *)n->offsets)[j];
}

static inline void bytes_of(const Node *n, int64_t i, const uint8_t **p, size_t *len) {
    int64_t j = n->offset + i;
    if (n->kind == K_FBIN) {
        *p = n->values + j * n->width;
        *len = (size_t)n->width;
    } else if (n->kind == K_LSTR || n->kind == K_LBIN || n->kind == K_LAVRO) {
        const int64_t *o = n->offsets;
        *p = n->values + o[j];
        *len = (size_t)(o[j + 1] - o[j]);
    } else {
        const int32_t *o = n->offsets;
        *p = n->values + o[j];
        *len = (size_t)(o[j + 1] - o[j]);
    }
}

static inline int64_t int_of(const Node *n, int64_t i) {
    int64_t j = n->offset + i;
    switch (n->kind) {
    case K_I8: return ((const int8_t *)n->values)[j];
    case K_U8: return ((const uint8_t *)n->values)[j];
    case K_I16: return ((const int16_t *)n->values)[j];
    case K_U16: return ((const uint16_t *)n->values)[j];
    case K_I32: case K_DATE32: case K_TIME32: return ((const int32_t *)n->values)[j];
    case K_U32: return ((const uint32_t *)n->values)[j];
    default: return ((const int64_t *)n->values)[j];
    }
}

/* ------------------------------------------------------------------ text helpers */

static const int64_t UNITS_PER_SEC[4] = {1, 1000, 1000000, 1000000000};
static const int FRAC_DIGITS[4] = {0, 3, 6, 9};

static const char DIGIT_PAIRS[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static int put_u64(Buf *b, uint64_t u) {
    char tmp[24];
    int k = 24;
    while (u >= 100) {
        unsigned r = (unsigned)(u % 100);
        u /= 100;
        tmp[--k] = DIGIT_PAIRS[2 * r + 1];
        tmp[--k] = DIGIT_PAIRS[2 * r];
    }
    if (u >= 10) {
        tmp[--k] = DIGIT_PAIRS[2 * u + 1];
        tmp[--k] = DIGIT_PAIRS[2 * u];
    } else {
        tmp[--k] = (char)('0' + u);
    }
    return put(b, tmp + k, (size_t)(24 - k));
}

static int put_i64(Buf *b, int64_t v) {
    if (v < 0) {
        if (putc1(b, '-') < 0) return -1;
        return put_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(b, (uint64_t)v);
}

static inline void digits(char *out, int64_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int put_date(Buf *b, int64_t days) {
    int64_t y;
    int m, d;
    civil(days, &y, &m, &d);
    RESERVE(b, 32);
    if (y >= 0 && y <= 9999) {
        digits(b->p + b->len, y, 4);
        b->len += 4;
    } else {
        b->len += (size_t)sprintf(b->p + b->len, "%+05lld", (long long)y);
    }
    char *o = b->p + b->len;
    o[0] = '-';
    digits(o + 1, m, 2);
    o[3] = '-';
    digits(o + 4, d, 2);
    b->len += 6;
    return 0;
}

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* HH:MM:SS[.fraction] for `secs` seconds into the day plus `frac` units of `unit`. */
static int put_clock(Buf *b, int64_t secs, int64_t frac, int unit) {
    RESERVE(b, 20);
    char *o = b->p + b->len;
    digits(o, secs / 3600, 2);
    o[2] = ':';
    digits(o + 3, (secs / 60) % 60, 2);
    o[5] = ':';
    digits(o + 6, secs % 60, 2);
    b->len += 8;
    if (FRAC_DIGITS[unit]) {
        o[8] = '.';
        digits(o + 9, frac, FRAC_DIGITS[unit]);
        b->len += 1 + (size_t)FRAC_DIGITS[unit];
    }
    return 0;
}

/* A date's text, remembered per column: dates and timestamps repeat their day within a batch. */
static int put_day(const Node *cn, Buf *b, int64_t days) {
    Node *n = (Node *)cn;
    if (days != n->last_day) {
        Buf tmp = {n->day_text, 0, sizeof(n->day_text)};
        int64_t y;
        int m, d;
        civil(days, &y, &m, &d);
        if (y < 0 || y > 9999) return put_date(b, days);
        tmp.len = 10;
        digits(n->day_text, y, 4);
        n->day_text[4] = '-';
        digits(n->day_text + 5, m, 2);
        n->day_text[7] = '-';
        digits(n->day_text + 8, d, 2);
        n->day_len = tmp.len;
        n->last_day = days;
    }
    return put(b, n->day_text, n->day_len);
}

static int put_timestamp_iso(const Node *n, Buf *b, int64_t v) {
    int unit = n->unit, utc = n->has_tz;
    int64_t per = UNITS_PER_SEC[unit];
    int64_t secs = floordiv(v, per);
    int64_t frac = v - secs * per;
    int64_t days = floordiv(secs, 86400);
    if (put_day(n, b, days) < 0 || putc1(b, 'T') < 0) return -1;
    if (put_clock(b, secs - days * 86400, frac, unit) < 0) return -1;
    if (utc) return putc1(b, 'Z');
    return 0;
}

/* Convert a count of `unit` to `target` unit: exact when finer, floored when coarser. */
static int64_t rescale(int64_t v, int unit, int target) {
    if (target == unit) return v;
    if (target > unit) return v * (UNITS_PER_SEC[target] / UNITS_PER_SEC[unit]);
    return floordiv(v, UNITS_PER_SEC[unit] / UNITS_PER_SEC[target]);
}

static int put_decimal(Buf *b, const uint8_t *p, int scale) {
    uint64_t lo, hi;
    memcpy(&lo, p, 8);
    memcpy(&hi, p + 8, 8);
    __int128 v = (__int128)(((unsigned __int128)hi << 64) | lo);
    int neg = v < 0;
    unsigned __int128 u = neg ? (unsigned __int128)0 - (unsigned __int128)v : (unsigned __int128)v;
    char tmp[48];
    int k = 0;
    /* 128-bit division is a library call: peel 19 digits at a time into 64-bit arithmetic */
    while (u >> 64) {
        uint64_t chunk = (uint64_t)(u % 10000000000000000000ULL);
        u /= 10000000000000000000ULL;
        for (int d = 0; d < 19; d++) {
            tmp[k++] = (char)('0' + chunk % 10);
            chunk /= 10;
        }
    }
    uint64_t low = (uint64_t)u;
    do {
        tmp[k++] = (char)('0' + low % 10);
        low /= 10;
    } while (low);
    if (scale > 0) {
        while (k <= scale) tmp[k++] = '0';
    }
    RESERVE(b, k + 4 + (scale < 0 ? -scale : 0));
    if (neg) b->p[b->len++] = '-';
    while (k) {
        if (scale > 0 && k == scale) b->p[b->len++] = '.';
        b->p[b->len++] = tmp[--k];
    }
    for (int z = scale; z < 0; z++) b->p[b->len++] = '0';
    return 0;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int put_base64(Buf *b, const uint8_t *s, size_t n) {
    RESERVE(b, (n + 2) / 3 * 4);
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8) | s[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)s[i] << 16) | ((uint32_t)s[i + 1] << 8);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    return 0;
}

static const char HEX[] = "0123456789abcdef";

/* 1 for the bytes a JSON string cannot hold as they are */
static const uint8_t NEEDS_ESCAPE[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
};

/* Whether any byte needs escaping, eight bytes at a time (bytes below 0x20, '"' and '\\'). */
static inline int any_escape(const uint8_t *s, size_t n) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, bs;
        memcpy(&w, s + i, 8);
        uint64_t low = (w - ones * 0x20) & ~w;
        q = w ^ (ones * 0x22);
        q = (q - ones) & ~q;
        bs = w ^ (ones * 0x5C);
        bs = (bs - ones) & ~bs;
        if ((low | q | bs) & highs) return 1;
    }
    for (; i < n; i++) {
        if (NEEDS_ESCAPE[s[i]]) return 1;
    }
    return 0;
}

static int json_string(Buf *b, const uint8_t *s, size_t n) {
    RESERVE(b, n + 2);
    if (!any_escape(s, n)) {
        char *o = b->p + b->len;
        o[0] = '"';
        memcpy(o + 1, s, n);
        o[n + 1] = '"';
        b->len += n + 2;
        return 0;
    }
    b->p[b->len++] = '"';
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (!NEEDS_ESCAPE[c]) continue;
        if (put(b, s + start, i - start) < 0) return -1;
        start = i + 1;
        RESERVE(b, 6);
        char *o = b->p + b->len;
        o[0] = '\\';
        switch (c) {
        case '"': o[1] = '"'; b->len += 2; break;
        case '\\': o[1] = '\\'; b->len += 2; break;
        case '\n': o[1] = 'n'; b->len += 2; break;
        case '\r': o[1] = 'r'; b->len += 2; break;
        case '\t': o[1] = 't'; b->len += 2; break;
        case '\b': o[1] = 'b'; b->len += 2; break;
        case '\f': o[1] = 'f'; b->len += 2; break;
        default:
            o[1] = 'u'; o[2] = '0'; o[3] = '0'; o[4] = HEX[c >> 4]; o[5] = HEX[c & 15];
            b->len += 6;
        }
    }
    if (put(b, s + start, n - start) < 0) return -1;
    return putc1(b, '"');
}

static int put_double(Buf *b, double v) {
    if (isnan(v)) return put(b, "\"NaN\"", 5);
    if (isinf(v)) return v > 0 ? put(b, "\"Infinity\"", 10) : put(b, "\"-Infinity\"", 11);
    char *s = PyOS_double_to_string(v, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!s) return -1;
    int rc = put(b, s, strlen(s));
    PyMem_Free(s);
    return rc;
}

/* float32: the shortest decimal that reads back as the same float32. */
static int put_float(Buf *b, float v) {
    if (isnan(v) || isinf(v)) return put_double(b, (double)v);
    char *s = NULL;
    for (int prec = 6; prec <= 9; prec++) {
        s = PyOS_double_to_string((double)v, 'g', prec, Py_DTSF_ADD_DOT_0, NULL);
        if (!s) return -1;
        if ((float)strtod(s, NULL) == v || prec == 9) break;
        PyMem_Free(s);
    }
    int rc = put(b, s, strlen(s));
    PyMem_Free(s);
    return rc;
}

/* ------------------------------------------------------------------ JSON */

enum { TS_ISO = 0, TS_EPOCH_S, TS_EPOCH_MS, TS_EPOCH_US, TS_EPOCH_NS };

typedef struct {
    int ts_mode;
    int decimal_as_number;
    int int64_as_string;
} JsonOpts;

static int json_value(const Node *n, int64_t i, Buf *b, const JsonOpts *o);
static int json_avro(const Node *n, const uint8_t *p, size_t len, Buf *b, const JsonOpts *o);

/* A duration as ISO 8601 seconds, with the digits of its unit so that the unit stays known:
 * "PT90S" (s), "PT1.500S" (ms), "-PT0.000001S" (us), "PT0.000000001S" (ns). */
static int put_duration(Buf *b, int64_t v, int unit) {
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    uint64_t per = (uint64_t)UNITS_PER_SEC[unit];
    if (put(b, v < 0 ? "\"-PT" : "\"PT", v < 0 ? 4 : 3) < 0 || put_u64(b, u / per) < 0) return -1;
    if (FRAC_DIGITS[unit]) {
        RESERVE(b, 10);
        b->p[b->len++] = '.';
        digits(b->p + b->len, (int64_t)(u % per), FRAC_DIGITS[unit]);
        b->len += (size_t)FRAC_DIGITS[unit];
    }
    return put(b, "S\"", 2);
}

static int json_map_key(const Node *k, int64_t i, Buf *b, const JsonOpts *o) {
    size_t at = b->len;
    if (json_value(k, i, b, o) < 0) return -1;
    if (b->p[at] == '"') return 0;
    /* JSON object keys are strings: quote the key's own JSON text. */
    RESERVE(b, 2);
    memmove(b->p + at + 1, b->p + at, b->len - at);
    b->p[at] = '"';
    b->len += 1;
    b->p[b->len++] = '"';
    return 0;
}

static int json_value(const Node *n, int64_t i, Buf *b, const JsonOpts *o) {
    if (n->kind == K_NULL || !is_valid(n, i)) return put(b, "null", 4);
    int64_t j = n->offset + i;
    const uint8_t *p;
    size_t len;
    switch (n->kind) {
    case K_BOOL:
        return ((n->values[j >> 3] >> (j & 7)) & 1) ? put(b, "true", 4) : put(b, "false", 5);
    case K_I8: case K_U8: case K_I16: case K_U16: case K_I32: case K_U32:
        return put_i64(b, int_of(n, i));
    case K_I64:
        if (o->int64_as_string) {
            if (putc1(b, '"') < 0 || put_i64(b, int_of(n, i)) < 0) return -1;
            return putc1(b, '"');
        }
        return put_i64(b, int_of(n, i));
    case K_U64:
        if (o->int64_as_string) {
            if (putc1(b, '"') < 0 || put_u64(b, ((const uint64_t *)n->values)[j]) < 0) return -1;
            return putc1(b, '"');
        }
        return put_u64(b, ((const uint64_t *)n->values)[j]);
    case K_F32:
        return put_float(b, ((const float *)n->values)[j]);
    case K_F64:
        return put_double(b, ((const double *)n->values)[j]);
    case K_STR: case K_LSTR:
        bytes_of(n, i, &p, &len);
        return json_string(b, p, len);
    case K_NUMTEXT:
        bytes_of(n, i, &p, &len);
        if (len && (p[len - 1] == 'N' || p[len - 1] == 'f')) {
            /* NaN, inf, -inf: JSON has no literal for them; write them as proto3's JSON does */
            if (p[len - 1] == 'N') return put(b, "\"NaN\"", 5);
            return p[0] == '-' ? put(b, "\"-Infinity\"", 11) : put(b, "\"Infinity\"", 10);
        }
        return put(b, p, len);
    case K_BIN: case K_LBIN: case K_FBIN:
        bytes_of(n, i, &p, &len);
        if (putc1(b, '"') < 0 || put_base64(b, p, len) < 0) return -1;
        return putc1(b, '"');
    case K_DEC:
        if (!o->decimal_as_number && putc1(b, '"') < 0) return -1;
        if (put_decimal(b, n->values + 16 * j, n->scale) < 0) return -1;
        return o->decimal_as_number ? 0 : putc1(b, '"');
    case K_DATE32: case K_DATE64: {
        int64_t days = n->kind == K_DATE32 ? int_of(n, i) : floordiv(int_of(n, i), 86400000);
        if (putc1(b, '"') < 0 || put_day(n, b, days) < 0) return -1;
        return putc1(b, '"');
    }
    case K_TIME32: case K_TIME64: {
        int64_t v = int_of(n, i), per = UNITS_PER_SEC[n->unit];
        if (putc1(b, '"') < 0 || put_clock(b, v / per, v % per, n->unit) < 0) return -1;
        return putc1(b, '"');
    }
    case K_TS: {
        int64_t v = int_of(n, i);
        if (o->ts_mode == TS_ISO) {
            if (putc1(b, '"') < 0 || put_timestamp_iso(n, b, v) < 0) return -1;
            return putc1(b, '"');
        }
        return put_i64(b, rescale(v, n->unit, o->ts_mode - TS_EPOCH_S));
    }
    case K_DUR:
        return put_duration(b, int_of(n, i), n->unit);
    case K_AVRO: case K_LAVRO:
        bytes_of(n, i, &p, &len);
        return json_avro(n, p, len, b, o);
    case K_STRUCT:
        if (putc1(b, '{') < 0) return -1;
        for (int64_t c = 0; c < n->n_children; c++) {
            const Node *ch = &n->children[c];
            if (c && putc1(b, ',') < 0) return -1;
            if (put(b, ch->key, ch->key_len) < 0) return -1;
            if (json_value(ch, n->offset + i, b, o) < 0) return -1;
        }
        return putc1(b, '}');
    case K_LIST: case K_LLIST: case K_FLIST: {
        int64_t s = list_start(n, i), e = list_end(n, i);
        if (putc1(b, '[') < 0) return -1;
        for (int64_t k = s; k < e; k++) {
            if (k > s && putc1(b, ',') < 0) return -1;
            if (json_value(&n->children[0], k, b, o) < 0) return -1;
        }
        return putc1(b, ']');
    }
    case K_MAP: {
        const Node *ent = &n->children[0];
        int64_t s = list_start(n, i), e = list_end(n, i);
        if (putc1(b, '{') < 0) return -1;
        for (int64_t k = s; k < e; k++) {
            if (k > s && putc1(b, ',') < 0) return -1;
            int64_t at = ent->offset + k;
            if (json_map_key(&ent->children[0], at, b, o) < 0) return -1;
            if (putc1(b, ':') < 0) return -1;
            if (json_value(&ent->children[1], at, b, o) < 0) return -1;
        }
        return putc1(b, '}');
    }
    }
    PyErr_SetString(PyExc_TypeError, "unhandled Arrow type");
    return -1;
}

/* ------------------------------------------------------------------ Avro binary */

static inline int put_varint(Buf *b, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    RESERVE(b, 10);
    char *o = b->p + b->len;
    int k = 0;
    while (z >= 0x80) {
        o[k++] = (char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    o[k++] = (char)z;
    b->len += (size_t)k;
    return 0;
}

static int avro_decimal(Buf *b, const uint8_t *p) {
    /* Avro decimal on bytes: big-endian two's complement, as short as the value allows. */
    uint8_t be[16];
    for (int k = 0; k < 16; k++) be[k] = p[15 - k];
    int start = 0;
    while (start < 15) {
        uint8_t fill = (be[start] == 0x00) ? 0x00 : (be[start] == 0xff ? 0xff : 0x01);
        if (fill == 0x01 || (be[start + 1] & 0x80) != (fill & 0x80)) break;
        start++;
    }
    if (put_varint(b, 16 - start) < 0) return -1;
    return put(b, be + start, (size_t)(16 - start));
}

static int avro_value(const Node *n, int64_t i, Buf *b, int top) {
    if (n->kind == K_NULL) return 0; /* Avro "null", never in a union */
    if (n->nullable && !top) {
        if (!is_valid(n, i)) return putc1(b, 0x00);
        if (putc1(b, 0x02) < 0) return -1;
    }
    int64_t j = n->offset + i;
    const uint8_t *p;
    size_t len;
    switch (n->kind) {
    case K_NULL:
        return 0;
    case K_BOOL:
        return putc1(b, (char)((n->values[j >> 3] >> (j & 7)) & 1));
    case K_I8: case K_U8: case K_I16: case K_U16: case K_I32: case K_U32: case K_I64:
    case K_DATE32: case K_DUR:
        return put_varint(b, int_of(n, i));
    case K_U64: {
        uint64_t u = ((const uint64_t *)n->values)[j];
        if (u > (uint64_t)INT64_MAX) {
            PyErr_Format(PyExc_OverflowError, "uint64 value %llu does not fit an Avro long",
                         (unsigned long long)u);
            return -1;
        }
        return put_varint(b, (int64_t)u);
    }
    case K_DATE64:
        return put_varint(b, floordiv(int_of(n, i), 86400000));
    case K_TIME32:
        return put_varint(b, n->unit == 0 ? int_of(n, i) * 1000 : int_of(n, i));
    case K_TIME64:
        return put_varint(b, n->unit == 3 ? floordiv(int_of(n, i), 1000) : int_of(n, i));
    case K_TS:
        return put_varint(b, n->unit == 0 ? int_of(n, i) * 1000 : int_of(n, i));
    case K_F32:
        return put(b, n->values + 4 * j, 4);
    case K_F64:
        return put(b, n->values + 8 * j, 8);
    case K_STR: case K_LSTR: case K_BIN: case K_LBIN: case K_AVRO: case K_LAVRO:
        bytes_of(n, i, &p, &len);
        if (put_varint(b, (int64_t)len) < 0) return -1;
        return put(b, p, len);
    case K_FBIN:
        bytes_of(n, i, &p, &len);
        return put(b, p, len);
    case K_DEC:
        return avro_decimal(b, n->values + 16 * j);
    case K_STRUCT:
        for (int64_t c = 0; c < n->n_children; c++) {
            if (avro_value(&n->children[c], n->offset + i, b, 0) < 0) return -1;
        }
        return 0;
    case K_LIST: case K_LLIST: case K_FLIST: case K_MAP: {
        int64_t s = list_start(n, i), e = list_end(n, i);
        if (e > s) {
            if (put_varint(b, e - s) < 0) return -1;
            const Node *item = &n->children[0];
            for (int64_t k = s; k < e; k++) {
                /* map entries are struct<key, value>: never null, no union branch */
                if (avro_value(item, k, b, n->kind == K_MAP) < 0) return -1;
            }
        }
        return putc1(b, 0x00);
    }
    }
    PyErr_SetString(PyExc_TypeError, "unhandled Arrow type");
    return -1;
}

/* ------------------------------------------------------------------ entry points */

typedef struct {
    struct ArrowSchema *schema;
    struct ArrowArray *array;
    Node root;
} Batch;

static int batch_open(Batch *bt, PyObject *schema_cap, PyObject *array_cap) {
    memset(bt, 0, sizeof(*bt));
    bt->schema = PyCapsule_GetPointer(schema_cap, "arrow_schema");
    if (!bt->schema) return -1;
    bt->array = PyCapsule_GetPointer(array_cap, "arrow_array");
    if (!bt->array) return -1;
    if (strcmp(bt->schema->format, "+s") != 0) {
        PyErr_SetString(PyExc_TypeError, "expected a record batch (struct array)");
        return -1;
    }
    return node_init(&bt->root, bt->schema, bt->array);
}

enum { MODE_OBJECT = 0, MODE_BARE = 1, MODE_ARRAY = 2 };

/* Keeping the allocator's memory mapped between batches.
 *
 * A batch's values are a million small `bytes` in CPython's small-object arenas (1 MiB each).
 * When the daemon drops a batch's values, its arenas empty and go back to the kernel, and the
 * next batch maps fresh ones: a page fault and a zeroed page every 4 KiB, a fifth of the time
 * of Parquet -> json. So every PIN_EVERY-th value is copied once more into `pins`, a list the
 * encoder keeps until its next batch: the copy lands in the same pool, hence the same arena, as
 * its neighbours, and each arena that holds one stays mapped for the next batch to fill. The
 * cost is one batch's worth of memory held between batches. */
#define PIN_EVERY 1024

static int pin(PyObject *pins, int64_t i, const char *p, size_t len) {
    if (!pins || (i % PIN_EVERY) != 0) return 0;
    PyObject *copy = PyBytes_FromStringAndSize(p, (Py_ssize_t)len);
    if (!copy) return -1;
    int rc = PyList_Append(pins, copy);
    Py_DECREF(copy);
    return rc;
}

/* json_rows(schema_capsule, array_capsule, ts_mode, decimal_as_number, int64_as_string, mode)
 *   MODE_OBJECT: one JSON object per row.
 *   MODE_BARE: the first column's value per row; strings and binaries raw, JSON strings
 *              unquoted, null rows give None (message keys).
 *   MODE_ARRAY: a JSON array of the columns' values per row. */
static PyObject *json_rows(PyObject *self, PyObject *args) {
    PyObject *scap, *acap;
    JsonOpts o;
    int mode;
    PyObject *pins = NULL;
    if (!PyArg_ParseTuple(args, "OOiiii|O", &scap, &acap, &o.ts_mode, &o.decimal_as_number,
                          &o.int64_as_string, &mode, &pins))
        return NULL;
    if (pins == Py_None) pins = NULL;
    if (pins && !PyList_Check(pins)) {
        PyErr_SetString(PyExc_TypeError, "pins must be a list");
        return NULL;
    }
    Batch bt;
    if (batch_open(&bt, scap, acap) < 0) {
        node_free(&bt.root);
        return NULL;
    }
    int64_t n = bt.array->length;
    PyObject *out = PyList_New((Py_ssize_t)n);
    Buf b = {0};
    if (!out) goto fail;
    const Node *root = &bt.root;
    for (int64_t i = 0; i < n; i++) {
        share_gil(i);
        b.len = 0;
        PyObject *item;
        if (mode == MODE_BARE) {
            const Node *c = &root->children[0];
            if (c->kind == K_NULL || !is_valid(c, i)) {
                Py_INCREF(Py_None);
                PyList_SET_ITEM(out, (Py_ssize_t)i, Py_None);
                continue;
            }
            if (c->kind == K_STR || c->kind == K_LSTR || c->kind == K_BIN || c->kind == K_LBIN ||
                c->kind == K_FBIN) {
                const uint8_t *p;
                size_t len;
                bytes_of(c, i, &p, &len);
                item = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len);
            } else {
                if (json_value(c, root->offset + i, &b, &o) < 0) goto fail;
                size_t s = 0, e = b.len;
                if (e >= 2 && b.p[0] == '"' && b.p[e - 1] == '"') s = 1, e -= 1;
                item = PyBytes_FromStringAndSize(b.p + s, (Py_ssize_t)(e - s));
            }
        } else {
            int array = mode == MODE_ARRAY;
            if (putc1(&b, array ? '[' : '{') < 0) goto fail;
            for (int64_t c = 0; c < root->n_children; c++) {
                const Node *ch = &root->children[c];
                if (c && putc1(&b, ',') < 0) goto fail;
                if (!array && put(&b, ch->key, ch->key_len) < 0) goto fail;
                if (json_value(ch, root->offset + i, &b, &o) < 0) goto fail;
            }
            if (putc1(&b, array ? ']' : '}') < 0) goto fail;
            item = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
        }
        if (!item) goto fail;
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
        if (mode != MODE_BARE && pin(pins, i, b.p, b.len) < 0) goto fail;
    }
    free(b.p);
    node_free(&bt.root);
    return out;
fail:
    free(b.p);
    node_free(&bt.root);
    Py_XDECREF(out);
    return NULL;
}

/* avro_rows(schema_capsule, array_capsule, prefix): prefix + Avro binary of each row. */
static PyObject *avro_rows(PyObject *self, PyObject *args) {
    PyObject *scap, *acap;
    const char *prefix;
    Py_ssize_t prefix_len;
    PyObject *pins = NULL;
    if (!PyArg_ParseTuple(args, "OOy#|O", &scap, &acap, &prefix, &prefix_len, &pins)) return NULL;
    if (pins == Py_None) pins = NULL;
    if (pins && !PyList_Check(pins)) {
        PyErr_SetString(PyExc_TypeError, "pins must be a list");
        return NULL;
    }
    Batch bt;
    if (batch_open(&bt, scap, acap) < 0) {
        node_free(&bt.root);
        return NULL;
    }
    int64_t n = bt.array->length;
    PyObject *out = PyList_New((Py_ssize_t)n);
    Buf b = {0};
    if (!out) goto fail;
    for (int64_t i = 0; i < n; i++) {
        share_gil(i);
        b.len = 0;
        if (put(&b, prefix, (size_t)prefix_len) < 0) goto fail;
        if (avro_value(&bt.root, i, &b, 1) < 0) goto fail;
        PyObject *item = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
        if (!item) goto fail;
        if (pin(pins, i, b.p, b.len) < 0) {
            Py_DECREF(item);
            goto fail;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, item);
    }
    free(b.p);
    node_free(&bt.root);
    return out;
fail:
    free(b.p);
    node_free(&bt.root);
    Py_XDECREF(out);
    return NULL;
}

/* ------------------------------------------------------------------ splitting Avro blocks */

/* A schema program is an int32 array of nodes; a node starts with its opcode:
 *   OP_NULL, OP_BOOL, OP_VARINT (int, long), OP_FLOAT, OP_DOUBLE, OP_BYTES, OP_STRING,
 *   OP_ENUM n_symbols, OP_FIXED size, OP_RECORD n field..., OP_ARRAY item, OP_MAP value,
 *   OP_UNION n branch...
 * Records are split without being decoded, so what a decoder would refuse is checked here:
 * a boolean byte other than 0 or 1, a string that is not UTF-8, an enum index out of range.
 * where field, item, value and branch are indices of other nodes (so named types may recur). */
/* Recursive records nest as deep as their data: a linked list of 2,000 items is 4,000 levels
 * (union, record). Bounded so that a hostile file cannot exhaust a worker thread's C stack
 * (a few hundred bytes a level). */
#define AVRO_MAX_DEPTH 4000

enum { OP_NULL, OP_BOOL, OP_VARINT, OP_FLOAT, OP_DOUBLE, OP_BYTES, OP_FIXED, OP_RECORD,
       OP_ARRAY, OP_MAP, OP_UNION, OP_STRING, OP_ENUM };

typedef struct {
    const uint8_t *p;
    size_t pos, len;
    const int32_t *prog;
    size_t prog_len;
    int depth;
} Reader;

static int read_varint(Reader *r, int64_t *out) {
    uint64_t v = 0;
    int shift = 0;
    while (r->pos < r->len && shift < 70) {
        uint8_t c = r->p[r->pos++];
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
            return 0;
        }
        shift += 7;
    }
    PyErr_SetString(PyExc_ValueError, "truncated or malformed Avro varint");
    return -1;
}

/* Well-formed UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static int utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += len;
    }
    return 1;
}

static int skip(Reader *r, size_t n) {
    if (n > r->len - r->pos) {
        PyErr_SetString(PyExc_ValueError, "Avro data ends inside a value");
        return -1;
    }
    r->pos += n;
    return 0;
}

/* Items of no bytes (nulls, empty records) an array may hold; a count past it is corrupt. */
#define MAX_EMPTY_ITEMS (1LL << 24)

static int skip_value(Reader *r, int32_t node) {
    if (node < 0 || (size_t)node >= r->prog_len) {
        PyErr_SetString(PyExc_ValueError, "bad Avro schema program");
        return -1;
    }
    if (++r->depth > AVRO_MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "Avro value nested more than 4000 levels deep");
        return -1;
    }
    const int32_t *op = r->prog + node;
    int64_t v;
    int rc = 0;
    switch (op[0]) {
    case OP_NULL: break;
    case OP_BOOL:
        if ((rc = skip(r, 1)) == 0 && r->p[r->pos - 1] > 1) {
            PyErr_SetString(PyExc_ValueError, "Avro boolean that is neither 0 nor 1");
            rc = -1;
        }
        break;
    case OP_ENUM:
        rc = read_varint(r, &v);
        if (rc == 0 && (v < 0 || v >= op[1])) {
            PyErr_Format(PyExc_ValueError, "Avro enum index %lld out of range", (long long)v);
            rc = -1;
        }
        break;
    case OP_VARINT: rc = read_varint(r, &v); break;
    case OP_FLOAT: rc = skip(r, 4); break;
    case OP_DOUBLE: rc = skip(r, 8); break;
    case OP_BYTES: case OP_STRING:
        rc = read_varint(r, &v);
        if (rc == 0 && v < 0) {
            PyErr_SetString(PyExc_ValueError, "negative Avro length");
            rc = -1;
        }
        if (rc == 0) rc = skip(r, (size_t)v);
        if (rc == 0 && op[0] == OP_STRING &&
            !utf8_valid((const uint8_t *)r->p + r->pos - (size_t)v, (size_t)v)) {
            PyErr_SetString(PyExc_ValueError, "Avro string that is not UTF-8");
            rc = -1;
        }
        break;
    case OP_FIXED: rc = skip(r, (size_t)op[1]); break;
    case OP_RECORD:
        for (int32_t k = 0; k < op[1] && rc == 0; k++) rc = skip_value(r, op[2 + k]);
        break;
    case OP_ARRAY: case OP_MAP:
        for (;;) {
            if ((rc = read_varint(r, &v)) < 0) break;
            if (v == 0) break;
            if (v < 0) {
                int64_t size;
                /* a negative count is followed by the block's size in bytes: skip it whole */
                if ((rc = read_varint(r, &size)) < 0) break;
                if ((rc = skip(r, (size_t)size)) < 0) break;
                continue;
            }
            if (op[0] == OP_ARRAY && v > (int64_t)(r->len - r->pos)) {
                /* more items than bytes left: only items that take no bytes (null, an empty
                 * record) can be there, and a corrupt count of those would loop for ages */
                size_t before = r->pos;
                if ((rc = skip_value(r, op[1])) < 0) break;
                if (r->pos != before || v > MAX_EMPTY_ITEMS) {
                    PyErr_Format(PyExc_ValueError, "Avro array of %lld items in %zu bytes",
                                 (long long)v, r->len - before);
                    rc = -1;
                    break;
                }
                continue; /* v items of no bytes each: nothing more to skip */
            }
            for (int64_t k = 0; k < v && rc == 0; k++) {
                if (op[0] == OP_MAP) {
                    int64_t klen;
                    if ((rc = read_varint(r, &klen)) < 0) break;
                    if ((rc = skip(r, (size_t)klen)) < 0) break;
                }
                rc = skip_value(r, op[1]);
            }
            if (rc < 0) break;
        }
        break;
    case OP_UNION:
        rc = read_varint(r, &v);
        if (rc == 0 && (v < 0 || v >= op[1])) {
            PyErr_Format(PyExc_ValueError, "Avro union branch %lld out of range", (long long)v);
            rc = -1;
        }
        if (rc == 0) rc = skip_value(r, op[2 + v]);
        break;
    default:
        PyErr_SetString(PyExc_ValueError, "bad Avro schema program");
        rc = -1;
    }
    r->depth--;
    return rc;
}

/* split_avro_block(program, block, count, prefix): prefix + each of the `count` records. */
static PyObject *split_avro_block(PyObject *self, PyObject *args) {
    Py_buffer prog, block;
    Py_ssize_t count;
    const char *prefix;
    Py_ssize_t prefix_len;
    if (!PyArg_ParseTuple(args, "y*y*ny#", &prog, &block, &count, &prefix, &prefix_len))
        return NULL;
    PyObject *out = NULL;
    Reader r = {block.buf, 0, (size_t)block.len, prog.buf, (size_t)prog.len / 4, 0};
    out = PyList_New(count);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        size_t start = r.pos;
        if (skip_value(&r, 0) < 0) {
            Py_CLEAR(out);
            goto done;
        }
        PyObject *item = PyBytes_FromStringAndSize(NULL, prefix_len + (Py_ssize_t)(r.pos - start));
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        char *dst = PyBytes_AS_STRING(item);
        memcpy(dst, prefix, (size_t)prefix_len);
        memcpy(dst + prefix_len, r.p + start, r.pos - start);
        PyList_SET_ITEM(out, i, item);
    }
    if (r.pos != r.len) {
        PyErr_Format(PyExc_ValueError, "Avro block has %zu bytes after its %zd records",
                     r.len - r.pos, count);
        Py_CLEAR(out);
    }
done:
    PyBuffer_Release(&prog);
    PyBuffer_Release(&block);
    return out;
}

/* ------------------------------------------------------------------ Avro values as JSON */

/* Opcodes of the JSON program compiled by avro_json.py (int32 words, then a string area). */
enum { J_NULL, J_BOOL, J_INT, J_LONG, J_FLOAT, J_DOUBLE, J_STRING, J_BYTES, J_FIXED,
       J_DEC_BYTES, J_DEC_FIXED, J_DATE, J_TIME, J_TS, J_DURATION, J_ENUM, J_RECORD, J_ARRAY,
       J_MAP, J_UNION };

typedef struct {
    Reader r;             /* the value's bytes; r.prog and r.prog_len: the program's words */
    const char *strings;
    size_t strings_len;
    const JsonOpts *o;
} AvroJson;

static int aj_fail(const char *what) {
    PyErr_SetString(PyExc_ValueError, what);
    return -1;
}

/* The program's words at `node`, checked to hold `n` of them. */
static const int32_t *aj_words(const AvroJson *a, int32_t node, int64_t n) {
    if (node < 0 || n < 1 || (size_t)node + (size_t)n > a->r.prog_len) {
        aj_fail("bad Avro JSON program");
        return NULL;
    }
    return a->r.prog + node;
}

static int aj_text(const AvroJson *a, Buf *b, int32_t at, int32_t len) {
    if (at < 0 || len < 0 || (size_t)at + (size_t)len > a->strings_len)
        return aj_fail("bad Avro JSON program");
    return put(b, a->strings + at, (size_t)len);
}

static int aj_bytes(AvroJson *a, size_t n, const uint8_t **p) {
    *p = a->r.p + a->r.pos;
    return skip(&a->r, n);
}

static int aj_length(AvroJson *a, size_t *n) {
    int64_t v;
    if (read_varint(&a->r, &v) < 0) return -1;
    if (v < 0) return aj_fail("negative Avro length");
    *n = (size_t)v;
    return 0;
}

/* An Avro decimal (big-endian two's complement, any length that fits 128 bits) as put_decimal
 * reads it: 16 bytes, little-endian. */
static int aj_decimal(AvroJson *a, Buf *b, const uint8_t *p, size_t n, int scale) {
    uint8_t le[16];
    uint8_t fill = (n && (p[0] & 0x80)) ? 0xff : 0x00;
    for (size_t k = 16; k < n; k++) {
        if (p[n - 1 - k] != fill) return aj_fail("decimal wider than 128 bits");
    }
    for (size_t k = 0; k < 16; k++) le[k] = k < n ? p[n - 1 - k] : fill;
    if (!a->o->decimal_as_number && putc1(b, '"') < 0) return -1;
    if (put_decimal(b, le, scale) < 0) return -1;
    return a->o->decimal_as_number ? 0 : putc1(b, '"');
}

static int avro_json(AvroJson *a, int32_t node, Buf *b);

static int avro_json_items(AvroJson *a, int32_t item, Buf *b, int map) {
    int first = 1;
    for (;;) {
        int64_t count, size;
        if (read_varint(&a->r, &count) < 0) return -1;
        if (count == 0) return 0;
        if (count < 0) {
            if (count == INT64_MIN) return aj_fail("bad Avro block count");
            count = -count;
            if (read_varint(&a->r, &size) < 0) return -1; /* the block's size: not needed */
        }
        for (int64_t k = 0; k < count; k++) {
            if (!first && putc1(b, ',') < 0) return -1;
            first = 0;
            if (map) {
                size_t n;
                const uint8_t *p;
                if (aj_length(a, &n) < 0 || aj_bytes(a, n, &p) < 0) return -1;
                if (json_string(b, p, n) < 0 || putc1(b, ':') < 0) return -1;
            }
            if (avro_json(a, item, b) < 0) return -1;
        }
    }
}

static int avro_json_node(AvroJson *a, int32_t node, Buf *b) {
    const int32_t *op = aj_words(a, node, 1);
    if (!op) return -1;
    const JsonOpts *o = a->o;
    const uint8_t *p;
    size_t n;
    int64_t v;
    switch (op[0]) {
    case J_NULL:
        return put(b, "null", 4);
    case J_BOOL:
        if (aj_bytes(a, 1, &p) < 0) return -1;
        if (*p > 1) return aj_fail("Avro boolean that is neither 0 nor 1");
        return *p ? put(b, "true", 4) : put(b, "false", 5);
    case J_INT:
        if (read_varint(&a->r, &v) < 0) return -1;
        return put_i64(b, v);
    case J_LONG:
        if (read_varint(&a->r, &v) < 0) return -1;
        if (!o->int64_as_string) return put_i64(b, v);
        if (putc1(b, '"') < 0 || put_i64(b, v) < 0) return -1;
        return putc1(b, '"');
    case J_FLOAT: {
        float f;
        if (aj_bytes(a, 4, &p) < 0) return -1;
        memcpy(&f, p, 4);
        return put_float(b, f);
    }
    case J_DOUBLE: {
        double d;
        if (aj_bytes(a, 8, &p) < 0) return -1;
        memcpy(&d, p, 8);
        return put_double(b, d);
    }
    case J_STRING:
        if (aj_length(a, &n) < 0 || aj_bytes(a, n, &p) < 0) return -1;
        return json_string(b, p, n);
    case J_BYTES: case J_FIXED:
        if (op[0] == J_BYTES) {
            if (aj_length(a, &n) < 0) return -1;
        } else {
            if (!(op = aj_words(a, node, 2))) return -1;
            n = (size_t)op[1];
        }
        if (aj_bytes(a, n, &p) < 0) return -1;
        if (putc1(b, '"') < 0 || put_base64(b, p, n) < 0) return -1;
        return putc1(b, '"');
    case J_DEC_BYTES:
        if (!(op = aj_words(a, node, 2))) return -1;
        if (aj_length(a, &n) < 0 || aj_bytes(a, n, &p) < 0) return -1;
        return aj_decimal(a, b, p, n, op[1]);
    case J_DEC_FIXED:
        if (!(op = aj_words(a, node, 3))) return -1;
        if (aj_bytes(a, (size_t)op[1], &p) < 0) return -1;
        return aj_decimal(a, b, p, (size_t)op[1], op[2]);
    case J_DATE: {
        Node day = {0};
        day.last_day = INT64_MIN;
        if (read_varint(&a->r, &v) < 0) return -1;
        if (putc1(b, '"') < 0 || put_day(&day, b, v) < 0) return -1;
        return putc1(b, '"');
    }
    case J_TIME: {
        /* nanoseconds, nine digits: the reader's Arrow columns hold Avro times as time64[ns] */
        if (!(op = aj_words(a, node, 2))) return -1;
        if (read_varint(&a->r, &v) < 0) return -1;
        int64_t ns = v * (op[1] == 1 ? 1000000 : 1000);
        if (v < 0 || ns >= 86400 * UNITS_PER_SEC[3]) return aj_fail("Avro time out of range");
        if (putc1(b, '"') < 0 || put_clock(b, ns / UNITS_PER_SEC[3], ns % UNITS_PER_SEC[3], 3) < 0)
            return -1;
        return putc1(b, '"');
    }
    case J_TS: {
        if (!(op = aj_words(a, node, 3))) return -1;
        if (op[1] < 1 || op[1] > 3) return aj_fail("bad Avro JSON program");
        if (read_varint(&a->r, &v) < 0) return -1;
        if (o->ts_mode != TS_ISO) return put_i64(b, rescale(v, op[1], o->ts_mode - TS_EPOCH_S));
        Node ts = {0};
        ts.last_day = INT64_MIN;
        ts.unit = op[1];
        ts.has_tz = op[2];
        if (putc1(b, '"') < 0 || put_timestamp_iso(&ts, b, v) < 0) return -1;
        return putc1(b, '"');
    }
    case J_DURATION: {
        /* months, days, milliseconds: three little-endian unsigned 32-bit integers */
        uint32_t f[3];
        if (aj_bytes(a, 12, &p) < 0) return -1;
        memcpy(f, p, 12);
        if (put(b, "\"P", 2) < 0 || put_u64(b, f[0]) < 0 || put(b, "M", 1) < 0) return -1;
        if (put_u64(b, f[1]) < 0 || put(b, "DT", 2) < 0 || put_u64(b, f[2] / 1000) < 0) return -1;
        RESERVE(b, 4);
        b->p[b->len++] = '.';
        digits(b->p + b->len, f[2] % 1000, 3);
        b->len += 3;
        return put(b, "S\"", 2);
    }
    case J_ENUM:
        if (!(op = aj_words(a, node, 2))) return -1;
        if (read_varint(&a->r, &v) < 0) return -1;
        if (v < 0 || v >= op[1]) return aj_fail("Avro enum index out of range");
        if (!(op = aj_words(a, node, 2 + 2 * (int64_t)op[1]))) return -1;
        return aj_text(a, b, op[2 + 2 * v], op[3 + 2 * v]);
    case J_RECORD:
        if (!(op = aj_words(a, node, 2))) return -1;
        if (!(op = aj_words(a, node, 2 + 3 * (int64_t)op[1]))) return -1;
        if (putc1(b, '{') < 0) return -1;
        for (int32_t k = 0; k < op[1]; k++) {
            if (k && putc1(b, ',') < 0) return -1;
            if (aj_text(a, b, op[2 + 3 * k], op[3 + 3 * k]) < 0) return -1;
            if (avro_json(a, op[4 + 3 * k], b) < 0) return -1;
        }
        return putc1(b, '}');
    case J_ARRAY:
        if (!(op = aj_words(a, node, 2))) return -1;
        if (putc1(b, '[') < 0 || avro_json_items(a, op[1], b, 0) < 0) return -1;
        return putc1(b, ']');
    case J_MAP:
        if (!(op = aj_words(a, node, 2))) return -1;
        if (putc1(b, '{') < 0 || avro_json_items(a, op[1], b, 1) < 0) return -1;
        return putc1(b, '}');
    case J_UNION: {
        if (!(op = aj_words(a, node, 3))) return -1;
        if (!(op = aj_words(a, node, 3 + 3 * (int64_t)op[1]))) return -1;
        if (read_varint(&a->r, &v) < 0) return -1;
        if (v < 0 || v >= op[1]) {
            PyErr_Format(PyExc_ValueError, "Avro union branch %lld out of range", (long long)v);
            return -1;
        }
        int32_t child = op[3 + 3 * v];
        const int32_t *branch = aj_words(a, child, 1);
        if (!branch) return -1;
        if (!op[2] || branch[0] == J_NULL) return avro_json(a, child, b);
        /* several non-null branches: {"<branch name>": value} (see avro_json.py) */
        if (aj_text(a, b, op[4 + 3 * v], op[5 + 3 * v]) < 0) return -1;
        if (avro_json(a, child, b) < 0) return -1;
        return putc1(b, '}');
    }
    }
    return aj_fail("bad Avro JSON program");
}

static int avro_json(AvroJson *a, int32_t node, Buf *b) {
    if (++a->r.depth > AVRO_MAX_DEPTH) return aj_fail("Avro value nested more than 4000 levels deep");
    int rc = avro_json_node(a, node, b);
    a->r.depth--;
    return rc;
}

static int json_avro(const Node *n, const uint8_t *p, size_t len, Buf *b, const JsonOpts *o) {
    AvroJson a;
    a.r.p = p;
    a.r.pos = 0;
    a.r.len = len;
    a.r.prog = n->prog;
    a.r.prog_len = (size_t)n->prog_words;
    a.r.depth = 0;
    a.strings = (const char *)(n->prog + n->prog_words);
    a.strings_len = n->prog_bytes - 4 * (size_t)n->prog_words;
    a.o = o;
    if (avro_json(&a, n->prog_root, b) < 0) return -1;
    if (a.r.pos != len) {
        PyErr_Format(PyExc_ValueError, "Avro value has %zu bytes after its end", len - a.r.pos);
        return -1;
    }
    return 0;
}

/* wrap_avro_fields(program, block, count, wrap, programs): the decompressed block with each
 * top-level field whose byte in `wrap` is 1 turned into Avro "bytes" holding that field's own
 * encoding, so that a decoder told the field is "bytes" passes it through (avro_json.py).
 * `program` is compile_avro_schema's for the writer schema, a record; `programs` has the JSON
 * program of each wrapped field (None for the others), by which its values are checked. A
 * record that does not decode raises ValueError(reason, record index, field index). */
static PyObject *wrap_avro_fields(PyObject *self, PyObject *args) {
    Py_buffer prog, block, wrap;
    Py_ssize_t count;
    PyObject *programs;
    if (!PyArg_ParseTuple(args, "y*y*ny*O", &prog, &block, &count, &wrap, &programs)) return NULL;
    PyObject *out = NULL;
    Buf b = {0}, scratch = {0};
    Node *json = NULL;
    int32_t nfields = 0;
    JsonOpts opts = {0, 0, 0};
    Reader r = {block.buf, 0, (size_t)block.len, prog.buf, (size_t)prog.len / 4, 0};
    const int32_t *root = r.prog;
    if (r.prog_len < 2 || root[0] != OP_RECORD || (size_t)root[1] + 2 > r.prog_len ||
        wrap.len != root[1]) {
        PyErr_SetString(PyExc_ValueError, "wrap_avro_fields: the program is not a record's, or "
                                          "`wrap` has not one byte per field");
        goto done;
    }
    const uint8_t *flags = wrap.buf;
    nfields = root[1];
    if (!PyTuple_Check(programs) || PyTuple_GET_SIZE(programs) != nfields) {
        PyErr_SetString(PyExc_ValueError, "wrap_avro_fields: `programs` is not a tuple with one "
                                          "JSON program (or None) per field");
        goto done;
    }
    json = calloc((size_t)(nfields ? nfields : 1), sizeof(Node));
    if (!json) {
        PyErr_NoMemory();
        goto done;
    }
    for (int32_t k = 0; k < nfields; k++) {
        PyObject *item = PyTuple_GET_ITEM(programs, k);
        if (item == Py_None) continue;
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) > INT32_MAX) {
            PyErr_SetString(PyExc_TypeError, "wrap_avro_fields: a JSON program is not bytes");
            goto done;
        }
        if (program_load(&json[k], PyBytes_AS_STRING(item), (int32_t)PyBytes_GET_SIZE(item)) < 0)
            goto done;
    }
    if (buf_grow(&b, (size_t)block.len + (size_t)count * 2 + 16) < 0) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        for (int32_t k = 0; k < root[1]; k++) {
            size_t start = r.pos;
            int rc;
            if (flags[k] && json[k].prog) {
                /* walked as the JSON encoder will walk it: what it would refuse, refused here,
                 * where the error can name the file, block and field */
                AvroJson a = {{r.p, r.pos, r.len, json[k].prog, (size_t)json[k].prog_words, 0},
                              (const char *)(json[k].prog + json[k].prog_words),
                              json[k].prog_bytes - 4 * (size_t)json[k].prog_words, &opts};
                scratch.len = 0;
                rc = avro_json(&a, json[k].prog_root, &scratch);
                r.pos = a.r.pos;
            } else {
                rc = skip_value(&r, root[2 + k]);
            }
            if (rc < 0) {
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyErr_NormalizeException(&type, &value, &tb);
                PyObject *reason = value ? PyObject_Str(value) : NULL;
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                if (!reason) goto done;
                PyObject *exc_args = Py_BuildValue("(Nni)", reason, i, k);
                if (exc_args) {
                    PyErr_SetObject(PyExc_ValueError, exc_args);
                    Py_DECREF(exc_args);
                }
                goto done;
            }
            if (flags[k] && put_varint(&b, (int64_t)(r.pos - start)) < 0) goto done;
            if (put(&b, r.p + start, r.pos - start) < 0) goto done;
        }
    }
    if (r.pos != r.len) {
        PyObject *exc_args = Py_BuildValue("(Nni)", PyUnicode_FromFormat(
            "%zu bytes after the block's %zd records", r.len - r.pos, count), count, -1);
        if (exc_args) {
            PyErr_SetObject(PyExc_ValueError, exc_args);
            Py_DECREF(exc_args);
        }
        goto done;
    }
    out = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
done:
    if (json) {
        for (int32_t k = 0; k < nfields; k++) node_free(&json[k]);
        free(json);
    }
    free(b.p);
    free(scratch.p);
    PyBuffer_Release(&prog);
    PyBuffer_Release(&block);
    PyBuffer_Release(&wrap);
    return out;
}

static PyMethodDef methods[] = {
    {"json_rows", json_rows, METH_VARARGS, "JSON text of each row of an Arrow record batch."},
    {"avro_rows", avro_rows, METH_VARARGS, "prefix + Avro binary of each row of a record batch."},
    {"split_avro_block", split_avro_block, METH_VARARGS,
     "prefix + each record of a decompressed Avro block."},
    {"wrap_avro_fields", wrap_avro_fields, METH_VARARGS,
     "a decompressed Avro block with chosen top-level fields wrapped as bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rows", NULL, -1, methods};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&module); }
