/* Lines in the plain shape, read in one pass each (track.transforms.parse: FAST_LINE).

   scan(texts) splits each of some UTF-8 texts on newlines, as bytes.split does but for the
   blank line after a final newline, and reads each line that has the plain shape: event and
   user_id, then timestamp, `_received_at` and metadata if present, in that order; every
   string without an escape, a quote or a control character; metadata a flat object of such
   strings, true, false, null and the numbers orjson writes back as they are (plain_number),
   no key twice.
   For those lines it gives what orjson would decode: the fields as sent, the metadata object
   as compact JSON, and its pairs as the dedup fingerprint takes them (`key":value`, a number
   without a trailing `.0`). Every other line is left to orjson, which decides it exactly.

   The columns come back as Arrow buffers, which parse.py wraps without copying: the lines and
   the fields as sent as string views into the texts themselves, the metadata and the pairs,
   which lose their spaces, as bytes with 64-bit offsets. The scan holds no Python object, so
   it runs without the GIL: the ingest's threads read their batches at once.

   Checked under AddressSanitizer and UBSan by building it so in place of an editable
   install's module and running the parse tests (`pip install -e .` builds it back):
     gcc -O1 -g -std=c11 -fsanitize=address,undefined -shared -fPIC \
       -I"$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
       transforms/_plain.c -o transforms/_plain.cpython-311-x86_64-linux-gnu.so
     ASAN_OPTIONS=detect_leaks=0 \
       LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)" \
       .venv/bin/pytest -p no:xdist tests/transforms/test_parse.py */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_PAIRS 64 /* more keys than this: orjson's (the check for a key twice is quadratic) */

typedef struct {
    const char *at;
    Py_ssize_t len;
} Span;

typedef struct {
    Span key, value;
    int number; /* the value is a number: its pair drops a trailing ".0" */
} Pair;

typedef struct {
    Span event, user_id, timestamp, received_at;
    int has_timestamp, has_received_at, has_metadata;
    int pairs;
    Pair pair[MAX_PAIRS];
} Line;

/* Bits, one a row (Arrow's validity bitmaps, and which lines are plain) --------------------- */

static inline Py_ssize_t bits_size(Py_ssize_t count) { return (count + 7) / 8 + 1; }

/* Bits for `count` rows, all 0 (NULL, with an exception set, if memory ran out). */
static PyObject *new_bits(Py_ssize_t count) {
    PyObject *bits = PyBytes_FromStringAndSize(NULL, bits_size(count));
    if (bits != NULL) memset(PyBytes_AS_STRING(bits), 0, (size_t)bits_size(count));
    return bits;
}

static inline void set_bit(char *bits, Py_ssize_t row) { bits[row >> 3] |= (char)(1 << (row & 7)); }

/* A column being written: bytes, offsets, validity bits; preallocated at upper bounds, as
   Python bytes objects written without the GIL and cut to size after. */
typedef struct {
    PyObject *data, *offsets, *valid;
    Py_ssize_t used, count;
} Column;

/* `data_cap` < 0: no bytes of its own (a list column: its offsets count another's values). */
static int column_init(Column *c, Py_ssize_t data_cap, Py_ssize_t count_cap, int with_valid) {
    c->used = 0;
    c->count = 0;
    c->data = data_cap >= 0 ? PyBytes_FromStringAndSize(NULL, data_cap) : NULL;
    c->offsets = PyBytes_FromStringAndSize(NULL, (count_cap + 1) * (Py_ssize_t)sizeof(int64_t));
    c->valid = with_valid ? new_bits(count_cap) : NULL;
    if ((data_cap >= 0 && !c->data) || !c->offsets || (with_valid && !c->valid)) return -1;
    ((int64_t *)PyBytes_AS_STRING(c->offsets))[0] = 0;
    return 0;
}

static void column_clear(Column *c) {
    Py_CLEAR(c->data);
    Py_CLEAR(c->offsets);
    Py_CLEAR(c->valid);
}

static inline void column_put(Column *c, const char *at, Py_ssize_t len) {
    memcpy(PyBytes_AS_STRING(c->data) + c->used, at, (size_t)len);
    c->used += len;
}

/* Ends the current value: valid (1) or null (0). */
static inline void column_end(Column *c, int valid) {
    if (valid && c->valid) set_bit(PyBytes_AS_STRING(c->valid), c->count);
    c->count++;
    ((int64_t *)PyBytes_AS_STRING(c->offsets))[c->count] = c->used;
}

/* (validity or None, offsets, data or None), each cut to its size. */
static PyObject *column_tuple(Column *c) {
    if (_PyBytes_Resize(&c->offsets, (c->count + 1) * (Py_ssize_t)sizeof(int64_t)) < 0)
        return NULL;
    PyObject *valid = Py_None, *data = Py_None;
    if (c->valid) {
        if (_PyBytes_Resize(&c->valid, bits_size(c->count)) < 0) return NULL;
        valid = c->valid;
    }
    if (c->data) {
        if (_PyBytes_Resize(&c->data, c->used) < 0) return NULL;
        data = c->data;
    }
    return Py_BuildValue("(OOO)", valid, c->offsets, data);
}

/* A column of Arrow string views (16 bytes each) into the texts: a value of at most 12 bytes
   is held in its view; a longer one is its first 4 bytes, its text's index and its offset. */
typedef struct {
    PyObject *views, *valid;
    Py_ssize_t count;
} Views;

typedef struct {
    int32_t length;
    union {
        char held[12]; /* a value of at most 12 bytes */
        struct {
            char prefix[4];
            int32_t buffer, offset;
        } ref; /* a longer one */
    };
} View;
_Static_assert(sizeof(View) == 16, "an Arrow string view is 16 bytes");

static int views_init(Views *c, Py_ssize_t count_cap, int with_valid) {
    c->count = 0;
    Py_ssize_t bytes = (count_cap > 0 ? count_cap : 1) * (Py_ssize_t)sizeof(View);
    c->views = PyBytes_FromStringAndSize(NULL, bytes);
    c->valid = with_valid ? new_bits(count_cap) : NULL;
    if (!c->views || (with_valid && !c->valid)) return -1;
    return 0;
}

static void views_clear(Views *c) {
    Py_CLEAR(c->views);
    Py_CLEAR(c->valid);
}

/* The next view: of `len` bytes at `at`, in text `buffer` starting at `base`; or null. */
static inline void views_put(Views *c, const char *at, Py_ssize_t len, int32_t buffer,
                             const char *base, int valid) {
    View *v = (View *)PyBytes_AS_STRING(c->views) + c->count;
    memset(v, 0, sizeof *v);
    if (valid) {
        v->length = (int32_t)len;
        if (len <= 12) {
            memcpy(v->held, at, (size_t)len);
        } else {
            memcpy(v->ref.prefix, at, 4);
            v->ref.buffer = buffer;
            v->ref.offset = (int32_t)(at - base);
        }
        if (c->valid) set_bit(PyBytes_AS_STRING(c->valid), c->count);
    }
    c->count++;
}

/* (validity or None, views). */
static PyObject *views_tuple(Views *c) {
    if (_PyBytes_Resize(&c->views, (c->count > 0 ? c->count : 1) * (Py_ssize_t)sizeof(View)) < 0)
        return NULL;
    PyObject *valid = Py_None;
    if (c->valid) {
        if (_PyBytes_Resize(&c->valid, bits_size(c->count)) < 0) return NULL;
        valid = c->valid;
    }
    return Py_BuildValue("(OO)", valid, c->views);
}

/* The grammar ------------------------------------------------------------------------------ */

static inline int literal(const char **p, const char *end, const char *text, Py_ssize_t len) {
    if (end - *p < len || memcmp(*p, text, (size_t)len) != 0) return 0;
    *p += len;
    return 1;
}

static inline void space(const char **p, const char *end) {
    if (*p < end && **p == ' ') (*p)++;
}

/* The bytes that end a plain string (a quote) or keep a string from being one (a backslash,
   a control character): one look-up a byte, not three comparisons. */
static unsigned char ends_plain[256];

static void init_ends_plain(void) {
    for (int c = 0; c < 0x20; c++) ends_plain[c] = 1;
    ends_plain['"'] = ends_plain['\\'] = 1;
}

/* A string with no escape, quote or control character: its text between the quotes. */
static inline int plain_string(const char **p, const char *end, Span *out) {
    const char *q = *p;
    if (q >= end || *q != '"') return 0;
    const char *start = ++q;
    while (q < end && !ends_plain[(unsigned char)*q]) q++;
    if (q >= end || *q != '"') return 0;
    out->at = start;
    out->len = q - start;
    *p = q + 1;
    return 1;
}

static inline int digits(const char *s, Py_ssize_t len) {
    for (Py_ssize_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

/* A number orjson writes back as it is and whose double keeps every digit (parse._NUMBER):
   0; an integer of at most 15 digits; either of those with ".0" (not -0.0); a decimal of at
   most 7 integer digits and 8 fraction digits ending in a non-zero digit; or a fraction of at
   least 0.0001, at most 3 zeros then at most 15 digits, ending in a non-zero digit. */
static int plain_number(const char *s, Py_ssize_t len) {
    const char *end = s + len;
    int negative = 0;
    if (s < end && *s == '-') {
        negative = 1;
        s++;
    }
    if (s >= end) return 0;
    const char *dot = memchr(s, '.', (size_t)(end - s));
    Py_ssize_t whole = (dot ? dot : end) - s;
    if (whole < 1 || !digits(s, whole)) return 0;
    if (!dot) return (whole == 1 && *s == '0') ? !negative : (*s != '0' && whole <= 15);
    const char *fraction = dot + 1;
    Py_ssize_t places = end - fraction;
    if (places < 1 || !digits(fraction, places)) return 0;
    int last_nonzero = end[-1] != '0';
    if (*s == '0') {
        if (whole != 1) return 0;
        if (places == 1 && *fraction == '0') return !negative; /* 0.0 */
        Py_ssize_t zeros = 0;
        while (zeros < places && fraction[zeros] == '0') zeros++;
        return zeros <= 3 && zeros < places && places - zeros <= 15 && last_nonzero;
    }
    if (places == 1 && *fraction == '0') return whole <= 15; /* N.0 */
    return whole <= 7 && places <= 8 && last_nonzero;
}

static inline int is_number_char(char c) { return (c >= '0' && c <= '9') || c == '-' || c == '.'; }

/* A metadata value: a plain string (quotes included), true, false, null or a plain number. */
static inline int plain_value(const char **p, const char *end, Pair *pair) {
    const char *start = *p;
    Span text;
    pair->number = 0;
    if (start < end && *start == '"') {
        if (!plain_string(p, end, &text)) return 0;
    } else if (literal(p, end, "true", 4) || literal(p, end, "false", 5) ||
               literal(p, end, "null", 4)) {
    } else {
        const char *q = start;
        while (q < end && is_number_char(*q)) q++;
        if (!plain_number(start, q - start)) return 0;
        *p = q;
        pair->number = 1;
    }
    pair->value.at = start;
    pair->value.len = *p - start;
    return 1;
}

/* `{` pairs `}`: a flat object in the plain shape, no key twice. */
static int plain_object(const char **p, const char *end, Line *line) {
    if (!literal(p, end, "{", 1)) return 0;
    line->pairs = 0;
    if (literal(p, end, "}", 1)) return 1;
    for (;;) {
        if (line->pairs == MAX_PAIRS) return 0;
        Pair *pair = &line->pair[line->pairs];
        if (!plain_string(p, end, &pair->key) || !literal(p, end, ":", 1)) return 0;
        space(p, end);
        if (!plain_value(p, end, pair)) return 0;
        for (int i = 0; i < line->pairs; i++) {
            Span *other = &line->pair[i].key;
            if (other->len == pair->key.len && memcmp(other->at, pair->key.at, (size_t)other->len) == 0)
                return 0; /* orjson keeps the last value: let it decide */
        }
        line->pairs++;
        if (literal(p, end, "}", 1)) return 1;
        if (!literal(p, end, ",", 1)) return 0;
        space(p, end);
    }
}

#define KEY(p, end, text) literal(p, end, text, (Py_ssize_t)sizeof(text) - 1)

/* Whether a line (without its newline) has the plain shape; its parts if so. */
static int plain_line(const char *p, const char *end, Line *line) {
    if (end > p && end[-1] == '\r') end--;
    line->has_timestamp = line->has_received_at = line->has_metadata = 0;
    if (!KEY(&p, end, "{\"event\":")) return 0;
    space(&p, end);
    if (!plain_string(&p, end, &line->event) || !KEY(&p, end, ",")) return 0;
    space(&p, end);
    if (!KEY(&p, end, "\"user_id\":")) return 0;
    space(&p, end);
    if (!plain_string(&p, end, &line->user_id)) return 0;
    int after = 0; /* 1: timestamp read, 2: _received_at, 3: metadata */
    for (;;) {
        if (end - p == 1 && *p == '}') return 1;
        if (!KEY(&p, end, ",")) return 0;
        space(&p, end);
        if (after < 1 && KEY(&p, end, "\"timestamp\":")) {
            space(&p, end);
            if (!plain_string(&p, end, &line->timestamp)) return 0;
            line->has_timestamp = 1;
            after = 1;
        } else if (after < 2 && KEY(&p, end, "\"_received_at\":")) {
            space(&p, end);
            if (!plain_string(&p, end, &line->received_at)) return 0;
            line->has_received_at = 1;
            after = 2;
        } else if (after < 3 && KEY(&p, end, "\"metadata\":")) {
            space(&p, end);
            if (!plain_object(&p, end, line)) return 0;
            line->has_metadata = 1;
            after = 3;
        } else {
            return 0;
        }
    }
}

/* The scan --------------------------------------------------------------------------------- */

enum { RAW, EVENT, USER_ID, TIMESTAMP, RECEIVED_AT, VIEWS };
enum { METADATA, PAIRS, PAIR_TEXT, COLUMNS };

typedef struct {
    Views v[VIEWS];
    Column c[COLUMNS];
    char *plain;
    uint32_t *text;
    int64_t *index;
} Out;

static void write_line(Out *o, const Line *line, int32_t buffer, const char *base) {
    views_put(&o->v[EVENT], line->event.at, line->event.len, buffer, base, 1);
    views_put(&o->v[USER_ID], line->user_id.at, line->user_id.len, buffer, base, 1);
    views_put(&o->v[TIMESTAMP], line->timestamp.at, line->timestamp.len, buffer, base,
              line->has_timestamp);
    views_put(&o->v[RECEIVED_AT], line->received_at.at, line->received_at.len, buffer, base,
              line->has_received_at);
    Column *m = &o->c[METADATA], *t = &o->c[PAIR_TEXT];
    if (line->has_metadata) {
        column_put(m, "{", 1);
        for (int i = 0; i < line->pairs; i++) {
            const Pair *pair = &line->pair[i];
            column_put(m, i ? ",\"" : "\"", i ? 2 : 1);
            column_put(m, pair->key.at, pair->key.len);
            column_put(m, "\":", 2);
            column_put(m, pair->value.at, pair->value.len);
            Py_ssize_t value = pair->value.len;
            const char *v = pair->value.at;
            if (pair->number && value > 2 && v[value - 2] == '.' && v[value - 1] == '0') value -= 2;
            column_put(t, pair->key.at, pair->key.len);
            column_put(t, "\":", 2);
            column_put(t, v, value);
            column_end(t, 1);
        }
        column_put(m, "}", 1);
    }
    column_end(m, line->has_metadata);
    /* The pairs' list: its offsets count pair texts. */
    o->c[PAIRS].used = t->count;
    column_end(&o->c[PAIRS], line->has_metadata);
}

static void skip_line(Out *o) {
    for (int k = EVENT; k < VIEWS; k++) views_put(&o->v[k], NULL, 0, 0, NULL, 0);
    column_end(&o->c[METADATA], 0);
    o->c[PAIRS].used = o->c[PAIR_TEXT].count;
    column_end(&o->c[PAIRS], 0);
}

/* The lines of a text: as bytes.split splits it, but for the blank line after a final
   newline (none of no bytes). */
static Py_ssize_t count_lines(const char *p, const char *stop) {
    Py_ssize_t lines = 0;
    for (; p < stop; lines++) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        p = nl ? nl + 1 : stop;
    }
    return lines;
}

static void scan_texts(Out *o, Py_buffer *texts, Py_ssize_t count) {
    Line line = {0};
    Py_ssize_t row = 0;
    for (Py_ssize_t k = 0; k < count; k++) {
        const char *base = texts[k].buf, *stop = base + texts[k].len;
        int64_t index = 0;
        for (const char *p = base; p < stop; row++, index++) {
            const char *nl = memchr(p, '\n', (size_t)(stop - p));
            const char *end = nl ? nl : stop;
            o->text[row] = (uint32_t)k;
            o->index[row] = index;
            views_put(&o->v[RAW], p, end - p, (int32_t)k, base, 1);
            if (plain_line(p, end, &line)) {
                set_bit(o->plain, row);
                write_line(o, &line, (int32_t)k, base);
            } else {
                skip_line(o);
            }
            p = nl ? nl + 1 : stop;
        }
    }
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    (void)self;
    PyObject *seq = PySequence_Fast(arg, "scan takes a sequence of bytes");
    if (seq == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(seq), held = 0, size = 0, lines = 0;
    Py_buffer *texts = PyMem_Calloc((size_t)(count > 0 ? count : 1), sizeof(Py_buffer));
    Out o;
    memset(&o, 0, sizeof o);
    PyObject *plain = NULL, *text = NULL, *index = NULL, *result = NULL;
    PyObject *parts[VIEWS + COLUMNS] = {NULL};
    if (texts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < count; held++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, held);
        /* bytes, which no other thread can change while the scan runs without the GIL (a
           bytearray given more newlines after they were counted would overrun the rows). */
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "scan takes bytes, got %.100s", Py_TYPE(item)->tp_name);
            goto done;
        }
        if (PyObject_GetBuffer(item, &texts[held], PyBUF_SIMPLE) < 0) goto done;
        if (texts[held].len > INT32_MAX) { /* views point into a text with 32-bit offsets */
            held++;
            PyErr_SetString(PyExc_ValueError, "a text of more than TEXT_MAX bytes");
            goto done;
        }
        size += texts[held].len;
        lines += count_lines(texts[held].buf, (const char *)texts[held].buf + texts[held].len);
    }
    plain = new_bits(lines);
    text = PyBytes_FromStringAndSize(NULL, (lines > 0 ? lines : 1) * (Py_ssize_t)sizeof(uint32_t));
    index = PyBytes_FromStringAndSize(NULL, (lines > 0 ? lines : 1) * (Py_ssize_t)sizeof(int64_t));
    if (!plain || !text || !index) goto done;
    for (int k = 0; k < VIEWS; k++)
        if (views_init(&o.v[k], lines, k == TIMESTAMP || k == RECEIVED_AT) < 0) goto done;
    /* A pair is at least `"":0` and a separator: at most size / 5 of them. */
    if (column_init(&o.c[METADATA], size, lines, 1) < 0 ||
        column_init(&o.c[PAIRS], -1, lines, 1) < 0 ||
        column_init(&o.c[PAIR_TEXT], size, size / 5 + 1, 0) < 0)
        goto done;
    o.plain = PyBytes_AS_STRING(plain);
    o.text = (uint32_t *)PyBytes_AS_STRING(text);
    o.index = (int64_t *)PyBytes_AS_STRING(index);

    Py_BEGIN_ALLOW_THREADS
    scan_texts(&o, texts, count);
    Py_END_ALLOW_THREADS

    for (int k = 0; k < VIEWS; k++)
        if ((parts[k] = views_tuple(&o.v[k])) == NULL) goto done;
    for (int k = 0; k < COLUMNS; k++)
        if ((parts[VIEWS + k] = column_tuple(&o.c[k])) == NULL) goto done;
    result = Py_BuildValue("(nOOOOOOOOOOO)", lines, plain, text, index, parts[RAW], parts[EVENT],
                           parts[USER_ID], parts[TIMESTAMP], parts[RECEIVED_AT],
                           parts[VIEWS + METADATA], parts[VIEWS + PAIRS],
                           parts[VIEWS + PAIR_TEXT]);
done:
    for (Py_ssize_t k = 0; k < held; k++) PyBuffer_Release(&texts[k]);
    PyMem_Free(texts);
    Py_DECREF(seq);
    Py_XDECREF(plain);
    Py_XDECREF(text);
    Py_XDECREF(index);
    for (int k = 0; k < VIEWS + COLUMNS; k++) Py_XDECREF(parts[k]);
    for (int k = 0; k < VIEWS; k++) views_clear(&o.v[k]);
    for (int k = 0; k < COLUMNS; k++) column_clear(&o.c[k]);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "scan(texts) -> (lines, plain, text, index, raw, event, user_id, timestamp, _received_at, "
     "metadata, pairs, pair texts): the lines of UTF-8 texts (each line's text and its index "
     "there) and the parts of those in the plain shape, as Arrow buffers: validity bits or None "
     "and string views into the texts; or validity bits or None, 64-bit offsets and bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plain", "Lines in the plain shape, read in one pass each.", -1, methods,
};

PyMODINIT_FUNC PyInit__plain(void) {
    init_ends_plain();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "TEXT_MAX", INT32_MAX) < 0) Py_CLEAR(m);
    return m;
}
