/*
 * _jf_kernel: the DAVIS J&F pixel counts of every object of one frame in one call (the compiled fast path of
 * masseg_search.evaluation.kernels; the pure-Python packed-bit kernel in packed.py computes the same counts).
 *
 * frame_counts(gt, pred, object_ids, half_widths, half_heights) -> (counts, unknown)
 *
 * One pass over each frame finds, per id, the bounding box of its pixels from runs of equal bytes (zero bytes are
 * skipped 64 at a time). Per object, its G | P box grown by one pixel is packed into uint64 row bitsets; the
 * seg2bmap boundary is shifts and XORs, the disk dilation a union of centred rectangles grown by shifted ORs, and
 * the counts are popcounts. Portable C99; GCC/Clang builtins and vector types only where those compilers build it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bump on any change of the call or of its results: Python uses the module only when its version matches. */
#define JF_KERNEL_VERSION 1
#ifndef JF_KERNEL_SOURCE_SHA256 /* setup.py defines it: Python also refuses a build older than its source */
#define JF_KERNEL_SOURCE_SHA256 ""
#endif

#define ONES8 0x0101010101010101ULL
#define LOW7 0x7f7f7f7f7f7f7f7fULL
#define HIGH8 0x8080808080808080ULL
#define VOID_ID 255

#if defined(__GNUC__) || defined(__clang__)
#define ctz64(x) __builtin_ctzll(x)
#else
static int ctz64(uint64_t x)
{
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
}
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__POPCNT__) || !(defined(__x86_64__) || defined(__i386__)))
#define popcount64(x) __builtin_popcountll(x)
#else /* x86 without -mpopcnt: the builtin would be a library call, slower than these few operations */
static inline int popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (int)((x * ONES8) >> 56);
}
#endif

/* 8 bytes as a word whose byte i (bits 8i..8i+7) is p[i], on hosts of either byte order. */
static inline uint64_t load8(const uint8_t *p)
{
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t word;
    memcpy(&word, p, 8);
    return word;
#else
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 |
           (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
#endif
}

/* Bit i set where byte i of word equals the pattern's byte (8 bits out). */
static inline uint64_t equal_bits8(uint64_t word, uint64_t pattern)
{
    uint64_t diff = word ^ pattern;
    uint64_t differs = ((diff & LOW7) + LOW7) | diff; /* top bit of each byte: the byte is non-zero */
    uint64_t equal = ~differs & HIGH8;
    return ((equal >> 7) * 0x0102040810204080ULL) >> 56; /* gathers bit 8i to bit 56+i, no carries */
}

/* ------------------------------------------------------------------------------------------- boxes per id */
typedef struct {
    Py_ssize_t y0, y1, x0, x1; /* half-open; y1 == 0: no pixel yet */
} Box;

static void box_add(Box *box, Py_ssize_t y, Py_ssize_t x0, Py_ssize_t x1)
{
    if (box->y1 == 0) {
        box->y0 = y, box->y1 = y + 1, box->x0 = x0, box->x1 = x1;
        return;
    }
    if (y < box->y0) box->y0 = y;
    if (y >= box->y1) box->y1 = y + 1;
    if (x0 < box->x0) box->x0 = x0;
    if (x1 > box->x1) box->x1 = x1;
}

/* Whether 64 bytes are all zero: one OR of 8 words (GCC and Clang: of 16-byte vectors). */
#if defined(__GNUC__) || defined(__clang__)
typedef uint64_t vec2 __attribute__((vector_size(16)));
static inline int zero_block(const uint8_t *p)
{
    vec2 a, b, c, d;
    memcpy(&a, p, 16), memcpy(&b, p + 16, 16), memcpy(&c, p + 32, 16), memcpy(&d, p + 48, 16);
    a |= b | c | d;
    return !(a[0] | a[1]);
}
#else
static inline int zero_block(const uint8_t *p)
{
    uint64_t any = 0;
    for (int k = 0; k < 64; k += 8) any |= load8(p + k);
    return !any;
}
#endif

/* Extend each non-zero id's box by its runs (void skipped when asked) and mark it seen. The frame is scanned as
 * one buffer, so zero blocks are skipped 64 bytes at a time across row ends; a run stops at its row's end. */
static void scan_labels(const uint8_t *labels, Py_ssize_t height, Py_ssize_t width, int skip_void, Box *boxes, unsigned char *seen)
{
    Py_ssize_t size = height * width, pos = 0, y = 0, row_start = 0;
    while (pos < size) {
        while (pos + 64 <= size && zero_block(labels + pos)) pos += 64;
        if (pos == size) break;
        if (pos + 8 <= size) {
            uint64_t word = load8(labels + pos);
            if (!word) {
                pos += 8;
                continue;
            }
            pos += ctz64(word) >> 3;
        } else if (!labels[pos]) {
            pos++;
            continue;
        }
        while (pos >= row_start + width) y++, row_start += width;
        Py_ssize_t row_end = row_start + width, start = pos++;
        uint8_t id = labels[start];
        uint64_t pattern = id * ONES8;
        for (;;) { /* the run's end: the first byte that differs, or the row's end */
            if (pos + 8 <= row_end) {
                uint64_t diff = load8(labels + pos) ^ pattern;
                if (diff) {
                    pos += ctz64(diff) >> 3;
                    break;
                }
                pos += 8;
            } else {
                while (pos < row_end && labels[pos] == id) pos++;
                break;
            }
        }
        seen[id] = 1;
        if (!(skip_void && id == VOID_ID)) box_add(&boxes[id], y, start - row_start, pos - row_start);
    }
}

/* ----------------------------------------------------------------------------------------- row bitsets */
/* Bits 0..n-1 of dst (words long, the rest zeroed): byte x of src equals id. Each word is gathered in a register
 * (ORing into memory chunk by chunk would chain every chunk through a store and a load). */
static void pack_row(const uint8_t *src, Py_ssize_t n, uint8_t id, uint64_t *dst, Py_ssize_t words)
{
    uint64_t pattern = id * ONES8, bits = 0;
    Py_ssize_t x = 0, i = 0;
    for (; x + 64 <= n; x += 64) {
        bits = 0;
        for (int k = 0; k < 64; k += 8) bits |= equal_bits8(load8(src + x + k), pattern) << k;
        dst[i++] = bits;
    }
    bits = 0;
    int k = 0;
    for (; x + 8 <= n; x += 8, k += 8) bits |= equal_bits8(load8(src + x), pattern) << k;
    if (x < n && n >= 8) { /* the last 1..7 bytes from one load ending at the row's end */
        int tail = (int)(n - x);
        uint64_t equal = equal_bits8(load8(src + n - 8), pattern) >> (8 - tail);
        bits |= equal << k;
    } else {
        for (; x < n; x++, k++) bits |= (uint64_t)(src[x] == id) << k;
    }
    if (i < words) dst[i++] = bits;
    while (i < words) dst[i++] = 0;
}

/* Bit x of the row shifted towards lower indices by one: the right neighbour's bit at x. */
static inline uint64_t right_neighbours(const uint64_t *row, Py_ssize_t i, Py_ssize_t words)
{
    return (row[i] >> 1) | (i + 1 < words ? row[i + 1] << 63 : 0);
}

/* seg2bmap of mask rows 0..rows-1 (row `rows` and bit `cols` hold the replicas or zeros that encode the
 * image-edge rules): differs from the right, lower or lower-right neighbour. With h = "differs from the right
 * one", the lower-right test equals h of the lower row wherever the first two fail. Returns the pixel count. */
static long long boundary_rows(const uint64_t *mask, Py_ssize_t rows, Py_ssize_t words, uint64_t last_mask, uint64_t *edge)
{
    long long count = 0;
    for (Py_ssize_t y = 0; y < rows; y++) {
        const uint64_t *row = mask + y * words, *below = row + words;
        uint64_t *out = edge + y * words;
        for (Py_ssize_t i = 0; i < words; i++) {
            uint64_t bits = (row[i] ^ right_neighbours(row, i, words)) | (below[i] ^ right_neighbours(below, i, words)) | (row[i] ^ below[i]);
            if (i == words - 1) bits &= last_mask;
            out[i] = bits;
            count += popcount64(bits);
        }
    }
    return count;
}

/* row |= row << shift | row >> shift (bits beyond either end dropped), any shift. */
static void or_shifted(uint64_t *row, Py_ssize_t words, Py_ssize_t shift, uint64_t *tmp)
{
    Py_ssize_t q = shift >> 6;
    unsigned r = (unsigned)(shift & 63);
    memcpy(tmp, row, (size_t)words * sizeof(uint64_t));
    for (Py_ssize_t i = 0; i < words; i++) {
        uint64_t bits = 0;
        if (i - q >= 0) bits |= tmp[i - q] << r | (r && i - q - 1 >= 0 ? tmp[i - q - 1] >> (64 - r) : 0);
        if (i + q < words) bits |= tmp[i + q] >> r | (r && i + q + 1 < words ? tmp[i + q + 1] << (64 - r) : 0);
        row[i] |= bits;
    }
}

/*
 * Growth steps for a run reaching `done` on each side of every source bit: a step s <= done + 1 keeps the run
 * whole even where the plane's edge cut part of it off, so growing the clipped plane is exact inside it (no
 * padding needed). Runs of a component joined later start again at done = 0.
 */
static void widen_rows(uint64_t *plane, Py_ssize_t rows, Py_ssize_t words, Py_ssize_t done, Py_ssize_t target, uint64_t *tmp)
{
    while (done < target) {
        Py_ssize_t step = target - done < done + 1 ? target - done : done + 1;
        done += step;
        if (step >= 64 * words) continue; /* shifted past both ends: no change */
        unsigned s = (unsigned)step, t = 64 - s;
        if (words == 1) {
            for (Py_ssize_t y = 0; y < rows; y++) plane[y] |= plane[y] << s | plane[y] >> s;
        } else if (step < 64) { /* the common case, in one sweep carrying the neighbouring words' originals */
            for (uint64_t *row = plane, *end = plane + rows * words; row < end; row += words) {
                uint64_t before = 0, cur = row[0];
                for (Py_ssize_t i = 0; i + 1 < words; i++) {
                    uint64_t next = row[i + 1];
                    row[i] = cur | cur << s | cur >> s | before >> t | next << t;
                    before = cur, cur = next;
                }
                row[words - 1] = cur | cur << s | cur >> s | before >> t;
            }
        } else {
            for (Py_ssize_t y = 0; y < rows; y++) or_shifted(plane + y * words, words, step, tmp);
        }
    }
}

static void grow_rows(uint64_t *plane, Py_ssize_t rows, Py_ssize_t words, Py_ssize_t target)
{
    Py_ssize_t done = 0;
    while (done < target) {
        Py_ssize_t step = target - done < done + 1 ? target - done : done + 1;
        if (step < rows) {
            Py_ssize_t span = step * words, size = rows * words;
            for (Py_ssize_t k = size - 1; k >= span; k--) plane[k] |= plane[k - span]; /* from above */
            for (Py_ssize_t k = 0; k + span < size; k++) plane[k] |= plane[k + span];  /* from below */
        }
        done += step;
    }
}

typedef struct {
    Py_ssize_t count;
    Py_ssize_t *half_widths;  /* narrowest first */
    Py_ssize_t *half_heights; /* tallest first */
} Disk;

/* How many query pixels lie within the disk around a source pixel: dilate the source (Horner's scheme over the
 * rectangles, tallest first: each join grows the union by the height step), AND, popcount. */
static long long matched(const uint64_t *source, const uint64_t *query, Py_ssize_t rows, Py_ssize_t words, const Disk *disk,
                         uint64_t *widened, uint64_t *uni, uint64_t *tmp)
{
    size_t bytes = (size_t)(rows * words) * sizeof(uint64_t);
    memcpy(widened, source, bytes);
    widen_rows(widened, rows, words, 0, disk->half_widths[0], tmp);
    memcpy(uni, widened, bytes);
    for (Py_ssize_t i = 1; i < disk->count; i++) {
        grow_rows(uni, rows, words, disk->half_heights[i - 1] - disk->half_heights[i]);
        widen_rows(widened, rows, words, disk->half_widths[i - 1], disk->half_widths[i], tmp);
        for (Py_ssize_t k = 0; k < rows * words; k++) uni[k] |= widened[k];
    }
    grow_rows(uni, rows, words, disk->half_heights[disk->count - 1]);
    long long count = 0;
    for (Py_ssize_t k = 0; k < rows * words; k++) count += popcount64(uni[k] & query[k]);
    return count;
}

/* ------------------------------------------------------------------------------------------- per object */
static uint64_t *workspace = NULL;
static size_t workspace_words = 0;

static uint64_t *reserve(size_t words)
{
    if (words > workspace_words) {
        uint64_t *grown = realloc(workspace, words * sizeof(uint64_t));
        if (!grown) return NULL;
        workspace = grown;
        workspace_words = words;
    }
    return workspace;
}

/* Pack the crop of one frame (void reads as background in G) and the replicas of the image's last row and
 * column, which make the boundary rule's missing comparisons equal: exactly seg2bmap's edge rules. */
static void pack_crop(const uint8_t *labels, Py_ssize_t width, Py_ssize_t top, Py_ssize_t left, Py_ssize_t rows, Py_ssize_t cols,
                      uint8_t id, int empty, int at_bottom, int at_right, Py_ssize_t words, uint64_t *mask)
{
    for (Py_ssize_t y = 0; y < rows; y++) {
        uint64_t *row = mask + y * words;
        if (empty) {
            memset(row, 0, (size_t)words * sizeof(uint64_t));
            continue;
        }
        pack_row(labels + (top + y) * width + left, cols, id, row, words);
        if (at_right) row[cols >> 6] |= ((row[(cols - 1) >> 6] >> ((cols - 1) & 63)) & 1) << (cols & 63);
    }
    if (at_bottom) /* after the column, so the corner's replica equals the corner */
        memcpy(mask + rows * words, mask + (rows - 1) * words, (size_t)words * sizeof(uint64_t));
    else
        memset(mask + rows * words, 0, (size_t)words * sizeof(uint64_t));
}

/* (|G&P|, |G|P|, P boundary, G boundary, matched P boundary, matched G boundary) of one object whose G | P
 * lies in `box`; -1 when out of memory. */
static int object_counts(const uint8_t *gt, const uint8_t *pred, Py_ssize_t height, Py_ssize_t width, uint8_t id, const Box *box,
                         const Disk *disk, long long *out)
{
    Py_ssize_t top = box->y0 > 0 ? box->y0 - 1 : 0, bottom = box->y1 < height ? box->y1 + 1 : height;
    Py_ssize_t left = box->x0 > 0 ? box->x0 - 1 : 0, right = box->x1 < width ? box->x1 + 1 : width;
    Py_ssize_t rows = bottom - top, cols = right - left;
    Py_ssize_t words = (cols + 64) >> 6; /* room for bit `cols`: the replica column */
    Py_ssize_t plane = rows * words, mask_plane = plane + words;
    uint64_t last_mask = (((uint64_t)1) << (cols & 63)) - 1;
    uint64_t *base = reserve((size_t)(2 * mask_plane + 4 * plane + words));
    if (!base) return -1;
    uint64_t *g_mask = base, *p_mask = g_mask + mask_plane, *g_edge = p_mask + mask_plane, *p_edge = g_edge + plane;
    uint64_t *widened = p_edge + plane, *uni = widened + plane, *tmp = uni + plane;
    int at_bottom = bottom == height, at_right = right == width;

    pack_crop(gt, width, top, left, rows, cols, id, id == VOID_ID, at_bottom, at_right, words, g_mask);
    pack_crop(pred, width, top, left, rows, cols, id, 0, at_bottom, at_right, words, p_mask);
    long long intersection = 0, uni_count = 0;
    for (Py_ssize_t y = 0; y < rows; y++) {
        const uint64_t *g = g_mask + y * words, *p = p_mask + y * words;
        for (Py_ssize_t i = 0; i < words; i++) {
            uint64_t keep = i == words - 1 ? last_mask : ~(uint64_t)0; /* not the replica bit */
            intersection += popcount64(g[i] & p[i] & keep);
            uni_count += popcount64((g[i] | p[i]) & keep);
        }
    }
    long long gt_count = boundary_rows(g_mask, rows, words, last_mask, g_edge);
    long long pred_count = boundary_rows(p_mask, rows, words, last_mask, p_edge);
    long long pred_matched = 0, gt_matched = 0;
    if (pred_count && gt_count) {
        /* pixels on both boundaries match themselves (the disk holds its centre): equal boundaries need no dilation */
        long long shared = 0;
        for (Py_ssize_t k = 0; k < plane; k++) shared += popcount64(g_edge[k] & p_edge[k]);
        pred_matched = shared == pred_count ? pred_count : matched(g_edge, p_edge, rows, words, disk, widened, uni, tmp);
        gt_matched = shared == gt_count ? gt_count : matched(p_edge, g_edge, rows, words, disk, widened, uni, tmp);
    }
    out[0] = intersection, out[1] = uni_count, out[2] = pred_count, out[3] = gt_count, out[4] = pred_matched, out[5] = gt_matched;
    return 0;
}

/* ------------------------------------------------------------------------------------------- Python glue */
static int get_labels(PyObject *obj, Py_buffer *view, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->ndim != 2 || view->itemsize != 1 || (view->format && strcmp(view->format, "B") != 0)) {
        PyErr_Format(PyExc_TypeError, "%s must be a 2-D uint8 array", name);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Sequence of non-negative ints into a fresh array (reversed when asked); -1 on error. */
static Py_ssize_t read_sizes(PyObject *obj, const char *name, int reverse, Py_ssize_t **out)
{
    PyObject *items = PySequence_Fast(obj, name);
    if (!items) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    Py_ssize_t *values = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(Py_ssize_t));
    if (!values) {
        Py_DECREF(items);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t value = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(items, i));
        if (value < 0) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s must hold non-negative ints", name);
            PyMem_Free(values);
            Py_DECREF(items);
            return -1;
        }
        values[reverse ? count - 1 - i : i] = value;
    }
    Py_DECREF(items);
    *out = values;
    return count;
}

/* The disk from disk_rectangles' order (widest first) into the kernel's (narrowest first), checked. */
static int read_disk(PyObject *widths_obj, PyObject *heights_obj, Disk *disk)
{
    disk->half_widths = disk->half_heights = NULL;
    Py_ssize_t widths = read_sizes(widths_obj, "half_widths", 1, &disk->half_widths);
    if (widths < 0) return -1;
    Py_ssize_t heights = read_sizes(heights_obj, "half_heights", 1, &disk->half_heights);
    disk->count = widths;
    if (heights < 0) return -1;
    int ordered = widths == heights && widths > 0;
    for (Py_ssize_t i = 1; ordered && i < widths; i++)
        ordered = disk->half_widths[i] > disk->half_widths[i - 1] && disk->half_heights[i] < disk->half_heights[i - 1];
    if (!ordered) {
        PyErr_SetString(PyExc_ValueError, "the disk must be 1+ centred rectangles, widths falling and heights rising");
        return -1;
    }
    return 0;
}

static PyObject *counts_tuple(const long long *counts)
{
    PyObject *tuple = PyTuple_New(6);
    if (!tuple) return NULL;
    for (int k = 0; k < 6; k++) {
        PyObject *value = PyLong_FromLongLong(counts[k]);
        if (!value) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, k, value);
    }
    return tuple;
}

static PyObject *frame_counts(PyObject *self, PyObject *args)
{
    PyObject *gt_obj, *pred_obj, *ids_obj, *widths_obj, *heights_obj, *ids = NULL, *counts = NULL, *result = NULL;
    Py_buffer gt = {0}, pred = {0};
    Disk disk = {0, NULL, NULL};
    unsigned char is_object[256] = {0}, seen_pred[256] = {0}, seen_gt[256] = {0};
    Box boxes[256];
    Py_ssize_t count, height, width;
    int unknown = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOO:frame_counts", &gt_obj, &pred_obj, &ids_obj, &widths_obj, &heights_obj)) return NULL;
    if (get_labels(gt_obj, &gt, "gt") < 0) return NULL;
    if (get_labels(pred_obj, &pred, "pred") < 0) goto done;
    if (gt.shape[0] != pred.shape[0] || gt.shape[1] != pred.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "gt and pred must have the same shape");
        goto done;
    }
    if (read_disk(widths_obj, heights_obj, &disk) < 0) goto done;
    if (!(ids = PySequence_Fast(ids_obj, "object_ids must be a sequence"))) goto done;
    count = PySequence_Fast_GET_SIZE(ids), height = gt.shape[0], width = gt.shape[1];
    for (Py_ssize_t i = 0; i < count; i++) {
        long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(ids, i));
        if (id < 1 || id > 255) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "object ids must be 1..255");
            goto done;
        }
        is_object[id] = 1;
    }
    memset(boxes, 0, sizeof(boxes));
    scan_labels(gt.buf, height, width, 1, boxes, seen_gt);
    scan_labels(pred.buf, height, width, 0, boxes, seen_pred);
    for (int id = 1; id < 256; id++) unknown |= seen_pred[id] && !is_object[id];
    if (!(counts = PyList_New(count))) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint8_t id = (uint8_t)PyLong_AsLong(PySequence_Fast_GET_ITEM(ids, i));
        PyObject *item;
        if (boxes[id].y1 == 0) {
            item = Py_None;
            Py_INCREF(item);
        } else {
            long long values[6];
            if (object_counts(gt.buf, pred.buf, height, width, id, &boxes[id], &disk, values) < 0) {
                PyErr_NoMemory();
                goto done;
            }
            if (!(item = counts_tuple(values))) goto done;
        }
        PyList_SET_ITEM(counts, i, item);
    }
    result = Py_BuildValue("(OO)", counts, unknown ? Py_True : Py_False);
done:
    Py_XDECREF(counts);
    Py_XDECREF(ids);
    PyMem_Free(disk.half_widths);
    PyMem_Free(disk.half_heights);
    if (pred.obj) PyBuffer_Release(&pred);
    if (gt.obj) PyBuffer_Release(&gt);
    return result;
}

PyDoc_STRVAR(frame_counts_doc,
             "frame_counts(gt, pred, object_ids, half_widths, half_heights) -> (counts, unknown)\n\n"
             "gt, pred: 2-D C-contiguous uint8 arrays of one shape (void 255 in gt is background). object_ids: ints\n"
             "1..255. The disk: the centred rectangles (2w+1) x (2h+1) whose union it is, widest first.\n"
             "counts[i]: None when object i is in neither mask, else (|G&P|, |G|P|, P boundary, G boundary,\n"
             "matched P boundary, matched G boundary) by seg2bmap and the disk. unknown: pred holds a non-zero\n"
             "id that is not an object.");

static PyMethodDef methods[] = {
    {"frame_counts", frame_counts, METH_VARARGS, frame_counts_doc},
    {NULL, NULL, 0, NULL},
};

static void module_free(void *module)
{
    (void)module;
    free(workspace);
    workspace = NULL;
    workspace_words = 0;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_jf_kernel", "The compiled per-frame DAVIS J&F counts (see frame_counts).", -1, methods,
    NULL, NULL, NULL, module_free,
};

PyMODINIT_FUNC PyInit__jf_kernel(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module && (PyModule_AddIntConstant(module, "VERSION", JF_KERNEL_VERSION) < 0 ||
                   PyModule_AddStringConstant(module, "SOURCE_SHA256", JF_KERNEL_SOURCE_SHA256) < 0)) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
