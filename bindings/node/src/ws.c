/*
 * ws.c — the native half of the Node binding's WebSocket, included by addon.c (it uses the
 * instance, the request slots and the argument helpers defined there). lib/ws.js owns the
 * API (the `ws` package's server-side shape); this file exposes:
 *
 *   wsAccept(h, opts, onEvent) -> External | negative error   (the request handle is released)
 *   wsSend(w, data, binary) / wsPing(w, data) / wsClose(w, code, reason) -> 0 | negative
 *   wsTerminate(w), wsPause(w, paused), wsQueued(w) -> bytes
 *   wsSubscribe(w, topic) / wsUnsubscribe(w, topic) -> 0 | negative
 *   wsPublish(w | null, topic, data, binary) -> subscribers reached
 *   wsProtocol(w) -> string | undefined
 *
 * onEvent(kind, a, b): WS_OPEN; WS_MESSAGE (a Buffer copy, b isBinary); WS_DRAIN;
 * WS_CLOSE (a code, b reason string). The native state lives until the connection closed
 * and the JS object was collected: the event function (which holds the JS object) is
 * referenced strongly while the connection is open, weakly after.
 */
enum { WS_OPEN = 0, WS_MESSAGE = 1, WS_DRAIN = 2, WS_CLOSE = 3 };

typedef struct {
    inst *I;
    myriad_ws_t *ws; /* NULL once closed */
    napi_ref cb;
} nws;

static void nws_call(nws *w, int kind, napi_value a, napi_value b) {
    inst *I = w->I;
    napi_value fn, argv[3], undef;
    if (I->closing || !w->cb || napi_get_reference_value(I->env, w->cb, &fn) != napi_ok || !fn) return;
    argv[0] = num(I->env, kind);
    argv[1] = a ? a : undefined(I->env);
    argv[2] = b ? b : undefined(I->env);
    napi_get_undefined(I->env, &undef);
    check_exception(I->env, napi_call_function(I->env, undef, fn, 3, argv, NULL));
}

static void nws_open(myriad_ws_t *ws, void *ud) {
    nws *w = ud;
    jscope sc;
    (void)ws;
    if (w->I->closing) return;
    js_enter(w->I, &sc);
    nws_call(w, WS_OPEN, NULL, NULL);
    js_leave(w->I, &sc);
}

static void nws_message(myriad_ws_t *ws, int op, const uint8_t *d, size_t n, void *ud) {
    nws *w = ud;
    jscope sc;
    napi_value buf, bin;
    void *copy;
    (void)ws;
    if (w->I->closing) return;
    js_enter(w->I, &sc);
    napi_create_buffer_copy(w->I->env, n, d, &copy, &buf);
    napi_get_boolean(w->I->env, op == MYRIAD_WS_BINARY, &bin);
    nws_call(w, WS_MESSAGE, buf, bin);
    js_leave(w->I, &sc);
}

static void nws_drain(myriad_ws_t *ws, void *ud) {
    nws *w = ud;
    jscope sc;
    (void)ws;
    if (w->I->closing) return;
    js_enter(w->I, &sc);
    nws_call(w, WS_DRAIN, NULL, NULL);
    js_leave(w->I, &sc);
}

static void nws_close(myriad_ws_t *ws, int code, const char *reason, size_t len, void *ud) {
    nws *w = ud;
    jscope sc;
    napi_value r;
    (void)ws;
    w->ws = NULL;
    if (!w->I->closing) {
        js_enter(w->I, &sc);
        napi_create_string_utf8(w->I->env, reason, len, &r);
        nws_call(w, WS_CLOSE, num(w->I->env, code), r);
        js_leave(w->I, &sc);
    }
    /* From now on only the JS object keeps the state (weakly held event function). */
    if (w->cb) {
        uint32_t left;
        napi_reference_unref(w->I->env, w->cb, &left);
    }
}

static void nws_finalize(napi_env env, void *data, void *hint) {
    nws *w = data;
    (void)hint;
    if (w->ws) return; /* still open: cannot happen (the strong reference keeps the object) */
    if (w->cb) napi_delete_reference(env, w->cb);
    free(w);
}

static nws *arg_ws(napi_env env, napi_value v) {
    void *p = NULL;
    napi_valuetype t;
    napi_typeof(env, v, &t);
    if (t != napi_external || napi_get_value_external(env, v, &p) != napi_ok) return NULL;
    return p;
}

static int opt_num(napi_env env, napi_value o, const char *k, double *out) {
    napi_value v;
    napi_valuetype t;
    bool has = false;
    if (napi_has_named_property(env, o, k, &has) != napi_ok || !has) return 0;
    napi_get_named_property(env, o, k, &v);
    napi_typeof(env, v, &t);
    if (t == napi_undefined) return 0;
    if (t == napi_boolean) {
        bool b;
        napi_get_value_bool(env, v, &b);
        *out = b;
        return 1;
    }
    if (t != napi_number || napi_get_value_double(env, v, out) != napi_ok || !(*out >= 0)) return -1;
    return 1;
}

/* wsAccept(h, opts, onEvent) */
static napi_value js_ws_accept(napi_env env, napi_callback_info info) {
    napi_value argv[3], ext, pv;
    inst *I = the_inst(env);
    slot *s;
    myriad_req_t *r;
    myriad_ws_options_t o;
    napi_valuetype t;
    char pstack[1024], *protos = NULL, *pheap = NULL;
    size_t plen = 0;
    double d;
    int rc;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    napi_typeof(env, argv[2], &t);
    if (t != napi_function) return throw_type(env, "wsAccept: a function expected");
    if (!(s = arg_slot(env, I, argv[0]))) return int_result(env, MYRIAD_EGONE);
    myriad_ws_options_init(&o);
    napi_typeof(env, argv[1], &t);
    if (t == napi_object) {
        bool has = false;
        if (opt_num(env, argv[1], "maxPayload", &d) > 0) o.max_message = (size_t)d;
        if (opt_num(env, argv[1], "maxBackpressure", &d) > 0) o.max_backpressure = (size_t)d;
        if (opt_num(env, argv[1], "closeOnBackpressure", &d) > 0) o.close_on_backpressure = d != 0;
        if (opt_num(env, argv[1], "perMessageDeflate", &d) > 0) o.deflate = d != 0;
        if (opt_num(env, argv[1], "threshold", &d) > 0) o.compress_threshold = (size_t)d;
        if (opt_num(env, argv[1], "pingInterval", &d) > 0) o.ping_interval_ms = (uint32_t)d;
        if (opt_num(env, argv[1], "idleTimeout", &d) > 0) o.idle_timeout_ms = (uint32_t)d;
        if (napi_has_named_property(env, argv[1], "protocols", &has) == napi_ok && has) {
            napi_get_named_property(env, argv[1], "protocols", &pv);
            napi_typeof(env, pv, &t);
            if (t == napi_string) {
                if (get_str(env, pv, 1, pstack, sizeof pstack, &protos, &plen, &pheap) < 0)
                    return throw_type(env, "protocols: a string");
                o.protocols = protos;
                o.protocols_len = plen;
            }
        }
    }
    nws *w = calloc(1, sizeof *w);
    if (!w) {
        free(pheap);
        return throw_rc(env, MYRIAD_ENOMEM, "wsAccept");
    }
    w->I = I;
    r = s->r;
    slot_release(s);
    myriad_ws_callbacks_t cbs = {nws_open, nws_message, nws_drain, nws_close};
    rc = myriad_ws_accept(r, &o, &cbs, &w->ws, w, NULL);
    free(pheap);
    if (rc != MYRIAD_OK) {
        free(w);
        return int_result(env, rc);
    }
    napi_create_reference(env, argv[2], 1, &w->cb);
    napi_create_external(env, w, nws_finalize, NULL, &ext);
    return ext;
}

/* A data argument: a string (UTF-8), Buffer/TypedArray or ArrayBuffer. */
#define WS_DATA(env, v, c, stack)                                                       \
    do {                                                                              \
        if (get_chunk(env, v, &c, stack, sizeof stack) < 0) return throw_type(env, "data: a string or Buffer"); \
    } while (0)

static napi_value js_ws_send(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    char stack[16384];
    chunk c;
    bool bin = false;
    nws *w;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsSend: not a WebSocket");
    WS_DATA(env, argv[1], c, stack);
    napi_get_value_bool(env, argv[2], &bin);
    int rc = w->ws ? myriad_ws_send(w->ws, bin ? MYRIAD_WS_BINARY : MYRIAD_WS_TEXT, c.p, c.n) : MYRIAD_EWS_CLOSED;
    free(c.heap);
    return int_result(env, rc);
}

static napi_value js_ws_ping(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    char stack[256];
    chunk c;
    nws *w;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsPing: not a WebSocket");
    WS_DATA(env, argv[1], c, stack);
    int rc = w->ws ? myriad_ws_ping(w->ws, c.p, c.n) : MYRIAD_EWS_CLOSED;
    free(c.heap);
    return int_result(env, rc);
}

static napi_value js_ws_close(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    char stack[256];
    chunk c;
    double code = 1000;
    nws *w;
    napi_valuetype t;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsClose: not a WebSocket");
    napi_typeof(env, argv[1], &t);
    if (t == napi_number) napi_get_value_double(env, argv[1], &code);
    WS_DATA(env, argv[2], c, stack);
    int rc = w->ws ? myriad_ws_close(w->ws, code >= 0 && code <= 65535 ? (int)code : -1, (const char *)c.p, c.n)
                   : MYRIAD_EWS_CLOSED;
    free(c.heap);
    return int_result(env, rc);
}

static napi_value js_ws_terminate(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    nws *w;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsTerminate: not a WebSocket");
    return int_result(env, w->ws ? myriad_ws_terminate(w->ws) : MYRIAD_OK);
}

static napi_value js_ws_pause(napi_env env, napi_callback_info info) {
    napi_value argv[2];
    bool p = false;
    nws *w;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsPause: not a WebSocket");
    napi_get_value_bool(env, argv[1], &p);
    return int_result(env, w->ws ? myriad_ws_pause(w->ws, p) : MYRIAD_EWS_CLOSED);
}

static napi_value js_ws_queued(napi_env env, napi_callback_info info) {
    napi_value argv[1];
    nws *w;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsQueued: not a WebSocket");
    return num(env, w->ws ? (double)myriad_ws_queued(w->ws) : 0);
}

static napi_value js_ws_protocol(napi_env env, napi_callback_info info) {
    napi_value argv[1], s;
    const char *p;
    size_t n;
    nws *w;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "wsProtocol: not a WebSocket");
    if (!w->ws || myriad_ws_protocol(w->ws, &p, &n) != MYRIAD_OK) return undefined(env);
    napi_create_string_utf8(env, p, n, &s);
    return s;
}

static napi_value ws_topic(napi_env env, napi_callback_info info, int sub) {
    napi_value argv[2];
    char stack[1024], *t, *heap;
    size_t n;
    nws *w;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (!(w = arg_ws(env, argv[0]))) return throw_type(env, "not a WebSocket");
    if (get_str(env, argv[1], 1, stack, sizeof stack, &t, &n, &heap) < 0) return throw_type(env, "topic: a string");
    int rc = !w->ws ? MYRIAD_EWS_CLOSED : sub ? myriad_ws_subscribe(w->ws, t, n) : myriad_ws_unsubscribe(w->ws, t, n);
    free(heap);
    return int_result(env, rc);
}

static napi_value js_ws_subscribe(napi_env env, napi_callback_info info) { return ws_topic(env, info, 1); }
static napi_value js_ws_unsubscribe(napi_env env, napi_callback_info info) { return ws_topic(env, info, 0); }

/* wsPublish(w | null, topic, data, binary) */
static napi_value js_ws_publish(napi_env env, napi_callback_info info) {
    napi_value argv[4];
    char tstack[1024], dstack[16384], *t, *theap;
    size_t tn;
    chunk c;
    bool bin = false;
    nws *w;
    if (get_args(env, info, 4, argv) < 0) return NULL;
    w = arg_ws(env, argv[0]);
    if (get_str(env, argv[1], 1, tstack, sizeof tstack, &t, &tn, &theap) < 0) return throw_type(env, "topic: a string");
    if (get_chunk(env, argv[2], &c, dstack, sizeof dstack) < 0) {
        free(theap);
        return throw_type(env, "data: a string or Buffer");
    }
    napi_get_value_bool(env, argv[3], &bin);
    int n = myriad_ws_publish(w ? w->ws : NULL, t, tn, bin ? MYRIAD_WS_BINARY : MYRIAD_WS_TEXT, c.p, c.n);
    free(theap);
    free(c.heap);
    return int_result(env, n);
}

#define WS_FNS                                                                                          \
    {"wsAccept", js_ws_accept}, {"wsSend", js_ws_send}, {"wsPing", js_ws_ping}, {"wsClose", js_ws_close}, \
        {"wsTerminate", js_ws_terminate}, {"wsPause", js_ws_pause}, {"wsQueued", js_ws_queued},          \
        {"wsProtocol", js_ws_protocol}, {"wsSubscribe", js_ws_subscribe},                                \
        {"wsUnsubscribe", js_ws_unsubscribe}, {"wsPublish", js_ws_publish},
