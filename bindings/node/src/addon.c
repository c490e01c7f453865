/*
 * addon.c — the native half of the Node.js binding, built only on include/myriad.h and
 * Node-API (plus libuv's uv.h, which Node ships, for the poll and timer handles).
 *
 * One myriad loop per Node environment (the main thread, or each worker_threads worker),
 * driven by that environment's libuv loop — no extra thread:
 *   - a uv_poll on myriad's backend fd (the epoll fd: readable when myriad has I/O);
 *   - a uv_timer armed from myriad_loop_next_timeout (myriad's timer heap);
 *   - a uv_prepare that, before libuv blocks, runs myriad if JS changed something since
 *     (a response ended from a promise or a setTimeout) and re-arms the timer.
 * Each wakeup runs myriad_loop_run_once(lp, 1) inside one handle scope and one callback
 * scope, so promise jobs and process.nextTick callbacks queued by the handlers run when the
 * batch ends, as they do after Node's own I/O callbacks. The poll handle is ref'd only
 * while a server listens or drains: Node exits by itself once every server is closed.
 *
 * The JavaScript half (index.js) owns the API; this file exposes small functions on
 * numeric request handles (slot index + generation: a stale handle is refused, never
 * dereferenced).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>
#include <uv.h>

#include "myriad.h"

/* ---- instance state ---- */

#define SLOT_BITS 24
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define GEN_LIMIT (1u << 28) /* handle = gen * 2^24 + slot < 2^52: exact in a double */
#define PAGE_BITS 8
#define PAGE (1u << PAGE_BITS)
#define NO_SLOT UINT32_MAX
#define PUMP_ROUNDS 16 /* run_once rounds per wakeup before yielding to libuv */
#define ZERO_COPY_MIN (16 * 1024) /* Buffers at least this long are written without a copy */

enum { JS_DISPATCH, JS_BODY, JS_ABORT, JS_DRAIN, JS_CLOSED, JS_COUNT };

typedef struct inst inst;

/* A request slot. Slots live in fixed pages, so a slot's address is stable: it is the
 * userdata of the request's body, abort and drain callbacks (none of which myriad calls
 * after the request is finished). */
typedef struct {
    myriad_req_t *r; /* NULL when free */
    inst *I;
    uint32_t gen;
    uint32_t idx;
    uint32_t next_free;
} slot;

typedef struct server {
    inst *I;
    myriad_server_t *s;
    myriad_tls_config_t *tls; /* the HTTPS listeners' certificates (reload replaces them) */
    double id;
    int draining; /* shut down: freed on the loop once drained */
    myriad_access_log_t *alog; /* the accessLog option's log (for reopenAccessLog) */
    struct server *next;
} server;

struct inst {
    napi_env env;
    myriad_loop_t *lp;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_prepare_t prepare;
    uint64_t due;       /* the timer's due time (uv_now based), UINT64_MAX if stopped */
    int open_handles;   /* uv handles not yet closed */
    int active;         /* servers listening or draining: the poll handle is ref'd while > 0 */
    int depth;          /* nesting of our scopes around JS calls */
    int pumping;
    int closing;        /* environment teardown: no more JS calls */
    int have_js;
    napi_ref js[JS_COUNT];
    napi_ref resource;  /* the async resource of the callback scope */
    napi_async_context actx;
    slot **pages;
    uint32_t nslots, npages, free_head, live;
    server *servers;
    napi_async_cleanup_hook_handle cleanup;
};

/* ---- errors ---- */

static const char *code_name(int rc) {
    switch (rc) {
    case MYRIAD_EINVAL: return "MYRIAD_EINVAL";
    case MYRIAD_ENOMEM: return "MYRIAD_ENOMEM";
    case MYRIAD_ESTATE: return "MYRIAD_ESTATE";
    case MYRIAD_ENOTFOUND: return "MYRIAD_ENOTFOUND";
    case MYRIAD_EADDR: return "MYRIAD_EADDR";
    case MYRIAD_EWRONGTHREAD: return "MYRIAD_EWRONGTHREAD";
    case MYRIAD_EPANIC: return "MYRIAD_EPANIC";
    case MYRIAD_EGONE: return "MYRIAD_EGONE";
    case MYRIAD_EUNSUPPORTED: return "MYRIAD_EUNSUPPORTED";
    case MYRIAD_ETIMEDOUT: return "MYRIAD_ETIMEDOUT";
    case MYRIAD_ERESOLVE: return "MYRIAD_ERESOLVE";
    case MYRIAD_EFULL: return "MYRIAD_EFULL";
    case MYRIAD_ECANCELED: return "MYRIAD_ECANCELED";
    case MYRIAD_EPATTERN: return "MYRIAD_EPATTERN";
    case MYRIAD_ECONFLICT: return "MYRIAD_ECONFLICT";
    case MYRIAD_EMETHOD: return "MYRIAD_EMETHOD";
    case MYRIAD_EBADREQ: return "MYRIAD_EBADREQ";
    case MYRIAD_ETOOLARGE: return "MYRIAD_ETOOLARGE";
    case MYRIAD_EMEDIATYPE: return "MYRIAD_EMEDIATYPE";
    case MYRIAD_ESTOPPED: return "MYRIAD_ESTOPPED";
    case MYRIAD_ECOOKIE: return "MYRIAD_ECOOKIE";
    case MYRIAD_ETLS: return "MYRIAD_ETLS";
    case MYRIAD_EFILES_ROOT: return "MYRIAD_EFILES_ROOT";
    case MYRIAD_EFILES_FD: return "MYRIAD_EFILES_FD";
    case MYRIAD_EFILES_RANGE: return "MYRIAD_EFILES_RANGE";
    default: return rc <= MYRIAD_EOS_BASE ? "MYRIAD_EOS" : "MYRIAD_ERROR";
    }
}

/* Throws an Error with .code ("MYRIAD_EADDR"...), .errno (the negative code) and the
 * message "context: strerror". Returns NULL, the value a throwing callback returns. */
static napi_value throw_rc(napi_env env, int rc, const char *context) {
    char msg[600];
    napi_value m, c, err, n;
    if (rc == MYRIAD_ETLS && context) /* the configuration's own message names the file */
        snprintf(msg, sizeof msg, "%s", context);
    else
        snprintf(msg, sizeof msg, "%s%s%s", context ? context : "", context ? ": " : "", myriad_strerror(rc));
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_string_utf8(env, code_name(rc), NAPI_AUTO_LENGTH, &c);
    napi_create_error(env, c, m, &err);
    napi_create_int32(env, rc, &n);
    napi_set_named_property(env, err, "errno", n);
    napi_throw(env, err);
    return NULL;
}

/* throw_rc for the calls that record a detail (listen, start): the message is the
 * library's detail (which address, path or option failed, and why) when there is one, and
 * the error gets .detail too; lib/index.js turns OS errors into Node's shape. */
static napi_value throw_detail(napi_env env, int rc, const char *context) {
    const char *d = myriad_last_error_detail();
    char ctx[800];
    if (!*d) return throw_rc(env, rc, context);
    snprintf(ctx, sizeof ctx, "%s%s%s", context ? context : "", context ? ": " : "", d);
    napi_value m, c, err, n, dv;
    napi_create_string_utf8(env, ctx, NAPI_AUTO_LENGTH, &m);
    napi_create_string_utf8(env, code_name(rc), NAPI_AUTO_LENGTH, &c);
    napi_create_error(env, c, m, &err);
    napi_create_int32(env, rc, &n);
    napi_set_named_property(env, err, "errno", n);
    napi_create_string_utf8(env, d, NAPI_AUTO_LENGTH, &dv);
    napi_set_named_property(env, err, "detail", dv);
    napi_throw(env, err);
    return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
    return NULL;
}

/* A JS exception left pending by a call from C is reported like one thrown from any
 * other event callback: 'uncaughtException', or the process ends with it. */
static void check_exception(napi_env env, napi_status st) {
    bool pending = false;
    napi_value e;
    if (st == napi_ok) return;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
        napi_get_and_clear_last_exception(env, &e);
        napi_fatal_exception(env, e);
    }
}

/* ---- calling JS from myriad's callbacks ---- */

typedef struct {
    napi_handle_scope hs;
    napi_callback_scope cs;
    int opened_cs;
} jscope;

/* Opens a handle scope, and a callback scope unless one of ours is already open (promise
 * jobs and nextTick callbacks then run when the outermost one closes). */
static void js_enter(inst *I, jscope *sc) {
    napi_value res;
    napi_open_handle_scope(I->env, &sc->hs);
    sc->opened_cs = 0;
    if (I->depth == 0 && napi_get_reference_value(I->env, I->resource, &res) == napi_ok &&
        napi_open_callback_scope(I->env, res, I->actx, &sc->cs) == napi_ok)
        sc->opened_cs = 1;
    I->depth++;
}

static void js_leave(inst *I, jscope *sc) {
    I->depth--;
    if (sc->opened_cs) check_exception(I->env, napi_close_callback_scope(I->env, sc->cs));
    napi_close_handle_scope(I->env, sc->hs);
}

static void call_js(inst *I, int which, size_t argc, napi_value *argv) {
    napi_value fn, undef;
    napi_get_reference_value(I->env, I->js[which], &fn);
    napi_get_undefined(I->env, &undef);
    check_exception(I->env, napi_call_function(I->env, undef, fn, argc, argv, NULL));
}

static napi_value num(napi_env env, double v) {
    napi_value r;
    napi_create_double(env, v, &r);
    return r;
}

static napi_value latin1(napi_env env, const char *s, size_t n) {
    napi_value r;
    napi_create_string_latin1(env, s, n, &r);
    return r;
}

static napi_value undefined(napi_env env) {
    napi_value r;
    napi_get_undefined(env, &r);
    return r;
}

/* ---- request slots ---- */

static slot *slot_at(inst *I, uint32_t i) {
    return &I->pages[i >> PAGE_BITS][i & (PAGE - 1)];
}

static double handle_of(const slot *s) {
    return (double)s->gen * (double)(1u << SLOT_BITS) + (double)s->idx;
}

static slot *slot_alloc(inst *I, myriad_req_t *r) {
    slot *s;
    if (I->free_head != NO_SLOT) {
        s = slot_at(I, I->free_head);
        I->free_head = s->next_free;
    } else {
        if (I->nslots > SLOT_MASK) return NULL;
        if ((I->nslots & (PAGE - 1)) == 0) {
            slot **pages = realloc(I->pages, (I->npages + 1) * sizeof *pages);
            if (!pages) return NULL;
            I->pages = pages;
            if (!(pages[I->npages] = calloc(PAGE, sizeof(slot)))) return NULL;
            I->npages++;
        }
        s = slot_at(I, I->nslots);
        s->idx = I->nslots++;
        s->gen = 1;
        s->I = I;
    }
    s->r = r;
    I->live++;
    return s;
}

static void slot_release(slot *s) {
    inst *I = s->I;
    s->r = NULL;
    s->gen = s->gen + 1 >= GEN_LIMIT ? 1 : s->gen + 1;
    s->next_free = I->free_head;
    I->free_head = s->idx;
    I->live--;
}

/* The live slot a handle names, or NULL (stale, malformed, finished). */
static slot *slot_of(inst *I, double h) {
    uint64_t v;
    uint32_t i;
    slot *s;
    if (!(h >= 0) || h >= (double)GEN_LIMIT * (double)(1u << SLOT_BITS)) return NULL;
    v = (uint64_t)h;
    if ((double)v != h) return NULL;
    i = (uint32_t)(v & SLOT_MASK);
    if (i >= I->nslots) return NULL;
    s = slot_at(I, i);
    if (!s->r || s->gen != (uint32_t)(v >> SLOT_BITS)) return NULL;
    return s;
}

/* ---- driving myriad from libuv ---- */

static void pump(inst *I);

static void on_timer(uv_timer_t *t) {
    inst *I = t->data;
    I->due = UINT64_MAX;
    pump(I);
}

static void on_poll(uv_poll_t *p, int status, int events) {
    (void)status;
    (void)events;
    pump(p->data);
}

/* Arms the timer for myriad's next deadline `t` ms away (-1: none). */
static void arm(inst *I, int64_t t) {
    if (I->closing) return;
    if (t < 0) {
        if (I->due != UINT64_MAX) uv_timer_stop(&I->timer);
        I->due = UINT64_MAX;
        return;
    }
    uint64_t due = uv_now(I->timer.loop) + (uint64_t)t;
    if (due == I->due) return;
    I->due = due;
    uv_timer_start(&I->timer, on_timer, (uint64_t)t, 0);
}

/* Before libuv waits: JS may have changed myriad's state since the last wakeup (ended a
 * response from a promise, a setTimeout...). Run it now if it has work, re-arm if not. */
static void on_prepare(uv_prepare_t *p) {
    inst *I = p->data;
    int64_t t;
    if (I->closing) return;
    t = myriad_loop_next_timeout(I->lp);
    if (t == 0)
        pump(I);
    else
        arm(I, t);
}

static void pump(inst *I) {
    if (I->pumping || I->closing) return;
    I->pumping = 1;
    for (int round = 0; round < PUMP_ROUNDS; round++) {
        jscope sc;
        int rc;
        int64_t t;
        js_enter(I, &sc);
        rc = myriad_loop_run_once(I->lp, 1);
        js_leave(I, &sc); /* promise jobs and nextTicks run here */
        if (I->closing) break;
        if (rc < 0) fprintf(stderr, "myriad: loop: %s\n", myriad_strerror(rc));
        t = myriad_loop_next_timeout(I->lp);
        if (t != 0 || round == PUMP_ROUNDS - 1 || rc < 0) {
            arm(I, t);
            break;
        }
    }
    I->pumping = 0;
}

static void set_active(inst *I, int delta) {
    I->active += delta;
    if (I->closing) return;
    if (I->active > 0)
        uv_ref((uv_handle_t *)&I->poll);
    else
        uv_unref((uv_handle_t *)&I->poll);
}

/* ---- myriad's callbacks ---- */

/* Calls JS function `which` with one number (a handle or a server id), unless the
 * environment is going away. */
static void notify(inst *I, int which, double value) {
    jscope sc;
    napi_value argv[1];
    if (I->closing || !I->have_js) return;
    js_enter(I, &sc);
    argv[0] = num(I->env, value);
    call_js(I, which, 1, argv);
    js_leave(I, &sc);
}

static void on_body(myriad_req_t *r, const uint8_t *data, size_t len, int event, void *ud) {
    slot *s = ud;
    inst *I = s->I;
    jscope sc;
    napi_value argv[3];
    (void)r;
    if (I->closing || !I->have_js) return;
    js_enter(I, &sc);
    argv[0] = num(I->env, handle_of(s));
    if (event == MYRIAD_BODY_DATA) {
        void *copy;
        napi_create_buffer_copy(I->env, len, data, &copy, &argv[1]);
    } else {
        argv[1] = undefined(I->env);
    }
    argv[2] = num(I->env, event);
    call_js(I, JS_BODY, 3, argv);
    js_leave(I, &sc);
}

static void on_abort(myriad_req_t *r, void *ud) {
    slot *s = ud;
    inst *I = s->I;
    double h = handle_of(s);
    notify(I, JS_ABORT, h);
    /* Unless JS ended it meanwhile, the aborted request is released here. */
    if (slot_of(I, h) == s) {
        slot_release(s);
        myriad_req_finish(r);
    }
}

static void on_drain(myriad_req_t *r, void *ud) {
    slot *s = ud;
    (void)r;
    notify(s->I, JS_DRAIN, handle_of(s));
}

/* Whether a body may follow: then it is streamed to JS as it arrives, whether or not the
 * handler reads it (it can only be asked for inside the handler call). The library says
 * how it frames the body: over FastCGI an empty or missing CONTENT_LENGTH still has one,
 * which ends at the empty STDIN record. */
static int has_body(myriad_req_t *r) {
    int kind = myriad_req_body_size(r, NULL);
    return kind == MYRIAD_BODYLEN_KNOWN || kind == MYRIAD_BODYLEN_UNKNOWN;
}

static const char UNAVAILABLE[] = "Service Unavailable";

static void on_request(myriad_req_t *r, void *ud) {
    server *S = ud;
    inst *I = S->I;
    slot *s;
    int proto, body;
    const char *m, *p;
    size_t ml, pl;
    jscope sc;
    napi_value argv[5];
    if (I->closing || !I->have_js || !(s = slot_alloc(I, r))) {
        myriad_req_send(r, 503, "text/plain", 10, (const uint8_t *)UNAVAILABLE, sizeof UNAVAILABLE - 1);
        return;
    }
    proto = myriad_req_protocol(r);
    body = has_body(r);
    if (body) myriad_req_on_body(r, on_body, s, NULL);
    myriad_req_on_abort(r, on_abort, s, NULL);
    myriad_req_method(r, &m, &ml);
    myriad_req_path(r, &p, &pl);
    js_enter(I, &sc);
    argv[0] = num(I->env, S->id);
    argv[1] = num(I->env, handle_of(s));
    argv[2] = latin1(I->env, m, ml);
    argv[3] = latin1(I->env, p, pl);
    argv[4] = num(I->env, (proto == MYRIAD_FCGI ? 2 : 0) | body);
    call_js(I, JS_DISPATCH, 5, argv);
    js_leave(I, &sc);
}

static void server_free_later(myriad_loop_t *lp, void *ud) {
    server *S = ud;
    inst *I = S->I;
    (void)lp;
    for (server **pp = &I->servers; *pp; pp = &(*pp)->next) {
        if (*pp == S) {
            *pp = S->next;
            break;
        }
    }
    myriad_server_free(S->s);
    myriad_access_log_free(S->alog);
    myriad_tls_config_free(S->tls);
    free(S);
}

static void on_drained(myriad_loop_t *lp, void *ud) {
    server *S = ud;
    inst *I = S->I;
    /* The server cannot be freed inside its own callback: on the next iteration. */
    myriad_timer_start(lp, 0, 0, server_free_later, S, NULL, NULL);
    set_active(I, -1);
    notify(I, JS_CLOSED, S->id);
}

/* ---- argument helpers ---- */

static inst *the_inst(napi_env env) {
    void *d = NULL;
    napi_get_instance_data(env, &d);
    return d;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
    size_t argc = want;
    if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
    for (size_t i = argc; i < want; i++) napi_get_undefined(env, &argv[i]);
    return 0;
}

static slot *arg_slot(napi_env env, inst *I, napi_value v) {
    double h;
    if (napi_get_value_double(env, v, &h) != napi_ok) return NULL;
    return slot_of(I, h);
}

/* A JS string's bytes (latin1 or UTF-8) in `stack` if they fit, else on the heap
 * (`*heap`, to be freed). Returns -1 if `v` is not a string. */
static int get_str(napi_env env, napi_value v, int utf8, char *stack, size_t cap, char **out, size_t *len,
                   char **heap) {
    size_t n;
    napi_status st;
    *heap = NULL;
    st = utf8 ? napi_get_value_string_utf8(env, v, stack, cap, &n) : napi_get_value_string_latin1(env, v, stack, cap, &n);
    if (st != napi_ok) return -1;
    if (n + 1 < cap) { /* certainly complete (UTF-8 never stops more than 3 bytes short) */
        if (!utf8 || n + 4 < cap) {
            *out = stack;
            *len = n;
            return 0;
        }
    }
    st = utf8 ? napi_get_value_string_utf8(env, v, NULL, 0, &n) : napi_get_value_string_latin1(env, v, NULL, 0, &n);
    if (st != napi_ok || !(*heap = malloc(n + 1))) return -1;
    if (utf8)
        napi_get_value_string_utf8(env, v, *heap, n + 1, &n);
    else
        napi_get_value_string_latin1(env, v, *heap, n + 1, &n);
    *out = *heap;
    *len = n;
    return 0;
}

/* A body chunk: undefined/null (none), a string (UTF-8), a Buffer or other TypedArray, an
 * ArrayBuffer. */
typedef struct {
    const uint8_t *p;
    size_t n;
    char *heap;
    napi_value value; /* the TypedArray or ArrayBuffer, for a zero-copy write */
} chunk;

static int get_chunk(napi_env env, napi_value v, chunk *c, char *stack, size_t cap) {
    napi_valuetype t;
    bool is;
    c->p = NULL;
    c->n = 0;
    c->heap = NULL;
    c->value = NULL;
    napi_typeof(env, v, &t);
    if (t == napi_undefined || t == napi_null) return 0;
    if (t == napi_string) {
        char *out;
        if (get_str(env, v, 1, stack, cap, &out, &c->n, &c->heap) < 0) return -1;
        c->p = (const uint8_t *)out;
        return 0;
    }
    if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
        napi_typedarray_type tt;
        size_t len, off;
        void *data;
        napi_value ab;
        napi_get_typedarray_info(env, v, &tt, &len, &data, &ab, &off);
        size_t el = 1;
        switch (tt) {
        case napi_int16_array: case napi_uint16_array: el = 2; break;
        case napi_int32_array: case napi_uint32_array: case napi_float32_array: el = 4; break;
        case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: el = 8; break;
        default: break;
        }
        c->p = data;
        c->n = len * el;
        c->value = v;
        return 0;
    }
    if (napi_is_arraybuffer(env, v, &is) == napi_ok && is) {
        void *data;
        napi_get_arraybuffer_info(env, v, &data, &c->n);
        c->p = data;
        c->value = v;
        return 0;
    }
    return -1;
}

typedef struct {
    napi_env env;
    napi_ref ref;
} kept;

static void release_kept(void *ud) {
    kept *k = ud;
    napi_delete_reference(k->env, k->ref);
    free(k);
}

/* Queues a chunk: large Buffers without a copy (a reference keeps them alive until sent,
 * as Node's own sockets do), the rest copied. */
static int write_chunk(napi_env env, myriad_req_t *r, const chunk *c) {
    if (!c->n) return MYRIAD_OK;
    if (c->value && c->n >= ZERO_COPY_MIN) {
        kept *k = malloc(sizeof *k);
        if (k && napi_create_reference(env, c->value, 1, &k->ref) == napi_ok) {
            int rc;
            k->env = env;
            rc = myriad_req_write_free(r, c->p, c->n, release_kept, k);
            if (rc != MYRIAD_OK) release_kept(k);
            return rc;
        }
        free(k);
    }
    return myriad_req_write(r, c->p, c->n);
}

/* Sets the status and adds the headers of a flat [name, value, ...] array. */
static int send_head(napi_env env, myriad_req_t *r, napi_value status, napi_value headers) {
    int32_t code = 0;
    bool is_array = false;
    uint32_t n = 0;
    int rc;
    napi_get_value_int32(env, status, &code);
    if (code) {
        rc = myriad_req_status(r, code);
        if (rc != MYRIAD_OK) return rc;
    }
    if (napi_is_array(env, headers, &is_array) != napi_ok || !is_array) return MYRIAD_OK;
    napi_get_array_length(env, headers, &n);
    for (uint32_t i = 0; i + 1 < n; i += 2) {
        char nb[256], vb[2048], *name, *value, *nh, *vh;
        size_t nl, vl;
        napi_value nv, vv;
        napi_get_element(env, headers, i, &nv);
        napi_get_element(env, headers, i + 1, &vv);
        if (get_str(env, nv, 0, nb, sizeof nb, &name, &nl, &nh) < 0) return MYRIAD_EINVAL;
        if (get_str(env, vv, 0, vb, sizeof vb, &value, &vl, &vh) < 0) {
            free(nh);
            return MYRIAD_EINVAL;
        }
        rc = myriad_req_header_add(r, name, nl, value, vl);
        free(nh);
        free(vh);
        if (rc != MYRIAD_OK) return rc;
    }
    return MYRIAD_OK;
}

/* ---- functions for index.js ---- */

/* init(dispatch, body, abort, drain, closed) */
static napi_value js_init(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[JS_COUNT];
    if (get_args(env, info, JS_COUNT, argv) < 0) return NULL;
    for (int i = 0; i < JS_COUNT; i++) {
        napi_valuetype t;
        napi_typeof(env, argv[i], &t);
        if (t != napi_function) return throw_type(env, "init: functions expected");
    }
    for (int i = 0; i < JS_COUNT; i++) {
        if (I->js[i]) napi_delete_reference(env, I->js[i]);
        napi_create_reference(env, argv[i], 1, &I->js[i]);
    }
    I->have_js = 1;
    return NULL;
}

static const struct {
    const char *name;
    int which;
} LIMITS[] = {
    {"maxBody", MYRIAD_MAX_BODY},           {"maxHead", MYRIAD_MAX_HEAD},
    {"headerTimeout", MYRIAD_HEADER_TIMEOUT_MS}, {"bodyTimeout", MYRIAD_BODY_TIMEOUT_MS},
    {"idleTimeout", MYRIAD_IDLE_TIMEOUT_MS},  {"writeTimeout", MYRIAD_WRITE_TIMEOUT_MS},
    {"drainTimeout", MYRIAD_DRAIN_TIMEOUT_MS}, {"maxParams", MYRIAD_MAX_PARAMS},
    {"responseTimeout", MYRIAD_RESPONSE_TIMEOUT_MS},
    {"fcgiMaxRequests", MYRIAD_FCGI_MAX_REQUESTS},
};

static int add_listeners(napi_env env, myriad_server_t *srv, int proto, napi_value list, char *err, size_t errcap) {
    uint32_t n = 0;
    bool is_array = false;
    napi_is_array(env, list, &is_array);
    if (!is_array) return MYRIAD_OK;
    napi_get_array_length(env, list, &n);
    for (uint32_t i = 0; i < n; i++) {
        char buf[512], *a, *heap;
        size_t al;
        napi_value v;
        int rc;
        napi_get_element(env, list, i, &v);
        if (get_str(env, v, 1, buf, sizeof buf, &a, &al, &heap) < 0) {
            snprintf(err, errcap, "%s addresses must be strings", proto == MYRIAD_HTTP ? "http" : "fcgi");
            return MYRIAD_EINVAL;
        }
        rc = myriad_server_listen(srv, proto, a, al);
        if (rc != MYRIAD_OK) snprintf(err, errcap, "bad %s address '%.*s'", proto == MYRIAD_HTTP ? "http" : "fcgi", (int)(al > 200 ? 200 : al), a);
        free(heap);
        if (rc != MYRIAD_OK) return rc;
    }
    return MYRIAD_OK;
}

/* The accessLog (a path, "-" for stderr) and accessLogFormat options: *out stays NULL
 * without accessLog. */
static int access_log_opt(napi_env env, napi_value opts, myriad_access_log_t **out, char *err, size_t errcap) {
    char pbuf[512], fbuf[512], *p = NULL, *f = NULL, *ph = NULL, *fh = NULL;
    size_t pl = 0, fl = 0;
    napi_value v;
    napi_valuetype t;
    int rc = MYRIAD_OK;
    *out = NULL;
    if (napi_get_named_property(env, opts, "accessLogFormat", &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok &&
        t != napi_undefined) {
        if (t != napi_string || get_str(env, v, 1, fbuf, sizeof fbuf, &f, &fl, &fh) < 0) {
            snprintf(err, errcap, "accessLogFormat must be a string");
            return MYRIAD_EINVAL;
        }
    }
    if (napi_get_named_property(env, opts, "accessLog", &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok &&
        t != napi_undefined) {
        if (t != napi_string || get_str(env, v, 1, pbuf, sizeof pbuf, &p, &pl, &ph) < 0) {
            snprintf(err, errcap, "accessLog must be a string (a path, or '-' for stderr)");
            rc = MYRIAD_EINVAL;
        } else if ((rc = myriad_access_log_new(out, p, pl, f, fl)) != MYRIAD_OK) {
            snprintf(err, errcap, "accessLog '%.*s'", (int)(pl > 400 ? 400 : pl), p);
        }
    } else if (f) {
        snprintf(err, errcap, "accessLogFormat without accessLog");
        rc = MYRIAD_EINVAL;
    }
    free(ph);
    free(fh);
    return rc;
}

/* reopenAccessLog(id): opens the access log's path again (logrotate, SIGUSR1). */
static napi_value js_reopen_access_log(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[1];
    double id;
    int rc;
    if (get_args(env, info, 1, argv) < 0 || napi_get_value_double(env, argv[0], &id) != napi_ok)
        return throw_type(env, "reopenAccessLog: bad arguments");
    for (server *S = I->servers; S; S = S->next) {
        if (S->id == id && S->alog && (rc = myriad_access_log_reopen(S->alog)) != MYRIAD_OK)
            return throw_rc(env, rc, "reopenAccessLog");
    }
    return NULL;
}

/* Copies `msg` into `err` with the library's labels of PEM bytes replaced by the caller's
 * names for them (file names, in the demo). */
static void name_pems(char *err, size_t cap, const char *msg, const char *cert, size_t cl, const char *key, size_t kl) {
    size_t o = 0;
    while (*msg && o + 1 < cap) {
        const char *sub = NULL;
        size_t skip = 0, sl = 0;
        if (!strncmp(msg, "certificate PEM", 15)) sub = cert, sl = cl, skip = 15;
        else if (!strncmp(msg, "key PEM", 7)) sub = key, sl = kl, skip = 7;
        if (sub) {
            o += (size_t)snprintf(err + o, cap - o, "%.*s", (int)sl, sub);
            if (o >= cap) o = cap - 1;
            msg += skip;
        } else {
            err[o++] = *msg++;
        }
    }
    err[o] = 0;
}

/* A TLS configuration from [cert, key, certName, keyName, ...] (PEM Buffers, then the
 * names error messages use); NULL with `err` set if it is unusable. */
static myriad_tls_config_t *tls_from(napi_env env, napi_value pems, char *err, size_t errcap) {
    myriad_tls_config_t *c = NULL;
    uint32_t n = 0;
    bool arr = false;
    napi_is_array(env, pems, &arr);
    if (arr) napi_get_array_length(env, pems, &n);
    if (n < 4 || n % 4) {
        snprintf(err, errcap, "https needs a certificate and its key");
        return NULL;
    }
    if (myriad_tls_config_new(&c) != MYRIAD_OK) return NULL;
    for (uint32_t i = 0; i < n; i += 4) {
        napi_value v[4];
        void *cp, *kp;
        size_t cl, kl, cnl, knl;
        char cn[256], kn[256];
        for (uint32_t j = 0; j < 4; j++) napi_get_element(env, pems, i + j, &v[j]);
        if (napi_get_buffer_info(env, v[0], &cp, &cl) != napi_ok || napi_get_buffer_info(env, v[1], &kp, &kl) != napi_ok ||
            napi_get_value_string_utf8(env, v[2], cn, sizeof cn, &cnl) != napi_ok ||
            napi_get_value_string_utf8(env, v[3], kn, sizeof kn, &knl) != napi_ok) {
            snprintf(err, errcap, "cert and key must be strings or Buffers");
            goto bad;
        }
        if (myriad_tls_config_add_cert_pem(c, cp, cl, kp, kl) != MYRIAD_OK) {
            name_pems(err, errcap, myriad_tls_config_error(c), cn, cnl, kn, knl);
            goto bad;
        }
    }
    return c;
bad:
    myriad_tls_config_free(c);
    return NULL;
}

static server *find_server(inst *I, napi_env env, napi_value v);

/* reloadTls(id, pems): new HTTPS connections get these certificates; throws if unusable. */
static napi_value js_reload_tls(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[2];
    server *S;
    char err[600] = "";
    int rc;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (!(S = find_server(I, env, argv[0])) || !S->tls) return throw_rc(env, MYRIAD_ESTATE, "setSecureContext: no https listener");
    myriad_tls_config_t *fresh = tls_from(env, argv[1], err, sizeof err);
    if (!fresh) return throw_rc(env, MYRIAD_ETLS, err);
    rc = myriad_tls_config_reload(S->tls, fresh);
    myriad_tls_config_free(fresh);
    if (rc != MYRIAD_OK) return throw_rc(env, rc, myriad_tls_config_error(S->tls));
    return NULL;
}

/* listen(id, http[], fcgi[], options, https[], pems) -> true; throws on a bad address,
 * limit or certificate, or if binding fails. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[6], result;
    double id;
    myriad_server_t *srv = NULL;
    myriad_tls_config_t *tls = NULL;
    myriad_access_log_t *alog = NULL;
    server *S;
    char err[600] = "";
    int rc;
    uint32_t nhttps = 0;
    if (get_args(env, info, 6, argv) < 0 || napi_get_value_double(env, argv[0], &id) != napi_ok)
        return throw_type(env, "listen: bad arguments");
    if ((rc = myriad_server_new(&srv)) != MYRIAD_OK) return throw_rc(env, rc, "listen");
    if ((rc = add_listeners(env, srv, MYRIAD_HTTP, argv[1], err, sizeof err)) != MYRIAD_OK ||
        (rc = add_listeners(env, srv, MYRIAD_FCGI, argv[2], err, sizeof err)) != MYRIAD_OK)
        goto fail;
    napi_get_array_length(env, argv[4], &nhttps);
    if (nhttps) {
        if (!(tls = tls_from(env, argv[5], err, sizeof err))) {
            rc = MYRIAD_ETLS;
            goto fail;
        }
        for (uint32_t i = 0; i < nhttps; i++) {
            char buf[512], *a, *heap;
            size_t al;
            napi_value v;
            napi_get_element(env, argv[4], i, &v);
            if (get_str(env, v, 1, buf, sizeof buf, &a, &al, &heap) < 0) {
                rc = MYRIAD_EINVAL;
                snprintf(err, sizeof err, "https addresses must be strings");
                goto fail;
            }
            rc = myriad_server_listen_tls(srv, a, al, tls);
            if (rc != MYRIAD_OK) snprintf(err, sizeof err, "bad https address '%.*s'", (int)(al > 400 ? 400 : al), a);
            free(heap);
            if (rc != MYRIAD_OK) goto fail;
        }
    }
    {
        /* options.inherited: the socket-activated fds (LISTEN_FDS). The environment is left
           alone: other threads of the process may read it. */
        napi_value v;
        bool yes = false;
        if (napi_get_named_property(env, argv[3], "inherited", &v) == napi_ok &&
            napi_get_value_bool(env, v, &yes) == napi_ok && yes &&
            (rc = myriad_server_listen_inherited(srv, 0)) < 0) {
            err[0] = 0; /* the detail says it all */
            goto fail;
        }
    }
    for (size_t i = 0; i < sizeof LIMITS / sizeof LIMITS[0]; i++) {
        napi_value v;
        napi_valuetype t;
        double d;
        if (napi_get_named_property(env, argv[3], LIMITS[i].name, &v) != napi_ok) continue;
        napi_typeof(env, v, &t);
        if (t == napi_undefined) continue;
        if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d > 9007199254740991.0 || d != (double)(uint64_t)d ||
            (rc = myriad_server_set_limit(srv, LIMITS[i].which, (uint64_t)d)) != MYRIAD_OK) {
            rc = MYRIAD_EINVAL;
            snprintf(err, sizeof err, "bad value for %s", LIMITS[i].name);
            goto fail;
        }
    }
    if ((rc = access_log_opt(env, argv[3], &alog, err, sizeof err)) != MYRIAD_OK) goto fail;
    if (alog) myriad_server_set_access_log(srv, alog);
    if (!(S = calloc(1, sizeof *S))) {
        rc = MYRIAD_ENOMEM;
        goto fail;
    }
    S->I = I;
    S->s = srv;
    S->tls = tls;
    S->id = id;
    S->alog = alog;
    myriad_server_set_handler(srv, on_request, S, NULL);
    if ((rc = myriad_server_start(srv, I->lp)) != MYRIAD_OK) {
        free(S);
        myriad_server_free(srv);
        return throw_detail(env, rc, NULL);
    }
    S->next = I->servers;
    I->servers = S;
    set_active(I, 1);
    napi_get_boolean(env, true, &result);
    return result;
fail:
    myriad_server_free(srv);
    myriad_access_log_free(alog);
    myriad_tls_config_free(tls);
    /* (A TLS configuration error carries its own message, naming the file.) */
    return rc == MYRIAD_ETLS ? throw_rc(env, rc, err) : throw_detail(env, rc, err[0] ? err : NULL);
}

static server *find_server(inst *I, napi_env env, napi_value v) {
    double id;
    if (napi_get_value_double(env, v, &id) != napi_ok) return NULL;
    for (server *S = I->servers; S; S = S->next)
        if (S->id == id && !S->draining) return S;
    return NULL;
}

/* addresses(id) -> ["http", "127.0.0.1:40123", "fcgi", "unix:/x.sock", ...] */
static napi_value js_addresses(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[1], arr;
    server *S;
    uint32_t k = 0;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    napi_create_array(env, &arr);
    if (!(S = find_server(I, env, argv[0]))) return arr;
    size_t n = myriad_server_listener_count(S->s);
    for (size_t i = 0; i < n; i++) {
        char buf[512];
        int proto, len = myriad_server_listener_addr(S->s, i, &proto, buf, sizeof buf);
        if (len < 0) continue;
        const char *p = proto == MYRIAD_FCGI ? "fcgi" : proto == MYRIAD_HTTPS ? "https" : "http";
        napi_set_element(env, arr, k++, latin1(env, p, strlen(p)));
        napi_set_element(env, arr, k++, latin1(env, buf, (size_t)len));
    }
    return arr;
}

/* close(id): graceful shutdown; closed(id) is called once drained. */
static napi_value js_close(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value argv[1];
    server *S;
    int rc;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(S = find_server(I, env, argv[0]))) return throw_rc(env, MYRIAD_ESTATE, "close: not listening");
    if ((rc = myriad_server_shutdown(S->s, on_drained, S)) != MYRIAD_OK) return throw_rc(env, rc, "close");
    S->draining = 1;
    return NULL;
}

/* ---- requests ---- */

typedef int (*str_getter)(myriad_req_t *, const char **, size_t *);

static napi_value req_string(napi_env env, napi_callback_info info, str_getter get) {
    napi_value argv[1];
    slot *s;
    const char *v;
    size_t n;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0])) || get(s->r, &v, &n) != MYRIAD_OK) return undefined(env);
    return latin1(env, v, n);
}

/* target(h), query(h) -> string, or undefined once the request is finished. */
static napi_value js_target(napi_env env, napi_callback_info info) { return req_string(env, info, myriad_req_target); }
static napi_value js_query(napi_env env, napi_callback_info info) { return req_string(env, info, myriad_req_query); }

/* tls(h) -> [version, cipher, sni, alpn] (each a string or undefined), or undefined when
 * the request did not come over TLS (or is finished). */
static napi_value js_tls(napi_env env, napi_callback_info info) {
    static const int what[4] = {MYRIAD_TLS_VERSION, MYRIAD_TLS_CIPHER, MYRIAD_TLS_SNI, MYRIAD_TLS_ALPN};
    napi_value argv[1], arr;
    slot *s;
    const char *v;
    size_t n;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0])) || myriad_req_tls(s->r, MYRIAD_TLS_VERSION, &v, &n) != MYRIAD_OK)
        return undefined(env);
    napi_create_array_with_length(env, 4, &arr);
    for (uint32_t i = 0; i < 4; i++)
        napi_set_element(env, arr, i, myriad_req_tls(s->r, what[i], &v, &n) == MYRIAD_OK ? latin1(env, v, n) : undefined(env));
    return arr;
}

/* peer(h) -> "127.0.0.1:5678" | "[::1]:5678" | "unix:" | undefined */
static napi_value js_peer(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    slot *s;
    char buf[128];
    int n;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0])) || (n = myriad_req_peer(s->r, buf, sizeof buf)) < 0)
        return undefined(env);
    return latin1(env, buf, (size_t)n);
}

typedef int (*pair_count)(myriad_req_t *);
typedef int (*pair_getter)(myriad_req_t *, size_t, const char **, size_t *, const char **, size_t *);

/* A flat [name, value, ...] array of the headers (names lower-cased) or CGI variables, or
 * undefined once the request is finished. */
static napi_value req_pairs(napi_env env, napi_callback_info info, pair_count count, pair_getter at, int lower) {
    napi_value argv[1], arr;
    slot *s;
    int n;
    uint32_t k = 0;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0])) || (n = count(s->r)) < 0) return undefined(env);
    napi_create_array_with_length(env, (size_t)n * 2, &arr);
    for (int i = 0; i < n; i++) {
        const char *name, *value;
        size_t nl, vl;
        char low[256];
        if (at(s->r, (size_t)i, &name, &nl, &value, &vl) != MYRIAD_OK) continue;
        if (lower && nl <= sizeof low) {
            for (size_t j = 0; j < nl; j++) low[j] = (char)(name[j] >= 'A' && name[j] <= 'Z' ? name[j] + 32 : name[j]);
            name = low;
        }
        napi_set_element(env, arr, k++, latin1(env, name, nl));
        napi_set_element(env, arr, k++, latin1(env, value, vl));
    }
    return arr;
}

static napi_value js_headers(napi_env env, napi_callback_info info) {
    return req_pairs(env, info, myriad_req_header_count, myriad_req_header_at, 1);
}

static napi_value js_env(napi_env env, napi_callback_info info) {
    return req_pairs(env, info, myriad_req_cgi_count, myriad_req_cgi_at, 0);
}

static napi_value int_result(napi_env env, int v) {
    napi_value r;
    napi_create_int32(env, v, &r);
    return r;
}

/* The start of write() and end(), whose arguments are (h, status, headers, chunk): finds
 * the request (*sp, NULL once it is gone: MYRIAD_EGONE), sends the head unless status is 0
 * (the head went already), queues the chunk. Returns MYRIAD_OK or an error; *thrown is set
 * when a TypeError was thrown for a chunk of the wrong type. */
static int put(napi_env env, napi_callback_info info, char *stack, size_t cap, slot **sp, int *thrown) {
    napi_value argv[4];
    chunk c;
    int rc;
    *sp = NULL;
    *thrown = 0;
    if (get_args(env, info, 4, argv) < 0) return MYRIAD_EINVAL;
    if (get_chunk(env, argv[3], &c, stack, cap) < 0) {
        throw_type(env, "chunk must be a string, a Buffer, a TypedArray or an ArrayBuffer");
        *thrown = 1;
        return MYRIAD_EINVAL;
    }
    if (!(*sp = arg_slot(env, the_inst(env), argv[0]))) {
        free(c.heap);
        return MYRIAD_EGONE;
    }
    rc = send_head(env, (*sp)->r, argv[1], argv[2]);
    if (rc == MYRIAD_OK) rc = write_chunk(env, (*sp)->r, &c);
    free(c.heap);
    return rc;
}

/* write(h, status, headers, chunk) -> bytes queued and not yet sent, or a negative error
 * (MYRIAD_EGONE once the client is gone). */
static napi_value js_write(napi_env env, napi_callback_info info) {
    char stack[4096];
    slot *s;
    int thrown, rc = put(env, info, stack, sizeof stack, &s, &thrown);
    if (thrown) return NULL;
    if (rc == MYRIAD_OK) rc = myriad_req_flush(s->r);
    if (rc != MYRIAD_OK) return int_result(env, rc);
    return num(env, (double)myriad_req_queued(s->r));
}

/* end(h, status, headers, chunk) -> 0 or a negative error. Finishes the response and
 * releases the handle, even on error (after the head was refused, the client gets a
 * 500 instead). */
static napi_value js_end(napi_env env, napi_callback_info info) {
    char stack[16384];
    slot *s;
    myriad_req_t *r;
    int thrown, rc = put(env, info, stack, sizeof stack, &s, &thrown);
    if (thrown) return NULL;
    if (!s) return int_result(env, rc);
    r = s->r;
    slot_release(s);
    if (rc == MYRIAD_EINVAL) {
        static const char ERR[] = "Internal Server Error";
        myriad_req_send(r, 500, "text/plain", 10, (const uint8_t *)ERR, sizeof ERR - 1);
        return int_result(env, rc);
    }
    {
        int frc = myriad_req_finish(r);
        return int_result(env, rc != MYRIAD_OK ? rc : frc);
    }
}

/* abort(h) -> 0 or a negative error: abandons the response (myriad_req_abort: what was
 * flushed goes out, then the connection closes without ending it) and releases the handle. */
static napi_value js_abort(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    slot *s;
    myriad_req_t *r;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0]))) return int_result(env, MYRIAD_EGONE);
    r = s->r;
    slot_release(s);
    return int_result(env, myriad_req_abort(r));
}

/* queued(h) -> bytes written and not yet sent (0 once finished). */
static napi_value js_queued(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    slot *s;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    s = arg_slot(env, the_inst(env), argv[0]);
    return num(env, s ? (double)myriad_req_queued(s->r) : 0);
}

/* onDrain(h) -> 0: drain(h) is called once what was written so far is sent. */
static napi_value js_on_drain(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    slot *s;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0]))) return int_result(env, MYRIAD_EGONE);
    return int_result(env, myriad_req_on_drain(s->r, on_drain, s));
}

/* log(h, message): the front end's error log (FastCGI STDERR), myriad's log over HTTP. */
static napi_value js_log(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    slot *s;
    char stack[1024], *m, *heap;
    size_t n;
    int rc;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (get_str(env, argv[1], 1, stack, sizeof stack, &m, &n, &heap) < 0) return throw_type(env, "message must be a string");
    s = arg_slot(env, the_inst(env), argv[0]);
    rc = s ? myriad_req_stderr(s->r, (const uint8_t *)m, n) : MYRIAD_EGONE;
    free(heap);
    return int_result(env, rc);
}

/* stats() -> { requests: live request handles, iterations, ... (myriad_loop_stats) } */
/* listenFds() -> the number of socket-activated fds passed to this process. */
static napi_value js_listen_fds(napi_env env, napi_callback_info info) {
    int n = myriad_listen_fds();
    (void)info;
    if (n < 0) return throw_detail(env, n, NULL);
    return num(env, n);
}

/* notify(state) -> true (sent) or false (no NOTIFY_SOCKET); throws on a send error. */
static napi_value js_notify(napi_env env, napi_callback_info info) {
    napi_value argv[1], r;
    char buf[1024], *st, *heap;
    size_t n;
    int rc;
    if (get_args(env, info, 1, argv) < 0 || get_str(env, argv[0], 1, buf, sizeof buf, &st, &n, &heap) < 0)
        return throw_type(env, "notify: a string expected");
    rc = myriad_notify(st, n);
    free(heap);
    if (rc < 0) return throw_rc(env, rc, "sd_notify");
    napi_get_boolean(env, rc == 1, &r);
    return r;
}

/* watchdog() -> true if WATCHDOG=1 pings were armed on the loop, false if not asked for. */
static napi_value js_watchdog(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    napi_value r;
    int rc = myriad_watchdog_start(I->lp, NULL);
    (void)info;
    if (rc < 0) return throw_rc(env, rc, "watchdog");
    napi_get_boolean(env, rc == 1, &r);
    return r;
}

static napi_value js_stats(napi_env env, napi_callback_info info) {
    inst *I = the_inst(env);
    myriad_stats_t st;
    napi_value o;
    (void)info;
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "requests", num(env, I->live));
    napi_set_named_property(env, o, "servers", num(env, I->active));
    if (myriad_loop_stats(I->lp, &st) == MYRIAD_OK) {
#define F(x) napi_set_named_property(env, o, #x, num(env, (double)st.x))
        F(iterations);
        F(wait);
        F(ctl);
        F(read);
        F(received);
        F(write);
        F(accept);
        F(other);
        F(wakeups);
        F(accepted);
#undef F
    }
    return o;
}

/* ---- the environment's lifetime ---- */

static _Thread_local int tearing_down; /* this thread is freeing its environment */

/* The library's warnings and errors (a lack of fds, a response that timed out, a request
 * dropped unanswered) go to stderr, as Node's own warnings do; written here, in C, since it
 * may be called from any thread and must not re-enter JS. */
static void log_stderr(int level, const char *msg, size_t len, void *ud) {
    (void)ud;
    /* (What a teardown drops, requests left unanswered at process.exit, is not news.) */
    if (tearing_down) return;
    fprintf(stderr, "myriad: %s: %.*s\n", level <= 1 ? "error" : "warning", (int)len, msg);
}

/* ---- the supervisor, exec mode (Node cannot fork): supervise(opts) -> exit code ----
 * opts: { workers, maxRequests, watchdog (s), maxWorkers, user, http: [], fcgi: [], status: [],
 *         exec: [file, ...args], onListening(proto, addr), onReload() }. Blocks the calling
 * thread running the supervisor until its workers are drained (SIGTERM); onListening is
 * called for each bound listener before the workers start, onReload in the supervisor on
 * SIGHUP. Each worker executes `exec` with the listeners as LISTEN_FDS. */

typedef struct {
    napi_env env;
    napi_ref fn;
} sup_hook;

static void sup_reload(void *ud) {
    sup_hook *h = ud;
    napi_handle_scope scope;
    napi_value fn, global, result;
    if (!h->fn) return;
    napi_open_handle_scope(h->env, &scope);
    napi_get_reference_value(h->env, h->fn, &fn);
    napi_get_global(h->env, &global);
    if (napi_call_function(h->env, global, fn, 0, NULL, &result) == napi_pending_exception) {
        napi_value e;
        napi_get_and_clear_last_exception(h->env, &e);
        fprintf(stderr, "myriad: onReload threw\n");
    }
    napi_close_handle_scope(h->env, scope);
}

static int sup_number(napi_env env, napi_value opts, const char *name, double *out) {
    napi_value v;
    napi_valuetype t;
    if (napi_get_named_property(env, opts, name, &v) != napi_ok) return 0;
    napi_typeof(env, v, &t);
    if (t == napi_undefined) return 0;
    if (napi_get_value_double(env, v, out) != napi_ok || !(*out >= 0) || *out > 9007199254740991.0) return -1;
    return 1;
}

static int sup_list(napi_env env, myriad_sup_t *sup, napi_value opts, const char *name, int proto, char *err,
                    size_t errcap) {
    napi_value list;
    uint32_t n = 0;
    bool is_array = false;
    if (napi_get_named_property(env, opts, name, &list) != napi_ok) return MYRIAD_OK;
    napi_is_array(env, list, &is_array);
    if (!is_array) return MYRIAD_OK;
    napi_get_array_length(env, list, &n);
    for (uint32_t i = 0; i < n; i++) {
        char buf[512], *a, *heap;
        size_t al;
        napi_value v;
        int rc;
        napi_get_element(env, list, i, &v);
        if (get_str(env, v, 1, buf, sizeof buf, &a, &al, &heap) < 0) {
            snprintf(err, errcap, "%s addresses must be strings", name);
            return MYRIAD_EINVAL;
        }
        rc = proto ? myriad_sup_listen(sup, proto, a, al) : myriad_sup_status_listen(sup, a, al);
        if (rc != MYRIAD_OK) snprintf(err, errcap, "cannot listen on %.*s", (int)(al > 400 ? 400 : al), a);
        free(heap);
        if (rc != MYRIAD_OK) return rc;
    }
    return MYRIAD_OK;
}

static napi_value js_supervise(napi_env env, napi_callback_info info) {
    static const struct {
        const char *name;
        int opt;
        double scale;
    } OPTS[] = {
        {"workers", MYRIAD_SUP_WORKERS, 1},         {"maxWorkers", MYRIAD_SUP_MAX_WORKERS, 1},
        {"maxRequests", MYRIAD_SUP_MAX_REQUESTS, 1}, {"maxRss", MYRIAD_SUP_MAX_RSS, 1},
        {"watchdog", MYRIAD_SUP_WATCHDOG_MS, 1000},  {"drainTimeout", MYRIAD_SUP_DRAIN_TIMEOUT_MS, 1},
    };
    napi_value argv[1], v, exec, result;
    myriad_sup_t *sup = NULL;
    sup_hook hook = {env, NULL};
    char err[600] = "", **args = NULL;
    uint32_t argc = 0;
    bool is_array = false;
    int rc;
    if (get_args(env, info, 1, argv) < 0) return throw_type(env, "supervise: bad arguments");
    if ((rc = myriad_sup_new(&sup)) != MYRIAD_OK) return throw_rc(env, rc, "supervise");
    for (size_t i = 0; i < sizeof OPTS / sizeof OPTS[0]; i++) {
        double d;
        int got = sup_number(env, argv[0], OPTS[i].name, &d);
        if (got < 0 || (got && myriad_sup_set(sup, OPTS[i].opt, (int64_t)(d * OPTS[i].scale)) != MYRIAD_OK)) {
            rc = MYRIAD_EINVAL;
            snprintf(err, sizeof err, "bad value for %s", OPTS[i].name);
            goto out;
        }
    }
    if (napi_get_named_property(env, argv[0], "user", &v) == napi_ok) {
        char buf[256], *u, *heap;
        size_t ul;
        napi_valuetype t;
        napi_typeof(env, v, &t);
        if (t == napi_string && get_str(env, v, 1, buf, sizeof buf, &u, &ul, &heap) == 0) {
            rc = myriad_sup_set_user(sup, u, ul, NULL, 0);
            if (rc == MYRIAD_ENOTFOUND) snprintf(err, sizeof err, "unknown user '%.*s'", (int)(ul > 200 ? 200 : ul), u);
            free(heap);
            if (rc != MYRIAD_OK) goto out;
        }
    }
    if (napi_get_named_property(env, argv[0], "chroot", &v) == napi_ok) {
        char buf[512], *d, *heap;
        size_t dl;
        napi_valuetype t;
        napi_typeof(env, v, &t);
        if (t == napi_string && get_str(env, v, 1, buf, sizeof buf, &d, &dl, &heap) == 0) {
            rc = myriad_sup_set_chroot(sup, d, dl);
            if (rc != MYRIAD_OK) snprintf(err, sizeof err, "chroot '%.*s': %s", (int)(dl > 200 ? 200 : dl), d, myriad_strerror(rc));
            free(heap);
            if (rc != MYRIAD_OK) goto out;
        } else if (t != napi_undefined) {
            rc = MYRIAD_EINVAL;
            snprintf(err, sizeof err, "chroot must be a string (a directory)");
            goto out;
        }
    }
    if ((rc = sup_list(env, sup, argv[0], "http", MYRIAD_HTTP, err, sizeof err)) != MYRIAD_OK ||
        (rc = sup_list(env, sup, argv[0], "fcgi", MYRIAD_FCGI, err, sizeof err)) != MYRIAD_OK ||
        (rc = sup_list(env, sup, argv[0], "https", MYRIAD_HTTPS, err, sizeof err)) != MYRIAD_OK ||
        (rc = sup_list(env, sup, argv[0], "status", 0, err, sizeof err)) != MYRIAD_OK)
        goto out;
    {
        /* inherited: the socket-activated fds become the supervisor's listeners. */
        bool yes = false;
        if (napi_get_named_property(env, argv[0], "inherited", &v) == napi_ok &&
            napi_get_value_bool(env, v, &yes) == napi_ok && yes && (rc = myriad_sup_listen_inherited(sup)) < 0) {
            snprintf(err, sizeof err, "socket activation: %s", myriad_last_error_detail());
            goto out;
        }
        rc = MYRIAD_OK;
    }
    if (napi_get_named_property(env, argv[0], "onListening", &v) == napi_ok) {
        napi_valuetype t;
        napi_typeof(env, v, &t);
        for (size_t i = 0; t == napi_function && i < myriad_sup_listener_count(sup); i++) {
            char a[512];
            int proto, n = myriad_sup_listener_addr(sup, i, &proto, a, sizeof a);
            napi_value cargs[2], global, r;
            const char *pn = proto == MYRIAD_HTTP    ? "http"
                             : proto == MYRIAD_HTTPS ? "https"
                             : proto == MYRIAD_FCGI  ? "fcgi"
                                                     : "status";
            if (n < 0) continue;
            cargs[0] = latin1(env, pn, strlen(pn));
            cargs[1] = latin1(env, a, (size_t)n);
            napi_get_global(env, &global);
            if (napi_call_function(env, global, v, 2, cargs, &r) != napi_ok) goto out_js;
        }
    }
    if (napi_get_named_property(env, argv[0], "onReload", &v) == napi_ok) {
        napi_valuetype t;
        napi_typeof(env, v, &t);
        if (t == napi_function) {
            napi_create_reference(env, v, 1, &hook.fn);
            myriad_sup_on_reload(sup, sup_reload, &hook, NULL);
        }
    }
    if (napi_get_named_property(env, argv[0], "exec", &exec) == napi_ok) napi_is_array(env, exec, &is_array);
    if (!is_array || napi_get_array_length(env, exec, &argc) != napi_ok || !argc || !(args = calloc(argc, sizeof *args))) {
        rc = MYRIAD_EINVAL;
        snprintf(err, sizeof err, "exec: a command (an array of strings) is required");
        goto out;
    }
    for (uint32_t i = 0; i < argc; i++) {
        size_t n;
        napi_get_element(env, exec, i, &v);
        if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok || !(args[i] = malloc(n + 1))) {
            rc = MYRIAD_EINVAL;
            snprintf(err, sizeof err, "exec: arguments must be strings");
            goto out;
        }
        napi_get_value_string_utf8(env, v, args[i], n + 1, &n);
    }
    fflush(NULL);
    rc = myriad_sup_run_exec(sup, (const char *const *)args, argc);
out:
    for (uint32_t i = 0; args && i < argc; i++) free(args[i]);
    free(args);
    myriad_sup_free(sup);
    if (hook.fn) napi_delete_reference(env, hook.fn);
    if (rc < 0) return throw_rc(env, rc, err[0] ? err : "supervise");
    napi_create_int32(env, rc, &result);
    return result;
out_js:
    myriad_sup_free(sup);
    if (hook.fn) napi_delete_reference(env, hook.fn);
    return NULL;
}

static void on_handle_closed(uv_handle_t *h) {
    inst *I = h->data;
    if (--I->open_handles > 0) return;
    tearing_down = 1;
    myriad_loop_free(I->lp);
    tearing_down = 0;
    for (uint32_t i = 0; i < I->npages; i++) free(I->pages[i]);
    free(I->pages);
    napi_remove_async_cleanup_hook(I->cleanup);
    free(I);
}

/* Environment teardown (process exit, a worker ending): servers are freed at once, then
 * the uv handles are closed; the loop goes after them (libuv polls its fd until then). */
static void on_cleanup(napi_async_cleanup_hook_handle hh, void *arg) {
    inst *I = arg;
    I->cleanup = hh;
    I->closing = 1;
    tearing_down = 1;
    while (I->servers) {
        server *S = I->servers;
        I->servers = S->next;
        myriad_server_free(S->s);
        myriad_access_log_free(S->alog);
        myriad_tls_config_free(S->tls);
        free(S);
    }
    tearing_down = 0;
    for (int i = 0; i < JS_COUNT; i++)
        if (I->js[i]) napi_delete_reference(I->env, I->js[i]);
    napi_delete_reference(I->env, I->resource);
    napi_async_destroy(I->env, I->actx);
    uv_close((uv_handle_t *)&I->poll, on_handle_closed);
    uv_close((uv_handle_t *)&I->timer, on_handle_closed);
    uv_close((uv_handle_t *)&I->prepare, on_handle_closed);
}

#include "web.c"
#include "files.c"
#include "ws.c"

static napi_value init_module(napi_env env, napi_value exports) {
    myriad_set_logger(log_stderr, NULL, 2);
    static const struct {
        const char *name;
        napi_callback fn;
    } FNS[] = {
        {"init", js_init},       {"listen", js_listen}, {"addresses", js_addresses}, {"close", js_close},
        {"target", js_target},   {"query", js_query},   {"peer", js_peer},           {"headers", js_headers},
        {"env", js_env},         {"write", js_write},   {"end", js_end},             {"queued", js_queued}, {"abort", js_abort},
        {"onDrain", js_on_drain}, {"log", js_log},      {"stats", js_stats},
        {"listenFds", js_listen_fds}, {"notify", js_notify}, {"watchdog", js_watchdog},
        {"reopenAccessLog", js_reopen_access_log},
        {"supervise", js_supervise},
        {"tls", js_tls},         {"reloadTls", js_reload_tls},
        WEB_FNS
        FILES_FNS
        WS_FNS
    };
    inst *I;
    uv_loop_t *uvl;
    napi_value res, name;
    int rc;
    if (the_inst(env)) return throw_rc(env, MYRIAD_ESTATE, "myriad: loaded twice in one environment");
    if (napi_get_uv_event_loop(env, &uvl) != napi_ok) return throw_rc(env, MYRIAD_EUNSUPPORTED, "no libuv loop");
    if (!(I = calloc(1, sizeof *I))) return throw_rc(env, MYRIAD_ENOMEM, "myriad");
    I->env = env;
    I->free_head = NO_SLOT;
    I->due = UINT64_MAX;
    if ((rc = myriad_loop_new(&I->lp)) != MYRIAD_OK) {
        free(I);
        return throw_rc(env, rc, "myriad_loop_new");
    }
    uv_poll_init(uvl, &I->poll, myriad_loop_backend_fd(I->lp));
    uv_timer_init(uvl, &I->timer);
    uv_prepare_init(uvl, &I->prepare);
    I->poll.data = I->timer.data = I->prepare.data = I;
    I->open_handles = 3;
    uv_poll_start(&I->poll, UV_READABLE, on_poll);
    uv_prepare_start(&I->prepare, on_prepare);
    uv_unref((uv_handle_t *)&I->poll);
    uv_unref((uv_handle_t *)&I->timer);
    uv_unref((uv_handle_t *)&I->prepare);
    napi_create_object(env, &res);
    napi_create_reference(env, res, 1, &I->resource);
    napi_create_string_utf8(env, "myriad", NAPI_AUTO_LENGTH, &name);
    napi_async_init(env, res, name, &I->actx);
    napi_set_instance_data(env, I, NULL, NULL);
    napi_add_async_cleanup_hook(env, on_cleanup, I, NULL);
    for (size_t i = 0; i < sizeof FNS / sizeof FNS[0]; i++) {
        napi_value f;
        napi_create_function(env, FNS[i].name, NAPI_AUTO_LENGTH, FNS[i].fn, NULL, &f);
        napi_set_named_property(env, exports, FNS[i].name, f);
    }
    napi_set_named_property(env, exports, "version", latin1(env, myriad_version(), strlen(myriad_version())));
    return exports;
}

NAPI_MODULE_INIT() { return init_module(env, exports); }
