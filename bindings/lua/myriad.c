/*
 * myriad.c — the Lua binding (require "myriad"), built only on include/myriad.h.
 * Lua 5.4 and LuaJIT (5.1 API). One Lua state per process drives one myriad loop.
 *
 *   local myriad = require "myriad"
 *   local srv = myriad.server{ http = {"127.0.0.1:0"}, fcgi = {...},
 *                              https = {...}, tls = { {cert = FILE|PEM, key = FILE|PEM}, ... },
 *                              handler = function(req, res) ... end, max_body = N, ...,
 *                              access_log = PATH or "-", access_log_format = FMT }
 *   srv:reopen_logs()         -- the access log, after logrotate (on SIGUSR1)
 *   srv:reload_tls{ {cert = ..., key = ...}, ... }   -- new HTTPS connections get these
 *   myriad.check_tls{ {cert = ..., key = ...}, ... }  -- loads and frees them: raises on a bad file
 *   req.tls -> { version =, cipher =, sni =, alpn = } over HTTPS (else nil), req.scheme
 *   myriad.timer(ms, fn [, repeat_ms]) -> timer (t:cancel())
 *   myriad.signal(signo, fn) -> watch (w:cancel())
 *   myriad.sleep(ms)          -- inside a handler (or any coroutine driven by myriad)
 *   myriad.run() / myriad.stop() / myriad.run_once([nowait]) / myriad.backend_fd() /
 *   myriad.next_timeout()
 *   myriad.listen_fds() / myriad.notify(state) / myriad.watchdog()  -- systemd (see README)
 *   (myriad.server{ inherited = true, ... } serves the socket-activated fds)
 *   myriad.supervisor{ workers = N, ... } -> sup (sup:listen, sup:status_listen,
 *                                               sup:on_reload, sup:run(fn)); myriad.pid()
 *   myriad.files(root [, opts]) -> files (files:serve(req, path)); res:send_file(path
 *   [, offset [, length]])                      -- static files (files.c)
 *   req:websocket{ on_message = fn, ... } -> ws; myriad.publish(topic, data)  -- see ws.h
 *
 * Handlers run as coroutines: req:body() and myriad.sleep() yield. req and res are two
 * views of one request object. Errors in a handler give the client a 500 and go to stderr
 * with a traceback; the server keeps serving.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <stdint.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"
#include "myriad.h"

#if LUA_VERSION_NUM < 502
#define setfuncs(L, l) luaL_register(L, NULL, l)
#define rawlen(L, i) lua_objlen(L, i)
static int resume(lua_State *co, lua_State *from, int n, int *nres) {
    int r;
    (void)from;
    r = lua_resume(co, n);
    *nres = lua_gettop(co);
    return r;
}
#else
#define setfuncs(L, l) luaL_setfuncs(L, l, 0)
#define rawlen(L, i) lua_rawlen(L, i)
static int resume(lua_State *co, lua_State *from, int n, int *nres) {
#if LUA_VERSION_NUM >= 504
    return lua_resume(co, from, n, nres);
#else
    int r = lua_resume(co, from, n);
    *nres = lua_gettop(co);
    return r;
#endif
}
#endif

#define REQ_MT "myriad.request"
#define SRV_MT "myriad.server"
#define TIMER_MT "myriad.timer"
#define SIG_MT "myriad.signal"

static myriad_loop_t *LP;   /* the loop */
static lua_State *CB;       /* a thread for calling Lua from C callbacks */
static int live_requests;   /* for the GC test: request objects not yet collected */
static int COREQ = LUA_NOREF; /* registry: weak-keyed table coroutine -> request */
static int SNAPS = LUA_NOREF; /* registry: request (light userdata) -> its fields once ended */

static void report(lua_State *L, const char *what) {
    fprintf(stderr, "myriad: %s: %s\n", what, lua_tostring(L, -1) ? lua_tostring(L, -1) : "(error object)");
}

/* Calls the function on top of CB's stack with n args (below it), protected. */
static void call_cb(int nargs, const char *what) {
    if (lua_pcall(CB, nargs, 0, 0) != 0) {
        report(CB, what);
        lua_pop(CB, 1);
    }
}

/* ---- requests ---- */

typedef struct {
    myriad_req_t *r;
    int selfref;   /* registry ref keeping the object alive while C callbacks hold it */
    int coref;     /* the handler coroutine */
    int bodyref;   /* body callback (on_body) */
    int abortref;  /* res:on_abort callback */
    int drainref;  /* the coroutine waiting in res:drain() */
    int snapped;   /* its fields were kept in SNAPS when its handle ended (req.target after finish) */
    int in_handler;
    int aborted;
} lreq;

static lreq *checkreq(lua_State *L, int i) {
    return (lreq *)luaL_checkudata(L, i, REQ_MT);
}

static myriad_req_t *live(lua_State *L, int i) {
    lreq *q = checkreq(L, i);
    if (!q->r) luaL_error(L, "request already finished");
    return q->r;
}

static void unref(lua_State *L, int *ref) {
    if (*ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, *ref);
        *ref = LUA_NOREF;
    }
}

static void push_headers(lua_State *L, myriad_req_t *r);
static void snapshot(lua_State *L, lreq *q);
static void wake_drain(lreq *q, int ok);

/* The request's handle is gone (finished or abandoned): keep its fields readable, wake a
 * coroutine waiting in res:drain(), drop what kept it reachable. */
static void ended(lua_State *L, lreq *q) {
    snapshot(L, q);
    q->r = NULL;
    unref(L, &q->bodyref);
    unref(L, &q->abortref);
    wake_drain(q, 0);
    unref(L, &q->selfref);
}

static void finish(lua_State *L, lreq *q, int error_status) {
    if (!q->r) return;
    if (error_status) {
        if (myriad_req_status(q->r, error_status) == MYRIAD_OK) {
            myriad_req_header_add(q->r, "Content-Type", 12, "text/plain", 10);
            myriad_req_write(q->r, (const uint8_t *)"Internal Server Error\n", 22);
        }
    }
    snapshot(L, q);
    myriad_req_finish(q->r);
    ended(L, q);
}

/* The request a handler coroutine serves, or NULL. */
static lreq *req_of(lua_State *co) {
    lreq *q;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, COREQ);
    lua_pushthread(co);
    lua_xmove(co, CB, 1);
    lua_rawget(CB, -2);
    q = (lreq *)lua_touserdata(CB, -1);
    lua_pop(CB, 2);
    return q;
}

/* Resumes a handler (or sleeping) coroutine; on error answers 500 and logs a traceback. */
static void run_co(lua_State *co, int nargs, lreq *q) {
    int nres = 0;
    int st = resume(co, CB, nargs, &nres);
    if (st == LUA_YIELD) return;
    if (!q) q = req_of(co);
    if (st != 0) {
#if LUA_VERSION_NUM >= 502 || defined(LUAJIT_VERSION)
        luaL_traceback(CB, co, lua_tostring(co, -1), 0);
        report(CB, "handler error");
        lua_pop(CB, 1);
#else
        report(co, "handler error");
#endif
        if (q) finish(CB, q, 500);
    }
    lua_settop(co, 0);
    if (q && q->coref != LUA_NOREF) unref(CB, &q->coref);
}

static int req_gc(lua_State *L) {
    lreq *q = checkreq(L, 1);
    live_requests--;
    if (q->snapped) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, SNAPS);
        lua_pushlightuserdata(L, q);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    if (q->r) {
        /* Dropped unanswered: the client gets a 500 instead of a hung connection, or, once
         * the head is out, a response cut short (never a truncated one passed off as whole). */
        if (myriad_req_status(q->r, 500) == MYRIAD_OK) {
            myriad_req_write(q->r, (const uint8_t *)"Internal Server Error\n", 22);
            myriad_req_finish(q->r);
        } else {
            myriad_req_abort(q->r);
        }
        q->r = NULL;
    }
    return 0;
}

static int push_str(lua_State *L, int rc, const char *s, size_t n) {
    if (rc == MYRIAD_OK) lua_pushlstring(L, s, n);
    else lua_pushnil(L);
    return 1;
}

static void push_params(lua_State *L, myriad_req_t *r);
static void push_cookies(lua_State *L, myriad_req_t *r);
static int req_form(lua_State *L);
static int res_cookie(lua_State *L);
static int res_send_file(lua_State *L);

static int headers_index(lua_State *L) {
    /* case-insensitive lookup: retry with the lower-cased key */
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    char buf[256];
    if (n >= sizeof buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = (char)((k[i] >= 'A' && k[i] <= 'Z') ? k[i] + 32 : k[i]);
    lua_pushlstring(L, buf, n);
    lua_rawget(L, 1);
    return 1;
}

/* Adds value (top) under key (below it) to the table below them, OpenResty's way: the first
 * value as is, a repeated key's values as a list in order. Pops key and value. */
static void add_multi(lua_State *L) {
    lua_pushvalue(L, -2);
    lua_rawget(L, -4);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
    } else if (lua_type(L, -1) != LUA_TTABLE) {
        lua_newtable(L);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 2);
    } else {
        lua_insert(L, -2);
        lua_rawseti(L, -2, (int)rawlen(L, -2) + 1);
    }
    lua_rawset(L, -3);
}

/* req.args: the decoded query arguments; `a` alone is true, `a=1&a=2` is {"1", "2"}. */
static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Pushes the url-decoded [s, s+n) (the rules of myriad_urlencoded_parse: `+` a space,
 * `%XX` the byte, any other `%` as it is). */
static void push_decoded(lua_State *L, const char *s, size_t n) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') luaL_addchar(&b, ' ');
        else if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            luaL_addchar(&b, (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2])));
            i += 2;
        } else luaL_addchar(&b, s[i]);
    }
    luaL_pushresult(&b);
}

static void push_args(lua_State *L, const char *s, size_t n) {
    lua_newtable(L);
    size_t i = 0;
    while (i < n) {
        size_t e = i, eq = 0;
        while (e < n && s[e] != '&') {
            if (s[e] == '=' && !eq) eq = e;
            e++;
        }
        if (e > i) {
            if (eq) {
                push_decoded(L, s + i, eq - i);
                push_decoded(L, s + eq + 1, e - eq - 1);
            } else {
                push_decoded(L, s + i, e - i);
                lua_pushboolean(L, 1);
            }
            add_multi(L);
        }
        i = e + 1;
    }
}

/* req.headers: lower-cased names (looked up case-insensitively), repeated ones as lists. */
static void push_headers(lua_State *L, myriad_req_t *r) {
    const char *s, *v;
    size_t n, vn;
    int c = myriad_req_header_count(r);
    lua_newtable(L);
    for (int i = 0; i < c; i++) {
        char buf[256];
        if (myriad_req_header_at(r, (size_t)i, &s, &n, &v, &vn) != MYRIAD_OK || n >= sizeof buf) continue;
        for (size_t j = 0; j < n; j++) buf[j] = (char)((s[j] >= 'A' && s[j] <= 'Z') ? s[j] + 32 : s[j]);
        lua_pushlstring(L, buf, n);
        lua_pushlstring(L, v, vn);
        add_multi(L);
    }
    lua_newtable(L);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

/* Keeps the request's fields for after its handle ends (an access log in a callback). */
static void snapshot(lua_State *L, lreq *q) {
    const char *s;
    size_t n;
    char buf[128];
    if (!q->r || q->snapped) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, SNAPS);
    lua_pushlightuserdata(L, q);
    lua_newtable(L);
#define KEEP(name, getter) if (getter(q->r, &s, &n) == MYRIAD_OK) { lua_pushlstring(L, s, n); lua_setfield(L, -2, name); }
    KEEP("method", myriad_req_method);
    KEEP("path", myriad_req_path);
    KEEP("target", myriad_req_target);
    KEEP("url", myriad_req_target);
    KEEP("query", myriad_req_query);
#undef KEEP
    lua_pushstring(L, myriad_req_protocol(q->r) == MYRIAD_FCGI ? "fcgi" : "http");
    lua_setfield(L, -2, "protocol");
    if (myriad_req_peer(q->r, buf, sizeof buf) >= 0) {
        lua_pushstring(L, buf);
        lua_setfield(L, -2, "peer");
    }
    push_headers(L, q->r);
    lua_setfield(L, -2, "headers");
    lua_rawset(L, -3);
    lua_pop(L, 1);
    q->snapped = 1;
}

static int req_index(lua_State *L) {
    lreq *q = checkreq(L, 1);
    const char *k = luaL_checkstring(L, 2);
    const char *s, *v;
    size_t n, vn;
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, k);
    if (!lua_isnil(L, -1)) return 1; /* a method */
    lua_pop(L, 2);
    if (!q->r) {
        /* Ended: the fields kept at the end (args are parsed again from the kept query). */
        if (!q->snapped) return 0;
        lua_rawgeti(L, LUA_REGISTRYINDEX, SNAPS);
        lua_pushlightuserdata(L, q);
        lua_rawget(L, -2);
        if (!strcmp(k, "args")) {
            lua_getfield(L, -1, "query");
            size_t qn;
            const char *qs = lua_tolstring(L, -1, &qn);
            push_args(L, qs ? qs : "", qs ? qn : 0);
            return 1;
        }
        lua_getfield(L, -1, k);
        return 1;
    }
    if (!strcmp(k, "method")) { int rc = myriad_req_method(q->r, &s, &n); return push_str(L, rc, s, n); }
    if (!strcmp(k, "path")) { int rc = myriad_req_path(q->r, &s, &n); return push_str(L, rc, s, n); }
    if (!strcmp(k, "target") || !strcmp(k, "url")) { int rc = myriad_req_target(q->r, &s, &n); return push_str(L, rc, s, n); }
    if (!strcmp(k, "query")) { int rc = myriad_req_query(q->r, &s, &n); return push_str(L, rc, s, n); }
    if (!strcmp(k, "protocol")) {
        lua_pushstring(L, myriad_req_protocol(q->r) == MYRIAD_FCGI ? "fcgi" : "http");
        return 1;
    }
    if (!strcmp(k, "scheme")) {
        lua_pushstring(L, myriad_req_tls(q->r, MYRIAD_TLS_VERSION, &s, &n) == MYRIAD_OK ? "https" : "http");
        return 1;
    }
    if (!strcmp(k, "tls")) {
        static const struct { const char *name; int what; } facts[] = {
            {"version", MYRIAD_TLS_VERSION}, {"cipher", MYRIAD_TLS_CIPHER},
            {"sni", MYRIAD_TLS_SNI}, {"alpn", MYRIAD_TLS_ALPN}};
        if (myriad_req_tls(q->r, MYRIAD_TLS_VERSION, &s, &n) != MYRIAD_OK) return 0;
        lua_newtable(L);
        for (size_t i = 0; i < sizeof facts / sizeof facts[0]; i++) {
            if (myriad_req_tls(q->r, facts[i].what, &s, &n) != MYRIAD_OK) continue;
            lua_pushlstring(L, s, n);
            lua_setfield(L, -2, facts[i].name);
        }
        return 1;
    }
    if (!strcmp(k, "peer")) {
        char buf[128];
        if (myriad_req_peer(q->r, buf, sizeof buf) < 0) return 0;
        lua_pushstring(L, buf);
        return 1;
    }
    if (!strcmp(k, "args")) {
        if (myriad_req_query(q->r, &s, &n) != MYRIAD_OK) n = 0;
        push_args(L, s, n);
        return 1;
    }
    if (!strcmp(k, "params")) { push_params(L, q->r); return 1; }
    if (!strcmp(k, "cookies")) { push_cookies(L, q->r); return 1; }
    if (!strcmp(k, "headers")) {
        push_headers(L, q->r);
        return 1;
    }
    if (!strcmp(k, "env")) {
        int c = myriad_req_cgi_count(q->r);
        lua_newtable(L);
        for (int i = 0; i < c; i++) {
            if (myriad_req_cgi_at(q->r, (size_t)i, &s, &n, &v, &vn) != MYRIAD_OK) continue;
            lua_pushlstring(L, s, n);
            lua_pushlstring(L, v, vn);
            lua_rawset(L, -3);
        }
        return 1;
    }
    return 0;
}

static int check_rc(lua_State *L, int rc) {
    if (rc != MYRIAD_OK) return luaL_error(L, "%s", myriad_strerror(rc));
    return 0;
}

static int res_status(lua_State *L) {
    check_rc(L, myriad_req_status(live(L, 1), (int)luaL_checkinteger(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int res_header(lua_State *L) {
    size_t kn, vn;
    const char *k = luaL_checklstring(L, 2, &kn);
    const char *v = luaL_checklstring(L, 3, &vn);
    check_rc(L, myriad_req_header_add(live(L, 1), k, kn, v, vn));
    lua_settop(L, 1);
    return 1;
}

static int res_write(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    int rc = myriad_req_write(live(L, 1), (const uint8_t *)s, n);
    lua_pushboolean(L, rc == MYRIAD_OK); /* false: the client went away */
    return 1;
}

static int res_flush(lua_State *L) {
    lua_pushboolean(L, myriad_req_flush(live(L, 1)) == MYRIAD_OK);
    return 1;
}

static int res_finish(lua_State *L) {
    lreq *q = checkreq(L, 1);
    if (!q->r) return luaL_error(L, "request already finished");
    if (!lua_isnoneornil(L, 2)) {
        size_t n;
        const char *s = luaL_checklstring(L, 2, &n);
        myriad_req_write(q->r, (const uint8_t *)s, n);
    }
    finish(L, q, 0);
    return 0;
}

/* res:abort(): the response cannot be completed; the client sees it cut short. */
static int res_abort(lua_State *L) {
    lreq *q = checkreq(L, 1);
    if (!q->r) return luaL_error(L, "request already finished");
    snapshot(L, q);
    myriad_req_abort(q->r);
    ended(L, q);
    return 0;
}

static int res_queued(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)myriad_req_queued(live(L, 1)));
    return 1;
}

static int res_aborted(lua_State *L) {
    lreq *q = checkreq(L, 1);
    lua_pushboolean(L, !q->r || myriad_req_is_aborted(q->r) == 1);
    return 1;
}

/* Whole body arrived: resume the coroutine (or call the callback) with it. */
static void body_done(myriad_req_t *r, const uint8_t *data, size_t len, int status, void *ud) {
    lreq *q = ud;
    (void)r;
    unref(CB, &q->selfref); /* the coroutine or callback references it from here on */
    lua_rawgeti(CB, LUA_REGISTRYINDEX, q->bodyref);
    if (lua_type(CB, -1) == LUA_TTHREAD) {
        lua_State *co = lua_tothread(CB, -1);
        lua_pop(CB, 1);
        unref(CB, &q->bodyref);
        if (status == MYRIAD_OK) lua_pushlstring(co, (const char *)data, len);
        else lua_pushnil(co);
        run_co(co, 1, q);
    } else {
        unref(CB, &q->bodyref);
        if (status == MYRIAD_OK) lua_pushlstring(CB, (const char *)data, len);
        else lua_pushnil(CB);
        call_cb(1, "body callback");
    }
}

/* req:body() yields until the whole body is there; req:body(fn) calls fn(body) later. */
static int req_body(lua_State *L) {
    lreq *q = checkreq(L, 1);
    if (!q->r || !q->in_handler)
        return luaL_error(L, "req:body() must be called before the handler first yields");
    if (lua_isfunction(L, 2)) {
        lua_pushvalue(L, 2);
    } else if (lua_pushthread(L)) {
        return luaL_error(L, "req:body() without a callback must run in the handler coroutine");
    }
    q->bodyref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (q->selfref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        q->selfref = luaL_ref(L, LUA_REGISTRYINDEX); /* C holds `q` until the body ends */
    }
    check_rc(L, myriad_req_read_body(q->r, body_done, q, NULL));
    if (lua_isfunction(L, 2)) return 0;
    return lua_yield(L, 0);
}

static void body_piece(myriad_req_t *r, const uint8_t *data, size_t len, int ev, void *ud) {
    lreq *q = ud;
    (void)r;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, q->bodyref);
    if (ev == MYRIAD_BODY_DATA) lua_pushlstring(CB, (const char *)data, len);
    else lua_pushnil(CB);
    if (ev != MYRIAD_BODY_DATA) {
        unref(CB, &q->bodyref);
        unref(CB, &q->selfref);
    }
    call_cb(1, "body callback");
}

/* req:on_body(fn): fn(chunk) for each piece, then fn(nil). */
static int req_on_body(lua_State *L) {
    lreq *q = checkreq(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!q->r || !q->in_handler) return luaL_error(L, "req:on_body() must be called in the handler");
    lua_pushvalue(L, 2);
    q->bodyref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (q->selfref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        q->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    check_rc(L, myriad_req_on_body(q->r, body_piece, q, NULL));
    return 0;
}

/* res:on_abort(fn): fn() once if the client goes away before the response is finished
 * (not after a finish). Replaces an earlier one. */
static int res_on_abort(lua_State *L) {
    lreq *q = checkreq(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!q->r) return luaL_error(L, "request already finished");
    unref(L, &q->abortref);
    lua_pushvalue(L, 2);
    q->abortref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (q->selfref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        q->selfref = luaL_ref(L, LUA_REGISTRYINDEX); /* C holds `q` until the request ends */
    }
    lua_settop(L, 1);
    return 1;
}

/* Resumes the coroutine waiting in res:drain() with `ok` (false: the client went away or
 * the request ended). */
static void wake_drain(lreq *q, int ok) {
    if (q->drainref == LUA_NOREF) return;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, q->drainref);
    lua_State *co = lua_tothread(CB, -1);
    lua_pop(CB, 1);
    unref(CB, &q->drainref);
    lua_pushboolean(co, ok);
    run_co(co, 1, NULL);
}

static void on_req_drain(myriad_req_t *r, void *ud) {
    lreq *q = ud;
    (void)r;
    wake_drain(q, 1);
}

/* res:drain([low]): sends what was written (a flush) and, unless at most `low` bytes (default
 * 0) are then queued, yields until all of it has reached the client; returns true, or
 * false if the client went away. */
static int res_drain(lua_State *L) {
    lreq *q = checkreq(L, 1);
    lua_Integer low = luaL_optinteger(L, 2, 0);
    if (!q->r || q->aborted || myriad_req_is_aborted(q->r) == 1 || myriad_req_flush(q->r) != MYRIAD_OK) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if ((lua_Integer)myriad_req_queued(q->r) <= low) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (q->drainref != LUA_NOREF) return luaL_error(L, "res:drain(): another coroutine is already waiting");
    if (lua_pushthread(L)) return luaL_error(L, "res:drain() must run in a coroutine (the handler's)");
    q->drainref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (q->selfref == LUA_NOREF) {
        lua_pushvalue(L, 1);
        q->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    check_rc(L, myriad_req_on_drain(q->r, on_req_drain, q));
    return lua_yield(L, 0);
}

#include "ws.h"

static const luaL_Reg req_methods[] = {
    {"status", res_status},   {"header", res_header},     {"write", res_write},
    {"flush", res_flush},     {"finish", res_finish},     {"queued", res_queued},
    {"aborted", res_aborted}, {"body", req_body},         {"on_body", req_on_body},
    {"abort", res_abort},     {"on_abort", res_on_abort}, {"drain", res_drain},
    {"form", req_form},       {"cookie", res_cookie},     {"send_file", res_send_file},
    {"websocket", req_websocket},
    {NULL, NULL}};

/* ---- servers ---- */

typedef struct {
    myriad_server_t *srv;
    int handler;
    int selfref;
    int doneref;
    myriad_access_log_t *alog; /* the access_log option's log, for reopen_logs */
    /* The HTTPS listeners' certificates (srv:reload_tls replaces what they hold). */
    myriad_tls_config_t *tls;
} lsrv;

/* The client went away (or the front end aborted the request). */
static void on_req_abort(myriad_req_t *r, void *ud) {
    lreq *q = ud;
    (void)r;
    q->aborted = 1;
    if (q->abortref != LUA_NOREF) {
        lua_rawgeti(CB, LUA_REGISTRYINDEX, q->abortref);
        unref(CB, &q->abortref);
        call_cb(0, "abort callback");
    }
    wake_drain(q, 0);
}

static void on_request(myriad_req_t *r, void *ud) {
    lsrv *s = ud;
    lua_State *co = lua_newthread(CB);
    int coref = luaL_ref(CB, LUA_REGISTRYINDEX);
    lreq *q = (lreq *)lua_newuserdata(co, sizeof *q);
    q->r = r;
    q->coref = coref;
    q->bodyref = LUA_NOREF;
    q->selfref = LUA_NOREF;
    q->abortref = q->drainref = LUA_NOREF;
    q->snapped = 0;
    q->aborted = 0;
    q->in_handler = 1;
    live_requests++;
    /* The abort notice, for res:on_abort() and a res:drain() that waits (any time later). */
    myriad_req_on_abort(r, on_req_abort, q, NULL);
    luaL_getmetatable(co, REQ_MT);
    lua_setmetatable(co, -2);
    /* coreq[co] = req, for errors after the handler yielded */
    lua_rawgeti(co, LUA_REGISTRYINDEX, COREQ);
    lua_pushthread(co);
    lua_pushvalue(co, -3);
    lua_rawset(co, -3);
    lua_pop(co, 1);
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->handler);
    lua_insert(co, -2);
    lua_pushvalue(co, -1);
    run_co(co, 2, q);
    q->in_handler = 0;
}

static void srv_free_later(myriad_loop_t *lp, void *ud) {
    (void)lp;
    myriad_server_free(ud);
}

static void srv_drained(myriad_loop_t *lp, void *ud) {
    lsrv *s = ud;
    myriad_timer_start(lp, 0, 0, srv_free_later, s->srv, NULL, NULL);
    s->srv = NULL;
    if (s->doneref != LUA_NOREF) {
        lua_rawgeti(CB, LUA_REGISTRYINDEX, s->doneref);
        unref(CB, &s->doneref);
        call_cb(0, "close callback");
    }
    unref(CB, &s->handler);
    unref(CB, &s->selfref);
}

static int srv_close(lua_State *L) {
    lsrv *s = (lsrv *)luaL_checkudata(L, 1, SRV_MT);
    if (!s->srv || s->selfref == LUA_NOREF) return 0;
    if (lua_isfunction(L, 2)) {
        lua_pushvalue(L, 2);
        s->doneref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    check_rc(L, myriad_server_shutdown(s->srv, srv_drained, s));
    return 0;
}

static int srv_addresses(lua_State *L) {
    lsrv *s = (lsrv *)luaL_checkudata(L, 1, SRV_MT);
    lua_newtable(L);
    if (!s->srv) return 1;
    size_t n = myriad_server_listener_count(s->srv);
    for (size_t i = 0; i < n; i++) {
        char buf[256];
        int proto;
        if (myriad_server_listener_addr(s->srv, i, &proto, buf, sizeof buf) < 0) continue;
        lua_newtable(L);
        lua_pushstring(L, proto == MYRIAD_HTTP ? "http" : proto == MYRIAD_HTTPS ? "https" : "fcgi");
        lua_setfield(L, -2, "proto");
        lua_pushstring(L, buf);
        lua_setfield(L, -2, "addr");
        lua_rawseti(L, -2, (int)i + 1);
    }
    return 1;
}

static int srv_gc(lua_State *L) {
    lsrv *s = (lsrv *)luaL_checkudata(L, 1, SRV_MT);
    /* Only reached once closed (a running server is anchored by selfref). */
    if (s->srv) myriad_server_free(s->srv);
    s->srv = NULL;
    myriad_access_log_free(s->alog);
    s->alog = NULL;
    return 0;
}

/* srv:reopen_logs(): opens the access log's file again (after logrotate moved it; call
 * it on SIGUSR1). Raises an error if it cannot be opened (the old file stays in use). */
static int srv_reopen_logs(lua_State *L) {
    lsrv *s = (lsrv *)luaL_checkudata(L, 1, SRV_MT);
    if (s->alog) check_rc(L, myriad_access_log_reopen(s->alog));
    myriad_tls_config_free(s->tls);
    s->tls = NULL;
    return 0;
}

/* A TLS configuration from the list at stack index `idx`: { {cert = ..., key = ...}, ... },
 * each a file name or PEM text. Raises an error naming the bad file (nothing leaks). */
static myriad_tls_config_t *tls_from(lua_State *L, int idx) {
    myriad_tls_config_t *c;
    char msg[512] = "";
    if (!lua_istable(L, idx)) luaL_error(L, "tls: a list of {cert = ..., key = ...} expected");
    /* (luaL_error below, after the configuration is freed.) */
    if (myriad_tls_config_new(&c) != MYRIAD_OK) luaL_error(L, "out of memory");
    for (int i = 1; !msg[0]; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        lua_getfield(L, -1, "cert");
        lua_getfield(L, -2, "key");
        size_t cn, kn;
        const char *cert = lua_tolstring(L, -2, &cn), *key = lua_tolstring(L, -1, &kn);
        int rc;
        if (!cert || !key) {
            snprintf(msg, sizeof msg, "entry %d: cert and key (file names or PEM) expected", i);
        } else {
            rc = strstr(cert, "-----BEGIN") ? myriad_tls_config_add_cert_pem(c, (const uint8_t *)cert, cn, (const uint8_t *)key, kn)
                                            : myriad_tls_config_add_cert_files(c, cert, cn, key, kn);
            if (rc != MYRIAD_OK) snprintf(msg, sizeof msg, "%s", myriad_tls_config_error(c));
        }
        lua_pop(L, 3);
    }
    if (!msg[0] && rawlen(L, idx) == 0) snprintf(msg, sizeof msg, "no certificate");
    if (msg[0]) {
        myriad_tls_config_free(c);
        luaL_error(L, "tls: %s", msg);
    }
    return c;
}

/* myriad.check_tls{ {cert = ..., key = ...}, ... } -> true: loads the pairs and frees them
 * (a supervisor checks what its workers will load); raises "tls: FILE: ..." otherwise. */
static int l_check_tls(lua_State *L) {
    myriad_tls_config_free(tls_from(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

/* srv:reload_tls{ {cert = ..., key = ...}, ... }: new HTTPS connections get these. */
static int srv_reload_tls(lua_State *L) {
    lsrv *s = (lsrv *)luaL_checkudata(L, 1, SRV_MT);
    if (!s->tls) return luaL_error(L, "reload_tls: the server has no https listener");
    myriad_tls_config_t *fresh = tls_from(L, 2);
    int rc = myriad_tls_config_reload(s->tls, fresh);
    myriad_tls_config_free(fresh);
    if (rc != MYRIAD_OK) return luaL_error(L, "reload_tls: %s", myriad_tls_config_error(s->tls));
    return 0;
}

/* The access_log = PATH ("-" for stderr) and access_log_format = FMT options. */
static void access_log_opt(lua_State *L, lsrv *s) {
    lua_getfield(L, 1, "access_log");
    lua_getfield(L, 1, "access_log_format");
    if (!lua_isnil(L, -2)) {
        size_t pl, fl = 0;
        const char *path = luaL_checklstring(L, -2, &pl);
        const char *fmt = lua_isnil(L, -1) ? NULL : luaL_checklstring(L, -1, &fl);
        int rc = myriad_access_log_new(&s->alog, path, pl, fmt, fl);
        if (rc != MYRIAD_OK) luaL_error(L, "access_log '%s': %s", path, myriad_strerror(rc));
        myriad_server_set_access_log(s->srv, s->alog);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "access_log_format without access_log");
    }
    lua_pop(L, 2);
}

/* The error of a failed call: the library's detail (which address, path or option) when it
 * recorded one, else the code's description. */
static const char *detail_or(int rc) {
    const char *d = myriad_last_error_detail();
    return *d ? d : myriad_strerror(rc);
}

static void listen_one(lua_State *L, myriad_server_t *srv, int proto, const char *field) {
    size_t n;
    const char *a = luaL_checklstring(L, -1, &n);
    int rc = myriad_server_listen(srv, proto, a, n);
    if (rc != MYRIAD_OK) luaL_error(L, "bad %s address '%s': %s", field, a, detail_or(rc));
}

static void listen_list(lua_State *L, myriad_server_t *srv, int proto, const char *field) {
    lua_getfield(L, 1, field);
    if (lua_isstring(L, -1)) {
        listen_one(L, srv, proto, field);
    } else if (lua_istable(L, -1)) {
        for (int i = 1;; i++) {
            lua_rawgeti(L, -1, i);
            if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
            listen_one(L, srv, proto, field);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "%s: an address or a list of addresses expected, got %s", field, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

static const struct { const char *name; int which; } limits[] = {
    {"max_body", MYRIAD_MAX_BODY},           {"max_head", MYRIAD_MAX_HEAD},
    {"header_timeout", MYRIAD_HEADER_TIMEOUT_MS}, {"body_timeout", MYRIAD_BODY_TIMEOUT_MS},
    {"idle_timeout", MYRIAD_IDLE_TIMEOUT_MS},  {"write_timeout", MYRIAD_WRITE_TIMEOUT_MS},
    {"drain_timeout", MYRIAD_DRAIN_TIMEOUT_MS}, {"max_params", MYRIAD_MAX_PARAMS},
    {"response_timeout", MYRIAD_RESPONSE_TIMEOUT_MS},
    {"fcgi_max_requests", MYRIAD_FCGI_MAX_REQUESTS},
};

/* Options of myriad.server besides the limits above. */
static const char *const server_keys[] = {"http", "fcgi", "https", "tls", "inherited", "handler", "threads", "access_log", "access_log_format", NULL};

/* Every key of the options table is known: a typo (htp=) is an error naming it. */
static void check_server_keys(lua_State *L) {
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -1);
            for (int i = 0; server_keys[i] && !known; i++) known = strcmp(k, server_keys[i]) == 0;
            for (size_t i = 0; i < sizeof limits / sizeof limits[0] && !known; i++) known = strcmp(k, limits[i].name) == 0;
        }
        if (!known) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; server_keys[i]; i++) { luaL_addstring(&b, server_keys[i]); luaL_addstring(&b, ", "); }
            for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
                luaL_addstring(&b, limits[i].name);
                if (i + 1 < sizeof limits / sizeof limits[0]) luaL_addstring(&b, ", ");
            }
            luaL_pushresult(&b);
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : luaL_typename(L, -2);
            luaL_error(L, "myriad.server: unknown option '%s' (known: %s)", k, lua_tostring(L, -1));
        }
    }
}

/* myriad.server{ http = ..., fcgi = ..., handler = fn, threads = 1, max_body = ... } */
static int l_server(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    check_server_keys(L);
    lua_getfield(L, 1, "handler");
    if (lua_istable(L, -1)) { /* a myriad.router(): serve through its dispatch */
        lua_getfield(L, -1, "handler");
        if (lua_isfunction(L, -1)) {
            lua_insert(L, -2);
            lua_call(L, 1, 1);
        } else {
            lua_pop(L, 1);
        }
    }
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "handler function required");
    lua_getfield(L, 1, "threads");
    if (!lua_isnil(L, -1) && lua_tointeger(L, -1) != 1)
        return luaL_error(L, "threads: a Lua state is single-threaded; run several processes");
    lua_pop(L, 1);
    lsrv *s = (lsrv *)lua_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->handler = s->selfref = s->doneref = LUA_NOREF;
    luaL_getmetatable(L, SRV_MT);
    lua_setmetatable(L, -2);
    if (myriad_server_new(&s->srv) != MYRIAD_OK) return luaL_error(L, "out of memory");
    listen_list(L, s->srv, MYRIAD_HTTP, "http");
    listen_list(L, s->srv, MYRIAD_FCGI, "fcgi");
    lua_getfield(L, 1, "inherited");
    if (lua_toboolean(L, -1)) {
        /* Socket activation: the fds systemd passed ("fcgi" by name FastCGI, others HTTP). */
        int rc = myriad_server_listen_inherited(s->srv, 1);
        if (rc < 0) return luaL_error(L, "%s", detail_or(rc));
    }
    lua_pop(L, 1);
    access_log_opt(L, s);
    lua_getfield(L, 1, "https");
    if (!lua_isnil(L, -1)) {
        lua_getfield(L, 1, "tls");
        s->tls = tls_from(L, lua_gettop(L));
        lua_pop(L, 1);
        int list = lua_istable(L, -1);
        for (int i = 1;; i++) {
            if (list) lua_rawgeti(L, -1, i);
            else if (i == 1) lua_pushvalue(L, -1);
            else break;
            if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
            size_t n;
            const char *a = luaL_checklstring(L, -1, &n);
            int rc = myriad_server_listen_tls(s->srv, a, n, s->tls);
            if (rc != MYRIAD_OK)
                luaL_error(L, "bad https address '%s': %s", a, rc == MYRIAD_ETLS ? myriad_tls_config_error(s->tls) : myriad_strerror(rc));
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        lua_getfield(L, 1, limits[i].name);
        if (!lua_isnil(L, -1)) {
            lua_Integer v = luaL_checkinteger(L, -1);
            if (v < 0 || myriad_server_set_limit(s->srv, limits[i].which, (uint64_t)v) != MYRIAD_OK)
                return luaL_error(L, "bad value for %s", limits[i].name);
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, -2); /* handler */
    s->handler = luaL_ref(L, LUA_REGISTRYINDEX);
    myriad_server_set_handler(s->srv, on_request, s, NULL);
    int rc = myriad_server_start(s->srv, LP);
    if (rc != MYRIAD_OK) {
        unref(L, &s->handler);
        return luaL_error(L, "cannot start server: %s", detail_or(rc));
    }
    lua_pushvalue(L, -1);
    s->selfref = luaL_ref(L, LUA_REGISTRYINDEX); /* serving: not collectable until closed */
    return 1;
}

static const luaL_Reg srv_methods[] = {{"close", srv_close}, {"addresses", srv_addresses},
                                       {"reopen_logs", srv_reopen_logs}, {"reload_tls", srv_reload_tls},
                                       {NULL, NULL}};

/* ---- timers, signals, sleep ---- */

typedef struct {
    uint64_t id;
    int fn;      /* function, or the coroutine to resume (sleep) */
    int selfref; /* anchored while armed */
    int armed;
} ltimer;

static void timer_fire(myriad_loop_t *lp, void *ud) {
    ltimer *t = ud;
    (void)lp;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, t->fn);
    if (lua_type(CB, -1) == LUA_TTHREAD) {
        lua_State *co = lua_tothread(CB, -1);
        lua_pop(CB, 1);
        /* find the request this coroutine serves, if any (for errors) */
        run_co(co, 0, NULL);
    } else {
        call_cb(0, "timer callback");
    }
}

static void timer_release(void *ud) {
    ltimer *t = ud;
    t->armed = 0;
    unref(CB, &t->fn);
    unref(CB, &t->selfref);
}

static ltimer *new_timer(lua_State *L) {
    ltimer *t = (ltimer *)lua_newuserdata(L, sizeof *t);
    t->fn = LUA_NOREF;
    t->selfref = LUA_NOREF;
    t->armed = 0;
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    return t;
}

static int arm(lua_State *L, ltimer *t, lua_Integer ms, lua_Integer rep) {
    lua_pushvalue(L, -1);
    t->selfref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = myriad_timer_start(LP, (uint64_t)ms, (uint64_t)rep, timer_fire, t, timer_release, &t->id);
    if (rc != MYRIAD_OK) {
        unref(L, &t->selfref);
        unref(L, &t->fn);
        return luaL_error(L, "%s", myriad_strerror(rc));
    }
    t->armed = 1;
    return 1;
}

/* myriad.timer(ms, fn [, repeat_ms]) */
static int l_timer(lua_State *L) {
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_Integer rep = luaL_optinteger(L, 3, 0);
    luaL_argcheck(L, ms >= 0 && rep >= 0, 1, "negative time");
    lua_pushvalue(L, 2);
    int fn = luaL_ref(L, LUA_REGISTRYINDEX);
    ltimer *t = new_timer(L);
    t->fn = fn;
    return arm(L, t, ms, rep);
}

/* myriad.sleep(ms): yields the running coroutine for ms milliseconds. */
static int l_sleep(lua_State *L) {
    lua_Integer ms = luaL_checkinteger(L, 1);
    if (lua_pushthread(L)) return luaL_error(L, "myriad.sleep: not in a coroutine (call it from a handler)");
    int fn = luaL_ref(L, LUA_REGISTRYINDEX);
    ltimer *t = new_timer(L);
    t->fn = fn;
    arm(L, t, ms, 0);
    lua_pop(L, 1);
    return lua_yield(L, 0);
}

static int timer_cancel(lua_State *L) {
    ltimer *t = (ltimer *)luaL_checkudata(L, 1, TIMER_MT);
    lua_pushboolean(L, t->armed && myriad_timer_cancel(LP, t->id) == MYRIAD_OK);
    return 1;
}

static const luaL_Reg timer_methods[] = {{"cancel", timer_cancel}, {NULL, NULL}};

typedef struct {
    uint64_t id;
    int fn;
    int active;
} lsig;

static void sig_fire(myriad_loop_t *lp, int signo, void *ud) {
    lsig *s = ud;
    (void)lp;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, s->fn);
    lua_pushinteger(CB, signo);
    call_cb(1, "signal callback");
}

static void sig_release(void *ud) {
    lsig *s = ud;
    s->active = 0;
    unref(CB, &s->fn);
}

static int l_signal(lua_State *L) {
    int signo;
    if (lua_type(L, 1) == LUA_TSTRING) {
        const char *n = lua_tostring(L, 1);
        signo = !strcmp(n, "SIGTERM") || !strcmp(n, "TERM") ? SIGTERM
              : !strcmp(n, "SIGINT") || !strcmp(n, "INT") ? SIGINT
              : !strcmp(n, "SIGHUP") || !strcmp(n, "HUP") ? SIGHUP
              : !strcmp(n, "SIGUSR1") || !strcmp(n, "USR1") ? SIGUSR1
              : !strcmp(n, "SIGUSR2") || !strcmp(n, "USR2") ? SIGUSR2 : -1;
    } else {
        signo = (int)luaL_checkinteger(L, 1);
    }
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lsig *s = (lsig *)lua_newuserdata(L, sizeof *s);
    luaL_getmetatable(L, SIG_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 2);
    s->fn = luaL_ref(L, LUA_REGISTRYINDEX);
    /* the watch keeps its userdata alive (it is also its user data) */
    lua_pushvalue(L, -1);
    luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = myriad_signal_watch(LP, signo, sig_fire, s, sig_release, &s->id);
    if (rc != MYRIAD_OK) {
        unref(L, &s->fn);
        return luaL_error(L, "cannot watch signal: %s", myriad_strerror(rc));
    }
    s->active = 1;
    return 1;
}

static int sig_cancel(lua_State *L) {
    lsig *s = (lsig *)luaL_checkudata(L, 1, SIG_MT);
    lua_pushboolean(L, s->active && myriad_signal_unwatch(LP, s->id) == MYRIAD_OK);
    return 1;
}

static const luaL_Reg sig_methods[] = {{"cancel", sig_cancel}, {NULL, NULL}};

/* ---- the loop ---- */

static int l_run(lua_State *L) {
    check_rc(L, myriad_loop_run(LP));
    return 0;
}

static int l_run_once(lua_State *L) {
    int r = myriad_loop_run_once(LP, lua_toboolean(L, 1));
    if (r < 0) return luaL_error(L, "%s", myriad_strerror(r));
    lua_pushboolean(L, r == 1);
    return 1;
}

static int l_stop(lua_State *L) {
    (void)L;
    myriad_loop_stop(LP);
    return 0;
}

static int l_backend_fd(lua_State *L) {
    lua_pushinteger(L, myriad_loop_backend_fd(LP));
    return 1;
}

static int l_next_timeout(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)myriad_loop_next_timeout(LP));
    return 1;
}

static int l_stats(lua_State *L) {
    myriad_stats_t st;
    myriad_loop_stats(LP, &st);
    lua_newtable(L);
#define F(x) lua_pushinteger(L, (lua_Integer)st.x); lua_setfield(L, -2, #x)
    F(iterations); F(wait); F(ctl); F(read); F(received); F(write); F(accept); F(other); F(wakeups); F(accepted);
#undef F
    lua_pushinteger(L, live_requests);
    lua_setfield(L, -2, "live_requests");
    return 1;
}

#include "cosocket.h"
/* ---- the supervisor of worker processes (forked: a Lua state forks fine) ----
 *
 *   local sup = myriad.supervisor{ workers = N, max_requests = N, watchdog = seconds,
 *                                  user = "name", max_workers = N, drain_timeout = ms }
 *   sup:listen("http" | "fcgi", ADDR) -> bound address   (binds now, once)
 *   sup:status_listen(ADDR) -> bound address
 *   sup:on_reload(fn)  -- in the supervisor on SIGHUP, before the workers are replaced
 *   sup:run(function(w) ... end) -> 0 once stopped; in each worker process, fn(w) runs with
 *     w.http / w.fcgi / w.https (lists of "fd:N" addresses for myriad.server; https ones with
 *     the worker's own tls = {...}) and w.slot, and the
 *     process exits when it returns (its return value, an integer, is the exit code).
 */
#define SUP_MT "myriad.supervisor"

typedef struct {
    myriad_sup_t *sup;
    int reload;  /* registry ref */
} lsup;

static const struct { const char *name; int opt; long long scale; } sup_opts[] = {
    {"workers", MYRIAD_SUP_WORKERS, 1},           {"max_workers", MYRIAD_SUP_MAX_WORKERS, 1},
    {"max_requests", MYRIAD_SUP_MAX_REQUESTS, 1}, {"max_rss", MYRIAD_SUP_MAX_RSS, 1},
    {"watchdog", MYRIAD_SUP_WATCHDOG_MS, 1000},   {"drain_timeout", MYRIAD_SUP_DRAIN_TIMEOUT_MS, 1},
    {"idle_timeout", MYRIAD_SUP_IDLE_TIMEOUT_MS, 1},
};

static lsup *check_sup(lua_State *L) {
    lsup *s = (lsup *)luaL_checkudata(L, 1, SUP_MT);
    if (!s->sup) luaL_error(L, "supervisor already ran");
    return s;
}

static int l_supervisor(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lsup *s = (lsup *)lua_newuserdata(L, sizeof *s);
    s->sup = NULL;
    s->reload = LUA_NOREF;
    luaL_getmetatable(L, SUP_MT);
    lua_setmetatable(L, -2);
    if (myriad_sup_new(&s->sup) != MYRIAD_OK) return luaL_error(L, "out of memory");
    for (size_t i = 0; i < sizeof sup_opts / sizeof sup_opts[0]; i++) {
        lua_getfield(L, 1, sup_opts[i].name);
        if (!lua_isnil(L, -1)) {
            lua_Integer v = luaL_checkinteger(L, -1);
            if (myriad_sup_set(s->sup, sup_opts[i].opt, (int64_t)v * sup_opts[i].scale) != MYRIAD_OK)
                return luaL_error(L, "bad value for %s", sup_opts[i].name);
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, 1, "user");
    if (!lua_isnil(L, -1)) {
        size_t n;
        const char *u = luaL_checklstring(L, -1, &n);
        int rc = myriad_sup_set_user(s->sup, u, n, NULL, 0);
        if (rc == MYRIAD_ENOTFOUND) return luaL_error(L, "unknown user '%s'", u);
        if (rc != MYRIAD_OK) return luaL_error(L, "user '%s': %s", u, myriad_strerror(rc));
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "chroot");
    if (!lua_isnil(L, -1)) {
        size_t n;
        const char *d = luaL_checklstring(L, -1, &n);
        int rc = myriad_sup_set_chroot(s->sup, d, n);
        if (rc != MYRIAD_OK) return luaL_error(L, "chroot '%s': %s", d, myriad_strerror(rc));
    }
    lua_pop(L, 1);
    return 1;
}

static int push_bound(lua_State *L, lsup *s) {
    char buf[512];
    size_t i = myriad_sup_listener_count(s->sup) - 1;
    int n = myriad_sup_listener_addr(s->sup, i, NULL, buf, sizeof buf);
    if (n < 0) return luaL_error(L, "%s", myriad_strerror(n));
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int sup_listen(lua_State *L) {
    lsup *s = check_sup(L);
    const char *p = luaL_checkstring(L, 2);
    size_t n;
    const char *a = luaL_checklstring(L, 3, &n);
    int proto = !strcmp(p, "http") ? MYRIAD_HTTP : !strcmp(p, "fcgi") ? MYRIAD_FCGI : !strcmp(p, "https") ? MYRIAD_HTTPS : 0;
    if (!proto) return luaL_error(L, "protocol must be 'http', 'https' or 'fcgi'");
    int rc = myriad_sup_listen(s->sup, proto, a, n);
    if (rc != MYRIAD_OK) return luaL_error(L, "cannot listen on %s: %s", a, myriad_strerror(rc));
    return push_bound(L, s);
}

/* sup:listen_inherited() -> { {proto =, addr =}, ... }: the socket-activated fds (LISTEN_FDS;
 * "fcgi" by name FastCGI, the others HTTP), shared by every worker; {} when none. */
static int sup_listen_inherited(lua_State *L) {
    lsup *s = check_sup(L);
    size_t before = myriad_sup_listener_count(s->sup);
    int rc = myriad_sup_listen_inherited(s->sup);
    if (rc < 0) return luaL_error(L, "socket activation: %s", detail_or(rc));
    lua_newtable(L);
    for (size_t i = before; i < before + (size_t)rc; i++) {
        char buf[512];
        int proto = 0;
        int n = myriad_sup_listener_addr(s->sup, i, &proto, buf, sizeof buf);
        if (n < 0) return luaL_error(L, "%s", myriad_strerror(n));
        lua_newtable(L);
        lua_pushstring(L, proto == MYRIAD_FCGI ? "fcgi" : "http");
        lua_setfield(L, -2, "proto");
        lua_pushlstring(L, buf, (size_t)n);
        lua_setfield(L, -2, "addr");
        lua_rawseti(L, -2, (int)(i - before) + 1);
    }
    return 1;
}

static int sup_status_listen(lua_State *L) {
    lsup *s = check_sup(L);
    size_t n;
    const char *a = luaL_checklstring(L, 2, &n);
    int rc = myriad_sup_status_listen(s->sup, a, n);
    if (rc != MYRIAD_OK) return luaL_error(L, "cannot listen on %s: %s", a, myriad_strerror(rc));
    return push_bound(L, s);
}

static void sup_reload_cb(void *ud) {
    lsup *s = ud;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, s->reload);
    call_cb(0, "on_reload");
}

static int sup_on_reload(lua_State *L) {
    lsup *s = check_sup(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    unref(L, &s->reload);
    lua_pushvalue(L, 2);
    s->reload = luaL_ref(L, LUA_REGISTRYINDEX);
    myriad_sup_on_reload(s->sup, sup_reload_cb, s, NULL);
    return 0;
}

/* In a worker process: a fresh loop (the one inherited from the supervisor shares its epoll
 * instance with every other worker), then fn(w). */
static int sup_worker_cb(myriad_worker_t *w, void *ud) {
    lua_State *L = CB;
    (void)ud;
    LP = NULL; /* the inherited loop is left alone: its fds are the supervisor's */
    if (myriad_loop_new(&LP) != MYRIAD_OK) return 1;
    lua_pushvalue(L, -1); /* the worker function, left on CB by sup_run */
    lua_newtable(L);
    int nh = 0, nf = 0, ns = 0;
    lua_newtable(L); /* http */
    lua_newtable(L); /* fcgi */
    lua_newtable(L); /* https */
    for (size_t i = 0; i < myriad_worker_listener_count(w); i++) {
        int proto;
        int fd = myriad_worker_listener(w, i, &proto);
        if (fd < 0) continue;
        lua_pushfstring(L, "fd:%d", fd);
        if (proto == MYRIAD_HTTP) lua_rawseti(L, -4, ++nh);
        else if (proto == MYRIAD_FCGI) lua_rawseti(L, -3, ++nf);
        else lua_rawseti(L, -2, ++ns);
    }
    lua_setfield(L, -4, "https");
    lua_setfield(L, -3, "fcgi");
    lua_setfield(L, -2, "http");
    lua_pushinteger(L, myriad_worker_slot(w));
    lua_setfield(L, -2, "slot");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        report(L, "worker");
        return 1;
    }
    int code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    fflush(NULL);
    return code;
}

static int sup_run(lua_State *L) {
    lsup *s = check_sup(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_xmove(L, CB, 1); /* where the worker callback finds it */
    fflush(NULL);
    int rc = myriad_sup_run(s->sup, sup_worker_cb, NULL);
    lua_pop(CB, 1);
    if (rc < 0) return luaL_error(L, "supervisor: %s", myriad_strerror(rc));
    lua_pushinteger(L, rc);
    return 1;
}

static int sup_gc(lua_State *L) {
    lsup *s = (lsup *)luaL_checkudata(L, 1, SUP_MT);
    myriad_sup_free(s->sup);
    s->sup = NULL;
    unref(L, &s->reload);
    return 0;
}

static const luaL_Reg sup_methods[] = {{"listen", sup_listen},       {"status_listen", sup_status_listen},
                                       {"listen_inherited", sup_listen_inherited},
                                       {"on_reload", sup_on_reload}, {"run", sup_run},
                                       {NULL, NULL}};

static int l_pid(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* myriad.listen_fds() -> the number of socket-activated fds passed to this process. */
static int l_listen_fds(lua_State *L) {
    int n = myriad_listen_fds();
    if (n < 0) return luaL_error(L, "%s", detail_or(n));
    lua_pushinteger(L, n);
    return 1;
}

/* myriad.notify(state) -> true (sent), false (no NOTIFY_SOCKET), or nil, message. */
static int l_notify(lua_State *L) {
    size_t n;
    const char *st = luaL_checklstring(L, 1, &n);
    int rc = myriad_notify(st, n);
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, myriad_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, rc == 1);
    return 1;
}

/* myriad.watchdog() -> true if WATCHDOG=1 pings were armed on the loop, false if not asked. */
static int l_watchdog(lua_State *L) {
    int rc = myriad_watchdog_start(LP, NULL);
    if (rc < 0) return luaL_error(L, "watchdog: %s", myriad_strerror(rc));
    lua_pushboolean(L, rc == 1);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"server", l_server}, {"timer", l_timer},       {"sleep", l_sleep},
    {"signal", l_signal}, {"run", l_run},           {"run_once", l_run_once},
    {"stop", l_stop},     {"backend_fd", l_backend_fd}, {"next_timeout", l_next_timeout},
    {"stats", l_stats},   {"tcp", l_tcp},           {"connect", l_connect},
    {"spawn", l_spawn},   {"listen_fds", l_listen_fds}, {"notify", l_notify},
    {"watchdog", l_watchdog}, {"supervisor", l_supervisor}, {"pid", l_pid},
    {"check_tls", l_check_tls}, {"publish", l_publish},
    {NULL, NULL}};

static void metatable(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                      lua_CFunction index) {
    luaL_newmetatable(L, name);
    setfuncs(L, methods);
    if (index) {
        lua_pushcfunction(L, index);
    } else {
        lua_pushvalue(L, -1);
    }
    lua_setfield(L, -2, "__index");
    if (gc) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

/* The library's warnings and errors (a lack of fds, a response that timed out, a request
 * dropped unanswered) go to stderr: running out of fds must not be silent. Any thread. */
static void log_stderr(int level, const char *msg, size_t len, void *ud) {
    (void)ud;
    fprintf(stderr, "myriad: %s: %.*s\n", level <= 1 ? "error" : "warning", (int)len, msg);
}

#include "web.c"
#include "files.c"

int luaopen_myriad(lua_State *L) {
    if (!LP) {
        int rc;
        myriad_set_logger(log_stderr, NULL, 2);
        rc = myriad_loop_new(&LP);
        if (rc != MYRIAD_OK) return luaL_error(L, "myriad: %s", myriad_strerror(rc));
        CB = lua_newthread(L);
        luaL_ref(L, LUA_REGISTRYINDEX); /* anchored for the life of the state */
        lua_newtable(L);
        lua_newtable(L);
        lua_pushstring(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        COREQ = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_newtable(L);
        SNAPS = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    metatable(L, REQ_MT, req_methods, req_gc, req_index);
    metatable(L, SRV_MT, srv_methods, srv_gc, NULL);
    metatable(L, TIMER_MT, timer_methods, NULL, NULL);
    metatable(L, WS_MT, ws_methods, lws_gc, NULL);
    metatable(L, SIG_MT, sig_methods, NULL, NULL);
    metatable(L, SOCK_MT, sock_methods, sock_gc, NULL);
    metatable(L, SUP_MT, sup_methods, sup_gc, NULL);
    lua_newtable(L);
    setfuncs(L, funcs);
    lua_pushstring(L, myriad_version());
    lua_setfield(L, -2, "version");
    open_web(L);
    open_files(L);
    return 1;
}
