/* Kafka record batches (message format v2) built in bulk: the committer's hot path.
 *
 * Appending rows one at a time to aiokafka's batch builder, and hashing keys with its
 * pure-Python murmur2, costs a Python call per row on the event loop; at tens of thousands of
 * rows per unit that is the daemon's ceiling. This module takes a unit's rows as lists, places
 * each row on a partition index as Kafka's default partitioner does, splits each index's rows
 * into batches no larger than the producer's limit and writes their records, one bytearray per
 * batch, in one call. `finish` later writes the batch header (producer state and CRC) into the
 * same buffer, once the producer knows its sequence numbers (batches.py, PrebuiltBatch).
 *
 * The byte layout is Kafka's (KIP-98, DefaultRecordBatch.java) and byte for byte what
 * aiokafka's DefaultRecordBatchBuilder writes for the same records and timestamp: every
 * record carries timestampDelta 0, the batch's timestamp being its first and max timestamp.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define HAVE_SSE42_CRC 1
#endif

#define HEADER_SIZE 61       /* the v2 batch header, before the first record */
#define CRC_OFFSET 17        /* baseOffset(8) batchLength(4) partitionLeaderEpoch(4) magic(1) */
#define CRC_FROM 21          /* the CRC covers attributes to the end */
#define LENGTH_FROM 12       /* batchLength counts from partitionLeaderEpoch to the end */

/* Below these amounts of work a call keeps the GIL: taking it back can wait for another
 * thread's switch interval (5 ms), far more than a small batch costs. */
#define RELEASE_MIN_ROWS 2048
#define RELEASE_MIN_BYTES (256 * 1024)

/* ------------------------------------------------------------------ murmur2 */

/* Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit value:
 * the default partitioner takes `(hash & 0x7fffffff) % partitions`. */
static uint32_t murmur2_hash(const uint8_t *data, size_t length) {
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28cU ^ (uint32_t)length;
    size_t whole = length & ~(size_t)3;
    for (size_t i = 0; i < whole; i += 4) {
        uint32_t k = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
                     (uint32_t)data[i + 2] << 16 | (uint32_t)data[i + 3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)data[whole + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[whole + 1] << 8;
        /* fall through */
    case 1:
        h ^= (uint32_t)data[whole];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

/* ------------------------------------------------------------------ CRC-32C */

/* Castagnoli polynomial, reflected. The tables serve CPUs without SSE 4.2 (slicing by 8). */
static uint32_t crc_table[8][256];

static void crc_table_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82f63b78U : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xff];
}

static uint32_t crc32c_sw(const uint8_t *p, size_t n) {
    uint32_t crc = 0xffffffffU;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
              crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

#ifdef HAVE_SSE42_CRC
/* The SSE 4.2 `crc32` instruction computes exactly CRC-32C. Compiled for that target alone, so
 * that the module builds for any x86-64 and calls this only where the CPU has it. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(const uint8_t *p, size_t n) {
    uint64_t crc = 0xffffffffU;
    while (n && ((uintptr_t)p & 7)) {
        crc = _mm_crc32_u8((uint32_t)crc, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = _mm_crc32_u64(crc, word);
        p += 8;
        n -= 8;
    }
    while (n--) crc = _mm_crc32_u8((uint32_t)crc, *p++);
    return ~(uint32_t)crc;
}
#endif

static uint32_t (*crc32c_fast)(const uint8_t *, size_t) = crc32c_sw;

/* ------------------------------------------------------------------ varints */

static inline uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }

static inline int64_t varint_size(int64_t v) {
    uint64_t z = zigzag(v);
    int64_t n = 1;
    while (z >= 0x80) {
        z >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *put_varint(uint8_t *p, int64_t v) {
    uint64_t z = zigzag(v);
    while (z >= 0x80) {
        *p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *p++ = (uint8_t)z;
    return p;
}

/* a length-prefixed field: length -1 for None */
static inline uint8_t *put_field(uint8_t *p, const char *s, Py_ssize_t len) {
    if (len < 0) {
        *p++ = 1; /* zigzag(-1) */
        return p;
    }
    p = put_varint(p, len);
    memcpy(p, s, (size_t)len);
    return p + len;
}

static inline int64_t field_size(Py_ssize_t len) { return len < 0 ? 1 : varint_size(len) + len; }

/* ------------------------------------------------------------------ the rows, as C sees them */

typedef struct {
    const char *key;
    Py_ssize_t key_len; /* -1: None */
    const char *value;
    Py_ssize_t value_len;
} Field2;

typedef struct {
    Field2 kv;
    Py_ssize_t header_start; /* into Rows.headers */
    Py_ssize_t header_count;
    int64_t rest;  /* the record's body bytes other than its offsetDelta varint */
    Py_ssize_t index; /* partition index */
} Row;

typedef struct {
    Py_ssize_t index;
    Py_ssize_t first; /* into the row order */
    Py_ssize_t count;
    Py_ssize_t size;
    uint8_t *out;
} Batch;

typedef struct {
    Py_ssize_t n;
    Row *rows;
    Field2 *headers;
    Py_ssize_t n_headers, cap_headers;
    PyObject **held; /* every object whose bytes are read without the GIL, one reference each */
    Py_ssize_t n_held, cap_held;
    Py_ssize_t *order; /* row numbers grouped by index, each group in input order */
    Batch *batches;
    Py_ssize_t n_batches;
    int64_t total_bytes;
} Rows;

static void rows_free(Rows *r) {
    for (Py_ssize_t i = 0; i < r->n_held; i++) Py_DECREF(r->held[i]);
    free(r->held);
    free(r->rows);
    free(r->headers);
    free(r->order);
    free(r->batches);
}

static int hold(Rows *r, PyObject *o) {
    if (r->n_held == r->cap_held) {
        Py_ssize_t cap = r->cap_held ? r->cap_held * 2 : 1024;
        PyObject **held = realloc(r->held, (size_t)cap * sizeof(PyObject *));
        if (!held) {
            PyErr_NoMemory();
            return -1;
        }
        r->held = held;
        r->cap_held = cap;
    }
    Py_INCREF(o);
    r->held[r->n_held++] = o;
    return 0;
}

static int too_long(Py_ssize_t len, const char *what, Py_ssize_t row) {
    if (len <= INT32_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s of row %zd has %zd bytes, more than a Kafka record holds",
                 what, row, len);
    return -1;
}

/* bytes or None into a field; `what` names it in errors */
static int take_bytes(Rows *r, PyObject *o, const char **s, Py_ssize_t *len, const char *what,
                      Py_ssize_t row) {
    if (o == Py_None) {
        *s = NULL;
        *len = -1;
        return 0;
    }
    if (!PyBytes_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s of row %zd is %.100s, not bytes or None", what, row,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    *s = PyBytes_AS_STRING(o);
    *len = PyBytes_GET_SIZE(o);
    if (too_long(*len, what, row) < 0) return -1;
    return hold(r, o);
}

static int add_header(Rows *r, PyObject *item, Py_ssize_t row) {
    if (!(PyTuple_Check(item) || PyList_Check(item)) || Py_SIZE(item) != 2) {
        PyErr_Format(PyExc_TypeError, "a header of row %zd is %.100s, not a (str, bytes) pair",
                     row, Py_TYPE(item)->tp_name);
        return -1;
    }
    PyObject *k = PySequence_Fast_GET_ITEM(item, 0), *v = PySequence_Fast_GET_ITEM(item, 1);
    if (!PyUnicode_Check(k)) {
        PyErr_Format(PyExc_TypeError, "a header key of row %zd is %.100s, not str", row,
                     Py_TYPE(k)->tp_name);
        return -1;
    }
    if (r->n_headers == r->cap_headers) {
        Py_ssize_t cap = r->cap_headers ? r->cap_headers * 2 : 256;
        Field2 *h = realloc(r->headers, (size_t)cap * sizeof(Field2));
        if (!h) {
            PyErr_NoMemory();
            return -1;
        }
        r->headers = h;
        r->cap_headers = cap;
    }
    Field2 *h = &r->headers[r->n_headers];
    /* the UTF-8 form is cached in the str, which stays alive while held */
    h->key = PyUnicode_AsUTF8AndSize(k, &h->key_len);
    if (!h->key || too_long(h->key_len, "a header key", row) < 0 || hold(r, k) < 0) return -1;
    if (take_bytes(r, v, &h->value, &h->value_len, "a header value", row) < 0) return -1;
    r->n_headers++;
    return 0;
}

/* The headers of one row: None or a sequence of (str, bytes | None). A row whose headers are
 * the previous row's object (an Avro block's rows share one) shares its entries. */
static int take_headers(Rows *r, Row *row, PyObject *hs, PyObject *prev_hs, const Row *prev,
                        Py_ssize_t i) {
    row->header_start = r->n_headers;
    row->header_count = 0;
    if (hs == Py_None) return 0;
    if (hs == prev_hs) {
        row->header_start = prev->header_start;
        row->header_count = prev->header_count;
        return 0;
    }
    PyObject *fast = PySequence_Fast(hs, "headers of a row must be a sequence of pairs");
    if (!fast) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t j = 0; j < count; j++) {
        if (add_header(r, PySequence_Fast_GET_ITEM(fast, j), i) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    row->header_count = count;
    return 0;
}

static int64_t rest_of(const Rows *r, const Row *row) {
    int64_t size = 2; /* attributes, timestampDelta 0 */
    size += field_size(row->kv.key_len) + field_size(row->kv.value_len);
    size += varint_size(row->header_count);
    for (Py_ssize_t j = 0; j < row->header_count; j++) {
        const Field2 *h = &r->headers[row->header_start + j];
        size += field_size(h->key_len) + field_size(h->value_len);
    }
    return size;
}

/* Read the lists while holding the GIL: pointers and sizes of every row's parts. */
static int take_rows(Rows *r, PyObject *values, PyObject *keys, PyObject *headers) {
    r->rows = malloc((size_t)(r->n ? r->n : 1) * sizeof(Row));
    if (!r->rows) {
        PyErr_NoMemory();
        return -1;
    }
    PyObject *prev_hs = NULL;
    for (Py_ssize_t i = 0; i < r->n; i++) {
        Row *row = &r->rows[i];
        PyObject *v = PySequence_Fast_GET_ITEM(values, i);
        if (take_bytes(r, v, &row->kv.value, &row->kv.value_len, "the value", i) < 0) return -1;
        row->kv.key = NULL;
        row->kv.key_len = -1;
        if (keys && take_bytes(r, PySequence_Fast_GET_ITEM(keys, i), &row->kv.key,
                               &row->kv.key_len, "the key", i) < 0)
            return -1;
        row->header_start = row->header_count = 0;
        if (headers) {
            PyObject *hs = PySequence_Fast_GET_ITEM(headers, i);
            if (take_headers(r, row, hs, prev_hs, i ? row - 1 : NULL, i) < 0) return -1;
            prev_hs = hs;
        }
        row->rest = rest_of(r, row);
    }
    return 0;
}

/* ------------------------------------------------------------------ placing and splitting */

/* Partition index of every row, then the rows grouped by index (indexes in order of first
 * appearance, rows in input order). Needs no GIL. Returns the number of groups, -1 when out of
 * memory; `group_first`/`group_count` get each group's span in r->order. */
static Py_ssize_t group_rows(Rows *r, int keyed, Py_ssize_t partitions, Py_ssize_t null_index,
                             Py_ssize_t **group_first, Py_ssize_t **group_count) {
    Py_ssize_t n = r->n, groups = 0;
    Py_ssize_t *slot_of = NULL, *slot = NULL, *first = NULL, *count = NULL;
    r->order = malloc((size_t)n * sizeof(Py_ssize_t));
    first = malloc((size_t)n * sizeof(Py_ssize_t));
    count = calloc((size_t)n, sizeof(Py_ssize_t));
    if (!r->order || !first || !count) goto oom;
    if (!keyed) {
        for (Py_ssize_t i = 0; i < n; i++) {
            r->rows[i].index = null_index;
            r->order[i] = i;
        }
        first[0] = 0;
        count[0] = n;
        groups = 1;
    } else {
        /* slot_of[index] = 1 + its group; slot[i] = row i's group */
        slot_of = calloc((size_t)partitions, sizeof(Py_ssize_t));
        slot = malloc((size_t)n * sizeof(Py_ssize_t));
        if (!slot_of || !slot) goto oom;
        for (Py_ssize_t i = 0; i < n; i++) {
            Row *row = &r->rows[i];
            Py_ssize_t index = null_index;
            if (row->kv.key_len >= 0)
                index = (Py_ssize_t)((murmur2_hash((const uint8_t *)row->kv.key,
                                                   (size_t)row->kv.key_len) & 0x7fffffffU) %
                                     (uint64_t)partitions);
            row->index = index;
            if (!slot_of[index]) slot_of[index] = ++groups;
            slot[i] = slot_of[index] - 1;
            count[slot[i]]++;
        }
        Py_ssize_t at = 0;
        for (Py_ssize_t g = 0; g < groups; g++) {
            first[g] = at;
            at += count[g];
        }
        Py_ssize_t *fill = slot_of; /* reused: each group's next place (groups <= partitions) */
        memcpy(fill, first, (size_t)groups * sizeof(Py_ssize_t));
        for (Py_ssize_t i = 0; i < n; i++) r->order[fill[slot[i]]++] = i;
        free(slot_of);
        free(slot);
    }
    *group_first = first;
    *group_count = count;
    return groups;
oom:
    free(slot_of);
    free(slot);
    free(first);
    free(count);
    return -1;
}

static inline int64_t record_size(const Row *row, Py_ssize_t offset) {
    int64_t body = row->rest + varint_size(offset);
    return body + varint_size(body);
}

/* Split each group into batches of at most `limit` bytes (header included), as aiokafka's
 * builder does: a record goes into the open batch unless that batch has a record already and
 * would outgrow the limit. Needs no GIL. */
static int plan_batches(Rows *r, Py_ssize_t groups, const Py_ssize_t *first,
                        const Py_ssize_t *count, Py_ssize_t limit) {
    r->batches = malloc((size_t)r->n * sizeof(Batch));
    if (!r->batches) return -1;
    Py_ssize_t nb = 0;
    int64_t total = 0;
    for (Py_ssize_t g = 0; g < groups; g++) {
        Batch *b = NULL;
        for (Py_ssize_t j = first[g]; j < first[g] + count[g]; j++) {
            const Row *row = &r->rows[r->order[j]];
            int64_t size = b ? record_size(row, b->count) : 0;
            if (!b || b->size + size > limit) {
                if (b) total += b->size;
                b = &r->batches[nb++];
                b->index = row->index;
                b->first = j;
                b->count = 0;
                b->size = HEADER_SIZE;
                size = record_size(row, 0);
            }
            b->count++;
            b->size += (Py_ssize_t)size;
        }
        if (b) total += b->size;
    }
    r->n_batches = nb;
    r->total_bytes = total;
    return 0;
}

/* Write a batch's records after its (zeroed) header. Needs no GIL. Returns the end. */
static uint8_t *write_batch(const Rows *r, const Batch *b) {
    uint8_t *p = b->out;
    memset(p, 0, HEADER_SIZE);
    p += HEADER_SIZE;
    for (Py_ssize_t offset = 0; offset < b->count; offset++) {
        const Row *row = &r->rows[r->order[b->first + offset]];
        p = put_varint(p, row->rest + varint_size(offset));
        *p++ = 0; /* attributes */
        *p++ = 0; /* timestampDelta */
        p = put_varint(p, offset);
        p = put_field(p, row->kv.key, row->kv.key_len);
        p = put_field(p, row->kv.value, row->kv.value_len);
        p = put_varint(p, row->header_count);
        for (Py_ssize_t j = 0; j < row->header_count; j++) {
            const Field2 *h = &r->headers[row->header_start + j];
            p = put_field(p, h->key, h->key_len);
            p = put_field(p, h->value, h->value_len);
        }
    }
    return p;
}

/* ------------------------------------------------------------------ build */

static PyObject *fast_list(PyObject *o, const char *name, Py_ssize_t n) {
    if (o == Py_None) return NULL;
    PyObject *fast = PySequence_Fast(o, name);
    if (fast && n >= 0 && PySequence_Fast_GET_SIZE(fast) != n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd items for %zd values", name,
                     PySequence_Fast_GET_SIZE(fast), n);
        Py_CLEAR(fast);
    }
    return fast;
}

/* build(values, keys, headers, partitions, null_index, max_batch_bytes, timestamp_ms):
 * [(index, record_count, bytearray)] for every batch, the header space left zero. */
static PyObject *build(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"values", "keys", "headers", "partitions", "null_index",
                             "max_batch_bytes", "timestamp_ms", NULL};
    PyObject *values_arg, *keys_arg, *headers_arg;
    Py_ssize_t partitions, null_index, limit;
    long long timestamp_ms; /* the caller's, for `finish`: records carry deltas of 0 */
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOnnnL:build", kwlist, &values_arg, &keys_arg,
                                     &headers_arg, &partitions, &null_index, &limit,
                                     &timestamp_ms))
        return NULL;
    (void)timestamp_ms;
    if (partitions < 1 || partitions > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "partitions must be 1 to 2**31-1, not %zd", partitions);
        return NULL;
    }
    if (null_index < 0 || null_index >= partitions) {
        PyErr_Format(PyExc_ValueError, "null_index %zd is not an index below partitions (%zd)",
                     null_index, partitions);
        return NULL;
    }
    if (limit < 1) {
        PyErr_Format(PyExc_ValueError, "max_batch_bytes must be positive, not %zd", limit);
        return NULL;
    }
    if (!PyList_Check(values_arg) && !PyTuple_Check(values_arg)) {
        PyErr_Format(PyExc_TypeError, "values must be a list of bytes, not %.100s",
                     Py_TYPE(values_arg)->tp_name);
        return NULL;
    }
    PyObject *values = NULL, *keys = NULL, *headers = NULL, *out = NULL;
    Py_ssize_t *group_first = NULL, *group_count = NULL;
    Rows r = {0};
    values = PySequence_Fast(values_arg, "values must be a list of bytes");
    if (!values) goto done;
    r.n = PySequence_Fast_GET_SIZE(values);
    keys = fast_list(keys_arg, "keys", r.n);
    if (!keys && PyErr_Occurred()) goto done;
    headers = fast_list(headers_arg, "headers", r.n);
    if (!headers && PyErr_Occurred()) goto done;
    if (r.n == 0) {
        out = PyList_New(0);
        goto done;
    }
    if (take_rows(&r, values, keys, headers) < 0) goto done;

    int failed = 0;
    Py_ssize_t groups;
    int release = keys && r.n >= RELEASE_MIN_ROWS;
    PyThreadState *ts = release ? PyEval_SaveThread() : NULL;
    groups = group_rows(&r, keys != NULL, partitions, null_index, &group_first, &group_count);
    if (groups < 0 || plan_batches(&r, groups, group_first, group_count, limit) < 0) failed = 1;
    if (ts) PyEval_RestoreThread(ts);
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }

    /* the bytearrays and the result, made before any is written: nobody else sees them yet */
    out = PyList_New(r.n_batches);
    if (!out) goto done;
    for (Py_ssize_t k = 0; k < r.n_batches; k++) {
        Batch *b = &r.batches[k];
        PyObject *buf = PyByteArray_FromStringAndSize(NULL, b->size);
        PyObject *item = buf ? Py_BuildValue("(nnN)", b->index, b->count, buf) : NULL;
        if (!item) {
            Py_CLEAR(out);
            goto done;
        }
        b->out = (uint8_t *)PyByteArray_AS_STRING(buf);
        PyList_SET_ITEM(out, k, item);
    }
    release = r.total_bytes >= RELEASE_MIN_BYTES;
    ts = release ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t k = 0; k < r.n_batches; k++)
        if (write_batch(&r, &r.batches[k]) != r.batches[k].out + r.batches[k].size) failed = 1;
    if (ts) PyEval_RestoreThread(ts);
    if (failed) {
        PyErr_SetString(PyExc_SystemError, "build: a batch's size was planned wrong");
        Py_CLEAR(out);
    }
done:
    rows_free(&r);
    free(group_first);
    free(group_count);
    Py_XDECREF(values);
    Py_XDECREF(keys);
    Py_XDECREF(headers);
    return out;
}

/* ------------------------------------------------------------------ finish */

static void put_be16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 3; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

static int in_int16(long v, const char *name) {
    if (v >= INT16_MIN && v <= INT16_MAX) return 0;
    PyErr_Format(PyExc_ValueError, "%s %ld does not fit Kafka's int16", name, v);
    return -1;
}

/* finish(buf, record_count, *, attributes, producer_id, producer_epoch, base_sequence,
 * first_timestamp, max_timestamp): the v2 header written into buf[0:61], CRC last. Runs on the
 * event loop, so it keeps the GIL: a 512 KiB CRC takes tens of microseconds. */
static PyObject *finish(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"buf", "record_count", "attributes", "producer_id",
                             "producer_epoch", "base_sequence", "first_timestamp",
                             "max_timestamp", NULL};
    Py_buffer view;
    int record_count, base_sequence;
    long attributes, producer_epoch;
    long long producer_id, first_timestamp, max_timestamp;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "w*i$lLliLL:finish", kwlist, &view,
                                     &record_count, &attributes, &producer_id, &producer_epoch,
                                     &base_sequence, &first_timestamp, &max_timestamp))
        return NULL;
    PyObject *result = NULL;
    if (view.len < HEADER_SIZE || view.len - LENGTH_FROM > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "finish: a batch of %zd bytes (it has a %d-byte header "
                     "and at most 2 GiB)", view.len, HEADER_SIZE);
        goto done;
    }
    if (record_count < 1) {
        PyErr_Format(PyExc_ValueError, "finish: record_count must be at least 1, not %d",
                     record_count);
        goto done;
    }
    if (in_int16(attributes, "attributes") < 0 || in_int16(producer_epoch, "producer_epoch") < 0)
        goto done;
    uint8_t *p = view.buf;
    put_be64(p, 0);                                         /* baseOffset */
    put_be32(p + 8, (uint32_t)(view.len - LENGTH_FROM));    /* batchLength */
    put_be32(p + 12, (uint32_t)-1);                         /* partitionLeaderEpoch */
    p[16] = 2;                                              /* magic */
    put_be16(p + 21, (uint16_t)attributes);
    put_be32(p + 23, (uint32_t)(record_count - 1));         /* lastOffsetDelta */
    put_be64(p + 27, (uint64_t)first_timestamp);
    put_be64(p + 35, (uint64_t)max_timestamp);
    put_be64(p + 43, (uint64_t)producer_id);
    put_be16(p + 51, (uint16_t)producer_epoch);
    put_be32(p + 53, (uint32_t)base_sequence);
    put_be32(p + 57, (uint32_t)record_count);
    put_be32(p + CRC_OFFSET, crc32c_fast(p + CRC_FROM, (size_t)(view.len - CRC_FROM)));
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ hashes for Python */

static PyObject *murmur2(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t h = murmur2_hash(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

static PyObject *crc_of(PyObject *arg, uint32_t (*fn)(const uint8_t *, size_t)) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t crc = fn(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyObject *crc32c(PyObject *self, PyObject *arg) { return crc_of(arg, crc32c_fast); }

static PyObject *crc32c_table(PyObject *self, PyObject *arg) { return crc_of(arg, crc32c_sw); }

static PyMethodDef methods[] = {
    {"murmur2", murmur2, METH_O, "Kafka's murmur2 of bytes, unsigned 32-bit (as aiokafka's)."},
    {"crc32c", crc32c, METH_O, "CRC-32C of a bytes-like object (SSE 4.2 where the CPU has it)."},
    {"_crc32c_sw", crc32c_table, METH_O, "CRC-32C by tables alone, the other CPUs' path."},
    {"build", (PyCFunction)(void (*)(void))build, METH_VARARGS | METH_KEYWORDS,
     "Rows placed on partition indexes and split into v2 record batches (headers left zero)."},
    {"finish", (PyCFunction)(void (*)(void))finish, METH_VARARGS | METH_KEYWORDS,
     "Write a v2 batch header, CRC included, into the first 61 bytes of a batch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_batches", NULL, -1, methods};

PyMODINIT_FUNC PyInit__batches(void) {
    crc_table_init();
    int hardware = 0;
#ifdef HAVE_SSE42_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc32c_fast = crc32c_hw;
        hardware = 1;
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddIntConstant(m, "HEADER_SIZE", HEADER_SIZE) < 0 ||
        PyModule_AddObjectRef(m, "CRC32C_HARDWARE", hardware ? Py_True : Py_False) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
