/*
 * Columnar scan of a batch of JSON point records (pipeline.ts.json_columns).
 *
 * scan_points(messages) reads the value, partition and offset of every confluent-kafka
 * Message in the list and parses each value as a JSON point of the plainest shape:
 *
 *   {"metric": "...", "entity": "...", "timestamp_ms": <int>, "value": <number>,
 *    "tags": {"name": "value", ...}}
 *
 * fields in any order, "tags" optional, JSON whitespace anywhere between tokens. Strings
 * are printable ASCII without escapes, metric and entity non-empty; timestamp_ms is an
 * integer literal in the int64 range; value is a JSON number whose float64 is finite and
 * not an underflow. A record of any other shape (escapes, non-ASCII, a duplicate or
 * unknown field, tags null, a number strtod cannot take exactly, no value at all) is not
 * judged here: the whole call returns None, and the caller decodes the batch record by
 * record with the reference decoder, which accepts or rejects with its reason.
 *
 * This is a subset of what the reference accepts, never a superset, and every value it
 * takes it reads as the reference does (tests/unit/test_json_columns.py checks both
 * differentially): integers as Python's float(int) rounds them (strtod rounds correctly;
 * -0 is the integer 0, so +0.0), other numbers correctly rounded.
 *
 * The parsing runs without the GIL (the worker consumes its next batch meanwhile); the
 * values are read before and the Python objects built after.
 *
 * On success it returns (series, runs, index, partitions, timestamps, values): series is
 * a list of (metric str, entity str, raw tags bytes) tuples, one per distinct series of
 * the batch (raw tags b"" when absent); runs a list of (partition, next offset, records),
 * one per run of consecutive records of one partition; the rest are bytes holding one
 * native int32 / int32 / int64 / float64 per record: the record's series number,
 * partition, timestamp in ms and value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NUMBER_CHARS 64

typedef struct {
    const char *p;
    const char *end;
} Cursor;

typedef struct {
    const char *s;
    Py_ssize_t n;
} Span;

typedef struct {
    Span metric, entity, tags;
    int64_t timestamp_ms;
    double value;
} Point;

static inline void skip_ws(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline int take(Cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* Bytes a plain string may hold: printable ASCII but the quote and the backslash. */
static unsigned char PLAIN[256];

static void init_plain(void) {
    for (int ch = 0x20; ch <= 0x7e; ch++)
        PLAIN[ch] = ch != '"' && ch != '\\';
}

/* A string of printable ASCII without escapes; its contents in *out. */
static int read_string(Cursor *c, Span *out) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != '"')
        return 0;
    const char *start = ++c->p, *p = start, *end = c->end;
    while (p < end && PLAIN[(unsigned char)*p])
        p++;
    if (p >= end || *p != '"')
        return 0;
    out->s = start;
    out->n = p - start;
    c->p = p + 1;
    return 1;
}

/* A JSON number literal; *is_int when it has no fraction and no exponent. */
static int read_number(Cursor *c, Span *out, int *is_int) {
    skip_ws(c);
    const char *start = c->p, *p = c->p, *end = c->end;
    *is_int = 1;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        *is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *is_int = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return 0;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    out->s = start;
    out->n = p - start;
    c->p = p;
    return out->n <= MAX_NUMBER_CHARS;
}

static int to_int64(Span num, int64_t *out) {
    const char *p = num.s, *end = num.s + num.n;
    int negative = 0;
    if (*p == '-') {
        negative = 1;
        p++;
    }
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    uint64_t acc = 0;
    for (; p < end; p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (acc > (limit - digit) / 10u)
            return 0;
        acc = acc * 10u + digit;
    }
    *out = negative ? (int64_t)(0u - acc) : (int64_t)acc;
    return 1;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Clinger's fast path: at most 15 significant digits and a power of ten up to 22 are
 * both exact doubles, so one multiplication or division rounds correctly. */
static int fast_double(Span num, double *out) {
    const char *p = num.s, *end = num.s + num.n;
    int negative = *p == '-';
    p += negative;
    uint64_t mantissa = 0;
    int digits = 0, scale = 0, exponent = 0, exp_negative = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (mantissa == 0 && *p == '0')
            continue;
        mantissa = mantissa * 10u + (uint64_t)(*p - '0');
        digits++;
    }
    if (p < end && *p == '.') {
        for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
            scale--;
            if (mantissa == 0 && *p == '0')
                continue;
            mantissa = mantissa * 10u + (uint64_t)(*p - '0');
            digits++;
        }
    }
    if (digits > 15)
        return 0;
    if (p < end) { /* e or E */
        p++;
        if (*p == '+' || *p == '-')
            exp_negative = *p++ == '-';
        for (; p < end; p++) {
            if (exponent > 1000)
                return 0;
            exponent = exponent * 10 + (*p - '0');
        }
    }
    int power = scale + (exp_negative ? -exponent : exponent);
    double v = (double)mantissa;
    if (mantissa == 0)
        power = 0;
    if (power < -22 || power > 22)
        return 0;
    v = power < 0 ? v / POW10[-power] : v * POW10[power];
    *out = negative ? -v : v;
    return 1;
}

static int to_double(Span num, int is_int, double *out) {
    if (fast_double(num, out)) {
        if (is_int && *out == 0.0)
            *out = 0.0; /* the integer -0 is 0 */
        return 1;
    }
    char buf[MAX_NUMBER_CHARS + 1];
    memcpy(buf, num.s, (size_t)num.n);
    buf[num.n] = '\0';
    errno = 0;
    char *stop;
    double v = strtod(buf, &stop);
    if (errno != 0 || stop != buf + num.n || !isfinite(v))
        return 0; /* overflow or underflow: the reference decides */
    if (is_int && v == 0.0)
        v = 0.0; /* the integer -0 is 0 */
    *out = v;
    return 1;
}

/* The tags object of string to string; its raw bytes, braces included, in *out. */
static int read_tags(Cursor *c, Span *out) {
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{')
        return 0;
    const char *start = c->p++;
    Span name, value;
    if (!take(c, '}')) {
        do {
            if (!read_string(c, &name) || !take(c, ':') || !read_string(c, &value))
                return 0;
        } while (take(c, ','));
        if (!take(c, '}'))
            return 0;
    }
    out->s = start;
    out->n = c->p - start;
    return 1;
}

enum { F_METRIC = 1, F_ENTITY = 2, F_TS = 4, F_VALUE = 8, F_TAGS = 16 };

static int field_of(Span key) {
    switch (key.n) {
    case 4:
        return memcmp(key.s, "tags", 4) == 0 ? F_TAGS : 0;
    case 5:
        return memcmp(key.s, "value", 5) == 0 ? F_VALUE : 0;
    case 6:
        if (memcmp(key.s, "metric", 6) == 0)
            return F_METRIC;
        return memcmp(key.s, "entity", 6) == 0 ? F_ENTITY : 0;
    case 12:
        return memcmp(key.s, "timestamp_ms", 12) == 0 ? F_TS : 0;
    default:
        return 0;
    }
}

static int parse_point(const char *data, Py_ssize_t size, Point *pt) {
    Cursor c = {data, data + size};
    int seen = 0, is_int;
    Span key, num;
    if (!take(&c, '{'))
        return 0;
    pt->tags.s = "";
    pt->tags.n = 0;
    do {
        if (!read_string(&c, &key) || !take(&c, ':'))
            return 0;
        int field = field_of(key);
        if (field == 0 || (seen & field))
            return 0;
        seen |= field;
        switch (field) {
        case F_METRIC:
            if (!read_string(&c, &pt->metric) || pt->metric.n == 0)
                return 0;
            break;
        case F_ENTITY:
            if (!read_string(&c, &pt->entity) || pt->entity.n == 0)
                return 0;
            break;
        case F_TS:
            if (!read_number(&c, &num, &is_int) || !is_int || !to_int64(num, &pt->timestamp_ms))
                return 0;
            break;
        case F_VALUE:
            if (!read_number(&c, &num, &is_int) || !to_double(num, is_int, &pt->value))
                return 0;
            break;
        default:
            if (!read_tags(&c, &pt->tags))
                return 0;
        }
    } while (take(&c, ','));
    if (!take(&c, '}'))
        return 0;
    skip_ws(&c);
    return c.p == c.end && (seen | F_TAGS) == (F_METRIC | F_ENTITY | F_TS | F_VALUE | F_TAGS);
}

/* Distinct series of the batch: open addressing over (metric, entity, tags) spans. */
typedef struct {
    uint64_t hash;
    int32_t index; /* -1: empty */
    const Point *first;
} Slot;

/* A hash of a span from its length and its first and last eight bytes (series of one
 * batch differ there; equal hashes are compared whole anyway). */
static inline uint64_t mix_span(uint64_t h, Span s) {
    uint64_t head = 0, tail = 0;
    size_t n = (size_t)s.n;
    memcpy(&head, s.s, n < 8 ? n : 8);
    if (n > 8)
        memcpy(&tail, s.s + n - 8, 8);
    h = (h ^ head ^ ((uint64_t)n << 56)) * 0x9E3779B97F4A7C15ull;
    h = (h ^ tail) * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 29);
}

static inline int same_span(Span a, Span b) { return a.n == b.n && memcmp(a.s, b.s, (size_t)a.n) == 0; }

static int same_series(const Point *a, const Point *b) {
    return same_span(a->metric, b->metric) && same_span(a->entity, b->entity) &&
           same_span(a->tags, b->tags);
}

static PyObject *series_tuple(const Point *pt) {
    return Py_BuildValue("(s#s#y#)", pt->metric.s, pt->metric.n, pt->entity.s, pt->entity.n,
                         pt->tags.s, pt->tags.n);
}

/* The record after ``last`` starts another partition's run: append (partition, next
 * offset, records) of the run ``last`` ends. */
static int close_run(PyObject *runs, PyObject *last, long long partition, Py_ssize_t records);

static PyObject *int_of_method(PyObject *obj, PyObject *name, long long *out) {
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL)
        return NULL;
    if (r == Py_None) {
        Py_DECREF(r);
        return Py_None; /* borrowed marker: no number */
    }
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    if (*out == -1 && PyErr_Occurred())
        return NULL;
    return Py_True; /* borrowed marker: ok */
}

static PyObject *s_value, *s_partition, *s_offset;

static int close_run(PyObject *runs, PyObject *last, long long partition, Py_ssize_t records) {
    long long offset;
    PyObject *ok = int_of_method(last, s_offset, &offset);
    if (ok == NULL)
        return -1;
    if (ok != Py_True) {
        PyErr_SetString(PyExc_ValueError, "a consumed record has no offset");
        return -1;
    }
    PyObject *run = Py_BuildValue("(LLn)", partition, offset + 1, records);
    if (run == NULL)
        return -1;
    int rc = PyList_Append(runs, run);
    Py_DECREF(run);
    return rc;
}

static PyObject *scan_points(PyObject *module, PyObject *messages) {
    (void)module;
    if (s_value == NULL) {
        s_value = PyUnicode_InternFromString("value");
        s_partition = PyUnicode_InternFromString("partition");
        s_offset = PyUnicode_InternFromString("offset");
        if (!s_value || !s_partition || !s_offset)
            return NULL;
    }
    if (!PyList_Check(messages)) {
        PyErr_SetString(PyExc_TypeError, "scan_points takes a list of messages");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(messages);
    PyObject *result = NULL, *series = NULL, *values = NULL;
    PyObject *runs = NULL, *b_index = NULL, *b_parts = NULL, *b_ts = NULL, *b_vals = NULL;
    Point *points = NULL;
    const Point **firsts = NULL;
    Slot *slots = NULL;
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap <<= 1;

    values = PyList_New(n);
    points = PyMem_Malloc(sizeof(Point) * (size_t)(n ? n : 1));
    firsts = PyMem_Malloc(sizeof(Point *) * (size_t)(n ? n : 1));
    slots = PyMem_Malloc(sizeof(Slot) * cap);
    series = PyList_New(0);
    b_index = PyBytes_FromStringAndSize(NULL, n * 4);
    b_parts = PyBytes_FromStringAndSize(NULL, n * 4);
    runs = PyList_New(0);
    b_ts = PyBytes_FromStringAndSize(NULL, n * 8);
    b_vals = PyBytes_FromStringAndSize(NULL, n * 8);
    if (!values || !points || !firsts || !slots || !series || !runs || !b_index || !b_parts || !b_ts ||
        !b_vals) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < cap; i++)
        slots[i].index = -1;
    int32_t *index = (int32_t *)PyBytes_AS_STRING(b_index);
    int32_t *parts = (int32_t *)PyBytes_AS_STRING(b_parts);
    int64_t *ts = (int64_t *)PyBytes_AS_STRING(b_ts);
    double *vals = (double *)PyBytes_AS_STRING(b_vals);
    int32_t distinct = 0;

    /* 1. With the GIL: each record's value (kept alive in ``values``) and partition. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *message = PyList_GET_ITEM(messages, i);
        PyObject *value = PyObject_CallMethodNoArgs(message, s_value);
        if (value == NULL)
            goto done;
        PyList_SET_ITEM(values, i, value);
        long long partition;
        PyObject *ok = int_of_method(message, s_partition, &partition);
        if (ok == NULL)
            goto done;
        if (!PyBytes_Check(value) || ok != Py_True || partition < 0 || partition > INT32_MAX) {
            result = Py_None;
            Py_INCREF(result);
            goto done;
        }
        parts[i] = (int32_t)partition;
    }

    /* 2. Without it (consuming the next batch goes on meanwhile): parse, number series. */
    int declined = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *value = PyList_GET_ITEM(values, i);
        Point *pt = &points[i];
        if (!parse_point(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), pt)) {
            declined = 1;
            break;
        }
        uint64_t h = mix_span(mix_span(mix_span(0, pt->metric), pt->entity), pt->tags);
        size_t at = (size_t)h & (cap - 1);
        while (slots[at].index >= 0 && !(slots[at].hash == h && same_series(slots[at].first, pt)))
            at = (at + 1) & (cap - 1);
        if (slots[at].index < 0) {
            slots[at].hash = h;
            slots[at].index = distinct;
            slots[at].first = pt;
            firsts[distinct++] = pt;
        }
        index[i] = slots[at].index;
        ts[i] = pt->timestamp_ms;
        vals[i] = pt->value;
    }
    Py_END_ALLOW_THREADS
    if (declined) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }

    /* 3. With the GIL again: the distinct series, and each partition run's end. */
    for (int32_t k = 0; k < distinct; k++) {
        PyObject *t = series_tuple(firsts[k]);
        if (t == NULL || PyList_Append(series, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    Py_ssize_t run_start = 0;
    for (Py_ssize_t i = 1; i <= n; i++) {
        if (i == n || parts[i] != parts[run_start]) {
            if (close_run(runs, PyList_GET_ITEM(messages, i - 1), parts[run_start],
                          i - run_start) < 0)
                goto done;
            run_start = i;
        }
    }
    result = PyTuple_Pack(6, series, runs, b_index, b_parts, b_ts, b_vals);

done:
    PyMem_Free(points);
    PyMem_Free(firsts);
    PyMem_Free(slots);
    Py_XDECREF(values);
    Py_XDECREF(series);
    Py_XDECREF(b_index);
    Py_XDECREF(b_parts);
    Py_XDECREF(runs);
    Py_XDECREF(b_ts);
    Py_XDECREF(b_vals);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_points", scan_points, METH_O,
     "scan_points(messages) -> (series, runs, index, partitions, timestamps, values) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pipeline.ts._jsonscan",
    "Columnar scan of a batch of JSON point records (see pipeline.ts.json_columns).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jsonscan(void) {
    init_plain();
    return PyModule_Create(&module);
}
