/*
 * ws.h — WebSocket for the Lua binding, included by myriad.c (it uses the request object,
 * the callback thread and the coroutine runner defined there).
 *
 *   local ws, err = req:websocket{           -- in a handler; nil, err if refused (4xx sent)
 *       on_open = fn(ws), on_message = fn(ws, data, binary), on_close = fn(ws, code, reason),
 *       on_drain = fn(ws), protocols = {"chat", ...} or "chat,echo", deflate = true,
 *       max_message = N, max_backpressure = N, close_on_backpressure = false,
 *       ping_interval = ms, idle_timeout = ms }
 *   ws:send(data [, binary]) -> true | nil, err     ws:ping([data])
 *   ws:close([code [, reason]])   ws:terminate()    ws:queued()   ws:protocol()
 *   ws:receive() -> data, binary | nil, "closed", code, reason   (yields the coroutine)
 *   ws:pause() / ws:resume()
 *   ws:subscribe(topic) / ws:unsubscribe(topic) / ws:publish(topic, data [, binary]) -> n
 *   myriad.publish(topic, data [, binary]) -> n  (every subscriber on this loop)
 *
 * Without on_message, messages wait for ws:receive() (at most WS_QUEUE_MAX queued: past
 * that reading pauses until the coroutine takes them). Callbacks cannot yield; receive()
 * can, in the handler's coroutine or any coroutine driven by myriad.
 */
#define WS_MT "myriad.websocket"
#define WS_QUEUE_MAX 64

typedef struct {
    myriad_ws_t *ws; /* NULL once closed */
    int selfref;     /* anchors the object while the connection is open */
    int cbref;       /* the options table (callbacks) */
    int qref;        /* queued messages: {data, binary, data, binary, ...} */
    int qhead, qtail;
    int waitref;     /* the coroutine waiting in receive() */
    int paused;
    int code;        /* the close code, once closed */
    int reasonref;
} lws;

static lws *checkws(lua_State *L, int i) {
    return (lws *)luaL_checkudata(L, i, WS_MT);
}

/* Pushes callback `name` of `w` onto CB; returns 0 (nothing pushed) if there is none. */
static int ws_cb(lws *w, const char *name) {
    lua_rawgeti(CB, LUA_REGISTRYINDEX, w->cbref);
    lua_getfield(CB, -1, name);
    lua_remove(CB, -2);
    if (lua_isfunction(CB, -1)) return 1;
    lua_pop(CB, 1);
    return 0;
}

static void ws_push_self(lua_State *L, lws *w) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->selfref);
}

/* Resumes the coroutine waiting in receive() with the n values on top of CB. */
static void ws_wake(lws *w, int n) {
    lua_rawgeti(CB, LUA_REGISTRYINDEX, w->waitref);
    lua_State *co = lua_tothread(CB, -1);
    lua_pop(CB, 1);
    unref(CB, &w->waitref);
    lua_xmove(CB, co, n);
    run_co(co, n, NULL);
}

static void lws_open(myriad_ws_t *ws, void *ud) {
    lws *w = ud;
    (void)ws;
    if (!ws_cb(w, "on_open")) return;
    ws_push_self(CB, w);
    call_cb(1, "websocket on_open");
}

static void lws_message(myriad_ws_t *ws, int op, const uint8_t *d, size_t n, void *ud) {
    lws *w = ud;
    if (ws_cb(w, "on_message")) {
        ws_push_self(CB, w);
        lua_pushlstring(CB, (const char *)d, n);
        lua_pushboolean(CB, op == MYRIAD_WS_BINARY);
        call_cb(3, "websocket on_message");
        return;
    }
    if (w->waitref != LUA_NOREF) {
        lua_pushlstring(CB, (const char *)d, n);
        lua_pushboolean(CB, op == MYRIAD_WS_BINARY);
        ws_wake(w, 2);
        return;
    }
    lua_rawgeti(CB, LUA_REGISTRYINDEX, w->qref);
    lua_pushlstring(CB, (const char *)d, n);
    lua_rawseti(CB, -2, ++w->qtail);
    lua_pushboolean(CB, op == MYRIAD_WS_BINARY);
    lua_rawseti(CB, -2, ++w->qtail);
    lua_pop(CB, 1);
    if (!w->paused && (w->qtail - w->qhead) / 2 >= WS_QUEUE_MAX) {
        w->paused = 2; /* by the queue, not the application */
        myriad_ws_pause(ws, 1);
    }
}

static void lws_drain(myriad_ws_t *ws, void *ud) {
    lws *w = ud;
    (void)ws;
    if (!ws_cb(w, "on_drain")) return;
    ws_push_self(CB, w);
    call_cb(1, "websocket on_drain");
}

static void lws_close(myriad_ws_t *ws, int code, const char *reason, size_t len, void *ud) {
    lws *w = ud;
    (void)ws;
    w->ws = NULL;
    w->code = code;
    lua_pushlstring(CB, reason, len);
    w->reasonref = luaL_ref(CB, LUA_REGISTRYINDEX);
    if (w->waitref != LUA_NOREF) {
        lua_pushnil(CB);
        lua_pushstring(CB, "closed");
        lua_pushinteger(CB, code);
        lua_pushlstring(CB, reason, len);
        ws_wake(w, 4);
    }
    if (ws_cb(w, "on_close")) {
        ws_push_self(CB, w);
        lua_pushinteger(CB, code);
        lua_pushlstring(CB, reason, len);
        call_cb(3, "websocket on_close");
    }
    unref(CB, &w->selfref);
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer dflt) {
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? dflt : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (v < 0) luaL_error(L, "req:websocket: %s must not be negative", k);
    return v;
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* req:websocket{...} */
static int req_websocket(lua_State *L) {
    lreq *q = checkreq(L, 1);
    if (!q->r) return luaL_error(L, "request already finished");
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    myriad_ws_options_t o;
    myriad_ws_options_init(&o);
    o.max_message = (size_t)opt_int(L, 2, "max_message", (lua_Integer)o.max_message);
    o.max_backpressure = (size_t)opt_int(L, 2, "max_backpressure", (lua_Integer)o.max_backpressure);
    o.compress_threshold = (size_t)opt_int(L, 2, "compress_threshold", (lua_Integer)o.compress_threshold);
    o.ping_interval_ms = (uint32_t)opt_int(L, 2, "ping_interval", 0);
    o.idle_timeout_ms = (uint32_t)opt_int(L, 2, "idle_timeout", o.idle_timeout_ms);
    o.deflate = opt_bool(L, 2, "deflate", 1);
    o.close_on_backpressure = opt_bool(L, 2, "close_on_backpressure", 0);
    /* protocols: a list or a comma-separated string */
    luaL_Buffer b;
    lua_getfield(L, 2, "protocols");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L), n = (int)rawlen(L, t);
        luaL_buffinit(L, &b);
        for (int i = 1; i <= n; i++) {
            if (i > 1) luaL_addchar(&b, ',');
            lua_rawgeti(L, t, i);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
        lua_remove(L, t);
    } else if (!lua_isnil(L, -1) && !lua_isstring(L, -1)) {
        return luaL_error(L, "req:websocket: protocols must be a list or a string");
    }
    size_t plen = 0;
    const char *protos = lua_isnil(L, -1) ? NULL : lua_tolstring(L, -1, &plen);
    o.protocols = protos;
    o.protocols_len = plen;

    lws *w = (lws *)lua_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    w->selfref = w->cbref = w->qref = w->waitref = w->reasonref = LUA_NOREF;
    luaL_getmetatable(L, WS_MT);
    lua_setmetatable(L, -2);
    myriad_ws_callbacks_t cbs = {lws_open, lws_message, lws_drain, lws_close};
    /* The request's fields stay readable after its handle goes (as after a finish). */
    snapshot(L, q);
    /* The open callback runs later (from the loop), so the object can be set up after. */
    int rc = myriad_ws_accept(q->r, &o, &cbs, &w->ws, w, NULL);
    if (rc != MYRIAD_EINVAL && rc != MYRIAD_EWRONGTHREAD) ended(L, q); /* the handle is gone */
    if (rc != MYRIAD_OK) {
        w->ws = NULL;
        lua_pushnil(L);
        lua_pushstring(L, myriad_strerror(rc));
        return 2;
    }
    lua_pushvalue(L, -1);
    w->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    w->cbref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    w->qref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

static int ws_ret(lua_State *L, int rc) {
    if (rc >= 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, myriad_strerror(rc));
    return 2;
}

static int lws_send(lua_State *L) {
    lws *w = checkws(L, 1);
    size_t n;
    const char *d = luaL_checklstring(L, 2, &n);
    if (!w->ws) return ws_ret(L, MYRIAD_EWS_CLOSED);
    int op = lua_toboolean(L, 3) ? MYRIAD_WS_BINARY : MYRIAD_WS_TEXT;
    return ws_ret(L, myriad_ws_send(w->ws, op, (const uint8_t *)d, n));
}

static int lws_ping(lua_State *L) {
    lws *w = checkws(L, 1);
    size_t n = 0;
    const char *d = luaL_optlstring(L, 2, "", &n);
    if (!w->ws) return ws_ret(L, MYRIAD_EWS_CLOSED);
    return ws_ret(L, myriad_ws_ping(w->ws, (const uint8_t *)d, n));
}

static int lws_closem(lua_State *L) {
    lws *w = checkws(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t n = 0;
    const char *r = luaL_optlstring(L, 3, "", &n);
    if (!w->ws) return ws_ret(L, MYRIAD_EWS_CLOSED);
    return ws_ret(L, myriad_ws_close(w->ws, (int)code, r, n));
}

static int lws_terminate(lua_State *L) {
    lws *w = checkws(L, 1);
    if (w->ws) myriad_ws_terminate(w->ws);
    return 0;
}

static int lws_queued(lua_State *L) {
    lws *w = checkws(L, 1);
    lua_pushinteger(L, w->ws ? (lua_Integer)myriad_ws_queued(w->ws) : 0);
    return 1;
}

static int lws_protocol(lua_State *L) {
    lws *w = checkws(L, 1);
    const char *p;
    size_t n;
    if (w->ws && myriad_ws_protocol(w->ws, &p, &n) == MYRIAD_OK) lua_pushlstring(L, p, n);
    else lua_pushnil(L);
    return 1;
}

static int lws_pause(lua_State *L) {
    lws *w = checkws(L, 1);
    w->paused = 1;
    if (w->ws) myriad_ws_pause(w->ws, 1);
    return 0;
}

static int lws_resume(lua_State *L) {
    lws *w = checkws(L, 1);
    w->paused = 0;
    if (w->ws) myriad_ws_pause(w->ws, 0);
    return 0;
}

/* ws:receive(): the next message, waiting (yielding) for one if none is queued. */
static int lws_receive(lua_State *L) {
    lws *w = checkws(L, 1);
    if (w->qhead < w->qtail) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->qref);
        lua_rawgeti(L, -1, ++w->qhead);
        lua_rawgeti(L, -2, ++w->qhead);
        lua_pushnil(L);
        lua_rawseti(L, -4, w->qhead - 1);
        lua_pushnil(L);
        lua_rawseti(L, -4, w->qhead);
        lua_remove(L, -3);
        if (w->qhead == w->qtail) w->qhead = w->qtail = 0;
        if (w->paused == 2 && (w->qtail - w->qhead) / 2 < WS_QUEUE_MAX / 2) {
            w->paused = 0;
            if (w->ws) myriad_ws_pause(w->ws, 0);
        }
        return 2;
    }
    if (!w->ws) {
        lua_pushnil(L);
        lua_pushstring(L, "closed");
        lua_pushinteger(L, w->code);
        lua_rawgeti(L, LUA_REGISTRYINDEX, w->reasonref);
        return 4;
    }
    if (w->waitref != LUA_NOREF) return luaL_error(L, "ws:receive(): another coroutine is already waiting");
    if (lua_pushthread(L)) return luaL_error(L, "ws:receive() must run in a coroutine (the handler's)");
    w->waitref = luaL_ref(L, LUA_REGISTRYINDEX);
    return lua_yield(L, 0);
}

static int lws_subscribe(lua_State *L) {
    size_t n;
    lws *w = checkws(L, 1);
    const char *t = luaL_checklstring(L, 2, &n);
    if (!w->ws) return ws_ret(L, MYRIAD_EWS_CLOSED);
    return ws_ret(L, myriad_ws_subscribe(w->ws, t, n));
}

static int lws_unsubscribe(lua_State *L) {
    size_t n;
    lws *w = checkws(L, 1);
    const char *t = luaL_checklstring(L, 2, &n);
    if (!w->ws) return ws_ret(L, MYRIAD_EWS_CLOSED);
    return ws_ret(L, myriad_ws_unsubscribe(w->ws, t, n));
}

static int publish_from(lua_State *L, myriad_ws_t *from, int at) {
    size_t tn, dn;
    const char *t = luaL_checklstring(L, at, &tn);
    const char *d = luaL_checklstring(L, at + 1, &dn);
    int op = lua_toboolean(L, at + 2) ? MYRIAD_WS_BINARY : MYRIAD_WS_TEXT;
    int n = myriad_ws_publish(from, t, tn, op, (const uint8_t *)d, dn);
    if (n < 0) return luaL_error(L, "publish: %s", myriad_strerror(n));
    lua_pushinteger(L, n);
    return 1;
}

static int lws_publish(lua_State *L) {
    lws *w = checkws(L, 1);
    return publish_from(L, w->ws, 2);
}

/* myriad.publish(topic, data [, binary]) */
static int l_publish(lua_State *L) {
    return publish_from(L, NULL, 1);
}

static int lws_gc(lua_State *L) {
    lws *w = checkws(L, 1);
    /* Only reached once closed (an open one is anchored by selfref). */
    unref(L, &w->cbref);
    unref(L, &w->qref);
    unref(L, &w->reasonref);
    unref(L, &w->waitref);
    return 0;
}

static const luaL_Reg ws_methods[] = {
    {"send", lws_send},           {"ping", lws_ping},         {"close", lws_closem},
    {"terminate", lws_terminate}, {"queued", lws_queued},     {"protocol", lws_protocol},
    {"pause", lws_pause},         {"resume", lws_resume},     {"receive", lws_receive},
    {"subscribe", lws_subscribe}, {"unsubscribe", lws_unsubscribe}, {"publish", lws_publish},
    {NULL, NULL}};
