/*
 * Gorilla (Prometheus XOR chunk) codec for float samples.
 *
 * The byte layout matches chunk.Bytes() of Prometheus' tsdb/chunkenc XORChunk
 * (see tsdb/docs/format/chunks.md), bit for bit:
 *
 *   u16 big-endian   sample count
 *   varint           first timestamp (zig-zag, as Go's binary.PutVarint)
 *   64 bits          first value
 *   uvarint          second timestamp minus first (wrapping uint64)
 *   XOR value        second value
 *   then per sample  delta-of-delta timestamp + XOR value
 *
 * Delta-of-delta buckets (Prometheus chooses them asymmetric, -(2^(n-1)-1)
 * .. 2^(n-1), so they are two's complement of n bits with one extra value):
 *
 *   0                 '0'
 *   [-8191, 8192]     '10'   + 14 bits
 *   [-65535, 65536]   '110'  + 17 bits
 *   [-524287, 524288] '1110' + 20 bits
 *   otherwise         '1111' + 64 bits
 *
 * XOR value: '0' if unchanged; '10' + the meaningful bits if they fit inside
 * the previous leading/trailing-zero window; else '11' + 5 bits leading zeros
 * (capped at 31) + 6 bits significant-bit count (64 written as 0) + the bits.
 *
 * Bits are written most significant first.  Both directions work on 64-bit
 * words: the writer collects bits in an accumulator and stores whole
 * big-endian words; the reader loads the 8 bytes around its bit position, so
 * the input is copied into a zero-padded scratch buffer first and every
 * sample is bounds-checked against the real length after it is decoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define MAX_POINTS 65535
#define HEADER_BYTES 2
#define MAX_VARINT_BYTES 10
/* After the second sample: 4 + 64 bits of delta-of-delta, 2 + 5 + 6 + 64 bits of value. */
#define MAX_SAMPLE_BITS 145
/* Zero bytes after the copied input: one worst-case sample plus an 8-byte load. */
#define READ_PADDING 32

#if defined(__GNUC__) || defined(__clang__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

static inline uint64_t
load_be64(const uint8_t *p)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
#else
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
#endif
}

static inline void
store_be64(uint8_t *p, uint64_t v)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    memcpy(p, &v, 8);
#else
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
#endif
}

static inline unsigned
leading_zeros64(uint64_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_clzll(x);
#else
    unsigned n = 0;
    while (!(x & (UINT64_C(1) << 63))) {
        x <<= 1;
        n++;
    }
    return n;
#endif
}

static inline unsigned
trailing_zeros64(uint64_t x) /* x != 0 */
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctzll(x);
#else
    unsigned n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* ------------------------------------------------------------------ writer */

typedef struct {
    uint8_t *out;  /* where the next whole word is stored */
    uint64_t acc;  /* pending bits live in the low `nacc` bits; higher bits are stale */
    unsigned nacc; /* 0..63 */
} BitWriter;

/* Append the low `n` bits of `bits` (1 <= n <= 64; no bits above n may be set). */
static inline void
bw_put(BitWriter *w, uint64_t bits, unsigned n)
{
    unsigned room = 64 - w->nacc;
    if (LIKELY(n < room)) {
        w->acc = (w->acc << n) | bits;
        w->nacc += n;
        return;
    }
    unsigned rest = n - room;
    uint64_t word = room == 64 ? bits : (w->acc << room) | (bits >> rest);
    store_be64(w->out, word);
    w->out += 8;
    w->acc = bits;
    w->nacc = rest;
}

static inline void
bw_put_uvarint(BitWriter *w, uint64_t x)
{
    while (x >= 0x80) {
        bw_put(w, (x & 0x7f) | 0x80, 8);
        x >>= 7;
    }
    bw_put(w, x, 8);
}

/* Flush the partial word, zero-padding the last byte; returns the end pointer. */
static inline uint8_t *
bw_finish(BitWriter *w)
{
    if (w->nacc == 0) {
        return w->out;
    }
    store_be64(w->out, w->acc << (64 - w->nacc));
    return w->out + (w->nacc + 7) / 8;
}

/*
 * Write `prefix` (prefix_bits long, may be 0 bits) followed by the XOR
 * encoding of `delta`, updating the leading/trailing window like Go's
 * xorWrite.  `*leading == 0xff` means no window yet.
 */
static inline void
write_value(BitWriter *w, uint64_t prefix, unsigned prefix_bits, uint64_t delta,
            unsigned *leading, unsigned *trailing)
{
    if (delta == 0) {
        bw_put(w, prefix << 1, prefix_bits + 1);
        return;
    }
    unsigned lead = leading_zeros64(delta);
    unsigned trail = trailing_zeros64(delta);
    if (lead >= 32) {
        lead = 31; /* the field is 5 bits wide */
    }
    if (*leading != 0xff && lead >= *leading && trail >= *trailing) {
        unsigned sig = 64 - *leading - *trailing;
        uint64_t control = (prefix << 2) | 0x2; /* '10': reuse the window */
        unsigned control_bits = prefix_bits + 2;
        if (control_bits + sig <= 64) {
            bw_put(w, (control << sig) | (delta >> *trailing), control_bits + sig);
        } else {
            bw_put(w, control, control_bits);
            bw_put(w, delta >> *trailing, sig);
        }
        return;
    }
    *leading = lead;
    *trailing = trail;
    unsigned sig = 64 - lead - trail;
    /* '11', 5 bits leading, 6 bits significant count (64 is stored as 0). */
    uint64_t control = (((prefix << 2) | 0x3) << 11) | ((uint64_t)lead << 6) | (sig & 63);
    bw_put(w, control, prefix_bits + 13);
    bw_put(w, delta >> trail, sig);
}

/* Returns the number of bytes written to `buf`, which holds at least encode_capacity(n). */
static inline uint64_t
load_u64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8); /* any alignment, no aliasing questions */
    return v;
}

static size_t
encode_into(uint8_t *buf, const uint8_t *ts, const uint8_t *vals, Py_ssize_t n)
{
    buf[0] = (uint8_t)(n >> 8);
    buf[1] = (uint8_t)n;
    BitWriter w = {buf + HEADER_BYTES, 0, 0};

    uint64_t t_prev = load_u64(ts);
    uint64_t v_prev = load_u64(vals);
    uint64_t zigzag = t_prev << 1;
    if (t_prev >> 63) {
        zigzag = ~zigzag; /* Go's PutVarint for negative numbers */
    }
    bw_put_uvarint(&w, zigzag);
    bw_put(&w, v_prev, 64);
    if (n == 1) {
        return (size_t)(bw_finish(&w) - buf);
    }

    unsigned leading = 0xff;
    unsigned trailing = 0;
    uint64_t t = load_u64(ts + 8);
    uint64_t v = load_u64(vals + 8);
    uint64_t t_delta = t - t_prev; /* wraps like Go's uint64(t - a.t) */
    bw_put_uvarint(&w, t_delta);
    write_value(&w, 0, 0, v ^ v_prev, &leading, &trailing);
    t_prev = t;
    v_prev = v;

    for (Py_ssize_t i = 2; i < n; i++) {
        t = load_u64(ts + 8 * i);
        v = load_u64(vals + 8 * i);
        uint64_t delta = t - t_prev;
        int64_t dod = (int64_t)(delta - t_delta);
        uint64_t vdelta = v ^ v_prev;
        t_delta = delta;
        t_prev = t;
        v_prev = v;
        if (dod == 0) {
            write_value(&w, 0, 1, vdelta, &leading, &trailing);
        } else if (dod >= -8191 && dod <= 8192) {
            write_value(&w, (UINT64_C(0x2) << 14) | ((uint64_t)dod & 0x3fff), 16, vdelta,
                        &leading, &trailing);
        } else if (dod >= -65535 && dod <= 65536) {
            write_value(&w, (UINT64_C(0x6) << 17) | ((uint64_t)dod & 0x1ffff), 20, vdelta,
                        &leading, &trailing);
        } else if (dod >= -524287 && dod <= 524288) {
            write_value(&w, (UINT64_C(0xe) << 20) | ((uint64_t)dod & 0xfffff), 24, vdelta,
                        &leading, &trailing);
        } else {
            bw_put(&w, 0xf, 4);
            bw_put(&w, (uint64_t)dod, 64);
            write_value(&w, 0, 0, vdelta, &leading, &trailing);
        }
    }
    return (size_t)(bw_finish(&w) - buf);
}

static size_t
encode_capacity(Py_ssize_t n)
{
    /* header, two varints, first value, worst case per sample, slack for a whole-word store */
    return HEADER_BYTES + 2 * MAX_VARINT_BYTES + 8 + ((size_t)n * MAX_SAMPLE_BITS + 7) / 8 + 16;
}

static int
get_contiguous_buffer(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "%s must be a C-contiguous bytes-like object (bytes, bytearray, "
                     "memoryview or numpy array), not %.100s",
                     name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
gorilla_encode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "encode() takes exactly 2 arguments (timestamps, values), got %zd", nargs);
        return NULL;
    }
    Py_buffer ts_view;
    Py_buffer val_view;
    if (get_contiguous_buffer(args[0], &ts_view, "timestamps") < 0) {
        return NULL;
    }
    if (get_contiguous_buffer(args[1], &val_view, "values") < 0) {
        PyBuffer_Release(&ts_view);
        return NULL;
    }

    PyObject *result = NULL;
    uint8_t *buf = NULL;
    Py_ssize_t n = ts_view.len / 8;
    if (ts_view.len % 8 != 0 || val_view.len % 8 != 0) {
        PyErr_Format(PyExc_ValueError,
                     "timestamps (%zd bytes) and values (%zd bytes) must hold 8-byte items "
                     "(int64 milliseconds and float64)",
                     ts_view.len, val_view.len);
        goto done;
    }
    if (ts_view.len != val_view.len) {
        PyErr_Format(PyExc_ValueError,
                     "timestamps and values differ in length: %zd timestamps, %zd values", n,
                     val_view.len / 8);
        goto done;
    }
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "cannot encode a chunk of 0 points");
        goto done;
    }
    if (n > MAX_POINTS) {
        PyErr_Format(PyExc_ValueError,
                     "a chunk holds at most %d points (its count is a uint16), got %zd; "
                     "split the series into several chunks",
                     MAX_POINTS, n);
        goto done;
    }

    size_t capacity = encode_capacity(n);
    buf = PyMem_Malloc(capacity);
    if (buf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t length;
    Py_BEGIN_ALLOW_THREADS
    length = encode_into(buf, ts_view.buf, val_view.buf, n);
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)length);

done:
    PyMem_Free(buf);
    PyBuffer_Release(&ts_view);
    PyBuffer_Release(&val_view);
    return result;
}

/* ------------------------------------------------------------------ reader */

typedef struct {
    const uint8_t *buf; /* zero-padded by READ_PADDING bytes */
    uint64_t pos;       /* bit position */
} BitReader;

/* The next 57+ bits, most significant first. */
static inline uint64_t
br_peek(const BitReader *r)
{
    return load_be64(r->buf + (r->pos >> 3)) << (r->pos & 7);
}

static inline uint64_t
br_read(BitReader *r, unsigned n) /* 1 <= n <= 56 */
{
    uint64_t v = br_peek(r) >> (64 - n);
    r->pos += n;
    return v;
}

static inline uint64_t
br_read_wide(BitReader *r, unsigned n) /* 1 <= n <= 64 */
{
    if (n <= 56) {
        return br_read(r, n);
    }
    uint64_t hi = br_read(r, n - 32);
    return (hi << 32) | br_read(r, 32);
}

typedef enum {
    DECODE_OK = 0,
    DECODE_TRUNCATED,
    DECODE_VARINT_OVERFLOW,
    DECODE_BAD_WINDOW,
    DECODE_REUSE_WITHOUT_WINDOW,
    DECODE_TRAILING_BYTES,
} DecodeStatus;

/* Go's binary.ReadUvarint, including its overflow rule for the tenth byte. */
static DecodeStatus
read_uvarint(BitReader *r, uint64_t total_bits, uint64_t *out)
{
    uint64_t x = 0;
    unsigned shift = 0;
    for (int i = 0; i < MAX_VARINT_BYTES; i++) {
        if (r->pos + 8 > total_bits) {
            return DECODE_TRUNCATED;
        }
        uint64_t byte = br_read(r, 8);
        if (byte < 0x80) {
            if (i == MAX_VARINT_BYTES - 1 && byte > 1) {
                return DECODE_VARINT_OVERFLOW;
            }
            *out = x | (byte << shift);
            return DECODE_OK;
        }
        x |= (byte & 0x7f) << shift;
        shift += 7;
    }
    return DECODE_VARINT_OVERFLOW;
}

static inline DecodeStatus
read_value(BitReader *r, uint64_t *value, unsigned *leading, unsigned *trailing)
{
    uint64_t w = br_peek(r);
    if (!(w >> 63)) {
        r->pos += 1;
        return DECODE_OK;
    }
    if (!((w >> 62) & 1)) {
        if (UNLIKELY(*leading == 0xff)) {
            return DECODE_REUSE_WITHOUT_WINDOW;
        }
        unsigned sig = 64 - *leading - *trailing;
        r->pos += 2;
        *value ^= br_read_wide(r, sig) << *trailing;
        return DECODE_OK;
    }
    unsigned lead = (unsigned)(w >> 57) & 31;
    unsigned sig = (unsigned)(w >> 51) & 63;
    r->pos += 13;
    if (sig == 0) {
        sig = 64;
    }
    if (UNLIKELY(lead + sig > 64)) {
        return DECODE_BAD_WINDOW;
    }
    *leading = lead;
    *trailing = 64 - lead - sig;
    *value ^= br_read_wide(r, sig) << *trailing;
    return DECODE_OK;
}

static DecodeStatus
decode_into(const uint8_t *body, uint64_t body_len, Py_ssize_t n, uint8_t *ts_out,
            uint8_t *val_out, Py_ssize_t *failed_at)
{
    BitReader r = {body, 0};
    uint64_t total_bits = body_len * 8;
    DecodeStatus status;
    *failed_at = 0;

    uint64_t zigzag;
    if ((status = read_uvarint(&r, total_bits, &zigzag)) != DECODE_OK) {
        return status;
    }
    uint64_t t = zigzag >> 1;
    if (zigzag & 1) {
        t = ~t;
    }
    if (r.pos + 64 > total_bits) {
        return DECODE_TRUNCATED;
    }
    uint64_t v = br_read_wide(&r, 64);
    memcpy(ts_out, &t, 8);
    memcpy(val_out, &v, 8);

    if (n > 1) {
        *failed_at = 1;
        uint64_t t_delta;
        unsigned leading = 0xff;
        unsigned trailing = 0;
        if ((status = read_uvarint(&r, total_bits, &t_delta)) != DECODE_OK) {
            return status;
        }
        t += t_delta;
        if ((status = read_value(&r, &v, &leading, &trailing)) != DECODE_OK) {
            return status;
        }
        if (r.pos > total_bits) {
            return DECODE_TRUNCATED;
        }
        memcpy(ts_out + 8, &t, 8);
        memcpy(val_out + 8, &v, 8);

        for (Py_ssize_t i = 2; i < n; i++) {
            uint64_t w = br_peek(&r);
            uint64_t dod;
            if (!(w >> 63)) {
                r.pos += 1;
                dod = 0;
            } else if (!((w >> 62) & 1)) {
                dod = (w >> 48) & 0x3fff;
                if (dod > 8192) {
                    dod -= 16384;
                }
                r.pos += 16;
            } else if (!((w >> 61) & 1)) {
                dod = (w >> 44) & 0x1ffff;
                if (dod > 65536) {
                    dod -= 131072;
                }
                r.pos += 20;
            } else if (!((w >> 60) & 1)) {
                dod = (w >> 40) & 0xfffff;
                if (dod > 524288) {
                    dod -= 1048576;
                }
                r.pos += 24;
            } else {
                r.pos += 4;
                dod = br_read_wide(&r, 64);
            }
            t_delta += dod;
            t += t_delta;
            if ((status = read_value(&r, &v, &leading, &trailing)) != DECODE_OK) {
                *failed_at = i;
                return status;
            }
            if (UNLIKELY(r.pos > total_bits)) {
                *failed_at = i;
                return DECODE_TRUNCATED;
            }
            memcpy(ts_out + 8 * i, &t, 8);
            memcpy(val_out + 8 * i, &v, 8);
        }
    }
    if (r.pos > total_bits) {
        return DECODE_TRUNCATED;
    }
    /* Go's chunk ends with the byte that holds the last bit; anything after it is not ours. */
    if ((r.pos + 7) / 8 != body_len) {
        *failed_at = n;
        return DECODE_TRAILING_BYTES;
    }
    return DECODE_OK;
}

static void
raise_decode_error(DecodeStatus status, Py_ssize_t failed_at, Py_ssize_t n, Py_ssize_t len)
{
    switch (status) {
    case DECODE_TRUNCATED:
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: data ends inside sample %zd of %zd "
                     "(%zd bytes; truncated or wrong count header)",
                     failed_at, n, len);
        break;
    case DECODE_VARINT_OVERFLOW:
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: timestamp varint of sample %zd overflows 64 bits",
                     failed_at);
        break;
    case DECODE_BAD_WINDOW:
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: value of sample %zd has leading zeros plus "
                     "significant bits above 64",
                     failed_at);
        break;
    case DECODE_REUSE_WITHOUT_WINDOW:
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: value of sample %zd reuses a leading/trailing "
                     "window before any was set",
                     failed_at);
        break;
    case DECODE_TRAILING_BYTES:
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: bytes left over after all %zd samples "
                     "(%zd bytes; wrong count header or appended data)",
                     n, len);
        break;
    case DECODE_OK:
        break;
    }
}

static PyObject *
gorilla_decode(PyObject *module, PyObject *data)
{
    (void)module;
    Py_buffer view;
    if (get_contiguous_buffer(data, &view, "data") < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *ts_bytes = NULL;
    PyObject *val_bytes = NULL;
    uint8_t *body = NULL;
    const uint8_t *src = view.buf;

    if (view.len < HEADER_BYTES) {
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: %zd bytes is shorter than the 2-byte count header",
                     view.len);
        goto done;
    }
    Py_ssize_t n = ((Py_ssize_t)src[0] << 8) | src[1];
    uint64_t body_len = (uint64_t)(view.len - HEADER_BYTES);
    if (n == 0 && body_len != 0) {
        PyErr_Format(PyExc_ValueError,
                     "corrupt Gorilla chunk: count header says 0 samples but %zd bytes follow",
                     (Py_ssize_t)body_len);
        goto done;
    }
    ts_bytes = PyBytes_FromStringAndSize(NULL, n * 8);
    val_bytes = PyBytes_FromStringAndSize(NULL, n * 8);
    if (ts_bytes == NULL || val_bytes == NULL) {
        goto done;
    }
    if (n > 0) {
        body = PyMem_Malloc(body_len + READ_PADDING);
        if (body == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(body, src + HEADER_BYTES, body_len);
        memset(body + body_len, 0, READ_PADDING);
        uint8_t *ts_out = (uint8_t *)PyBytes_AS_STRING(ts_bytes);
        uint8_t *val_out = (uint8_t *)PyBytes_AS_STRING(val_bytes);
        DecodeStatus status;
        Py_ssize_t failed_at;
        Py_BEGIN_ALLOW_THREADS
        status = decode_into(body, body_len, n, ts_out, val_out, &failed_at);
        Py_END_ALLOW_THREADS
        if (status != DECODE_OK) {
            raise_decode_error(status, failed_at, n, view.len);
            goto done;
        }
    }
    result = PyTuple_Pack(2, ts_bytes, val_bytes);

done:
    PyMem_Free(body);
    Py_XDECREF(ts_bytes);
    Py_XDECREF(val_bytes);
    PyBuffer_Release(&view);
    return result;
}

/* ------------------------------------------------------------------ module */

PyDoc_STRVAR(encode_doc,
             "encode(timestamps, values, /)\n--\n\n"
             "Encode native int64 timestamps (milliseconds) and float64 values, given as\n"
             "C-contiguous bytes-like objects of equal length, into a Prometheus XOR chunk.\n"
             "Raises ValueError for mismatched lengths, 0 points or more than 65535 points.");

PyDoc_STRVAR(decode_doc,
             "decode(data, /)\n--\n\n"
             "Decode a Prometheus XOR chunk into (timestamps, values): two bytes objects of\n"
             "native int64 milliseconds and float64 values, ready for numpy.frombuffer.\n"
             "Raises ValueError on truncated or corrupt input.");

static PyMethodDef gorilla_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))gorilla_encode, METH_FASTCALL, encode_doc},
    {"decode", (PyCFunction)gorilla_decode, METH_O, decode_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot gorilla_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef gorilla_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pipeline.ts._gorilla",
    .m_doc = "Prometheus-compatible Gorilla (XOR chunk) codec for float samples.",
    .m_size = 0,
    .m_methods = gorilla_methods,
    .m_slots = gorilla_slots,
};

PyMODINIT_FUNC
PyInit__gorilla(void)
{
    return PyModuleDef_Init(&gorilla_module);
}
