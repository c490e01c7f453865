/*
 * cosocket.h — outbound TCP / Unix connections for Lua handlers, in the style of
 * ngx.socket.tcp and luasocket, on myriad's streams (myriad_stream_connect): every call
 * that waits yields the running coroutine (a handler, or one started by myriad.spawn), so
 * the loop keeps serving other requests meanwhile.
 *
 *   local sock = myriad.tcp()               -- or myriad.connect(addr [, timeout_ms])
 *   sock:settimeout(ms)                     -- each later connect / send / receive
 *   local ok, err = sock:connect("127.0.0.1:8080")   -- or (host, port), "unix:/x.sock"
 *   local n, err = sock:send(data)
 *   local data, err, partial = sock:receive("*l" | "*a" | n)
 *   sock:close()
 *
 * Included once by myriad.c (it uses the loop, the callback thread and run_co from there),
 * so that every build of the module stays one source file.
 */

#define SOCK_MT "myriad.socket"
#define SOCK_DEFAULT_TIMEOUT 60000 /* ms, as ngx_lua's lua_socket_*_timeout */
#define SOCK_SEND_HIGH (256 * 1024) /* send() waits while more than this is queued */
#define SOCK_INPUT_MAX (1024 * 1024) /* reading pauses while this much waits unread */

enum { W_NONE, W_CONNECT, W_SEND, W_RECV };
enum { S_NEW, S_CONNECTING, S_OPEN, S_CLOSED };

typedef struct {
    myriad_stream_t *s;
    int state;
    int eof;
    int err;          /* why it closed (a myriad code), 0 for a close */
    char *in;         /* input received and not yet returned */
    size_t in_len, in_cap;
    int paused;
    int waiting;      /* W_*: what the coroutine in `coref` waits for */
    int coref;
    lua_Integer want; /* W_RECV: -1 a line, -2 everything, else a byte count */
    uint64_t timer;
    int timer_armed;
    lua_Integer timeout;
    int selfref;      /* myriad.connect: the socket, returned once connected */
} lsock;

static lsock *checksock(lua_State *L) {
    return (lsock *)luaL_checkudata(L, 1, SOCK_MT);
}

static void sock_cancel_timer(lsock *k) {
    if (k->timer_armed) myriad_timer_cancel(LP, k->timer);
    k->timer_armed = 0;
}

/* Pushes what a receive of `want` gets from the buffered input (consuming it), or returns
 * 0 if it needs more input. With `final` (EOF or closed) pushes what there is: all of it
 * for "*a"; nil, "closed", partial for the others. Returns the number of values pushed. */
static int sock_take(lua_State *L, lsock *k, lua_Integer want, int final) {
    size_t n = 0, skip = 0;
    if (want == -1) {
        char *nl = k->in_len ? memchr(k->in, '\n', k->in_len) : NULL;
        if (nl) {
            n = (size_t)(nl - k->in);
            skip = 1;
            if (n > 0 && k->in[n - 1] == '\r') n--, skip++;
        } else if (!final) {
            return 0;
        }
    } else if (want == -2) {
        if (!final) return 0;
        n = k->in_len;
    } else if ((size_t)want <= k->in_len) {
        n = (size_t)want;
    } else if (!final) {
        return 0;
    }
    int short_read = final && (want == -1 ? skip == 0 : want >= 0 && (size_t)want > k->in_len);
    if (short_read) n = k->in_len;
    lua_pushlstring(L, k->in, n);
    memmove(k->in, k->in + n + skip, k->in_len - n - skip);
    k->in_len -= n + skip;
    if (k->paused && k->in_len < SOCK_INPUT_MAX && k->s) {
        myriad_stream_pause(k->s, 0);
        k->paused = 0;
    }
    if (!short_read) return 1;
    /* nil, err, partial */
    lua_pushnil(L);
    lua_insert(L, -2);
    lua_pushstring(L, k->err ? myriad_strerror(k->err) : "closed");
    lua_insert(L, -2);
    return 3;
}

/* Resumes the waiting coroutine with `n` values pushed on CB. */
static void sock_resume(lsock *k, int n) {
    lua_rawgeti(CB, LUA_REGISTRYINDEX, k->coref);
    lua_State *co = lua_tothread(CB, -1);
    lua_pop(CB, 1);
    unref(CB, &k->coref);
    k->waiting = W_NONE;
    sock_cancel_timer(k);
    lua_xmove(CB, co, n);
    run_co(co, n, NULL);
}

/* Pushes nil, err on CB and resumes the waiter. */
static void sock_fail(lsock *k, const char *err) {
    lua_pushnil(CB);
    lua_pushstring(CB, err);
    sock_resume(k, 2);
}

/* Something changed (input, EOF, close, drain): wake the waiter if it can go on. */
static void sock_progress(lsock *k) {
    int final = k->eof || k->state == S_CLOSED;
    switch (k->waiting) {
    case W_RECV: {
        int n = sock_take(CB, k, k->want, final);
        if (n) sock_resume(k, n);
        break;
    }
    case W_SEND:
        if (k->state == S_CLOSED) sock_fail(k, k->err ? myriad_strerror(k->err) : "closed");
        else if (myriad_stream_queued(k->s) <= SOCK_SEND_HIGH / 4) {
            lua_pushinteger(CB, 1);
            sock_resume(k, 1);
        }
        break;
    case W_CONNECT:
        if (k->state == S_OPEN) {
            if (k->selfref != LUA_NOREF) lua_rawgeti(CB, LUA_REGISTRYINDEX, k->selfref);
            else lua_pushinteger(CB, 1);
            unref(CB, &k->selfref);
            sock_resume(k, 1);
        } else if (k->state == S_CLOSED) {
            unref(CB, &k->selfref);
            sock_fail(k, k->err ? myriad_strerror(k->err) : "closed");
        }
        break;
    default:
        break;
    }
}

static size_t sock_data(myriad_stream_t *s, const uint8_t *data, size_t len, void *ud) {
    lsock *k = ud;
    (void)s;
    if (k->in_len + len > k->in_cap) {
        size_t cap = k->in_cap ? k->in_cap : 4096;
        while (cap < k->in_len + len) cap *= 2;
        char *p = realloc(k->in, cap);
        if (!p) return 0; /* held: offered again later */
        k->in = p;
        k->in_cap = cap;
    }
    memcpy(k->in + k->in_len, data, len);
    k->in_len += len;
    sock_progress(k);
    /* Nobody is reading (a receive that waits for more never pauses the input it waits for). */
    if (k->in_len >= SOCK_INPUT_MAX && !k->paused && k->waiting != W_RECV && k->s) {
        myriad_stream_pause(k->s, 1);
        k->paused = 1;
    }
    return len;
}

static void sock_event(myriad_stream_t *s, int ev, int error, void *ud) {
    lsock *k = ud;
    (void)s;
    switch (ev) {
    case MYRIAD_STREAM_CONNECTED: k->state = S_OPEN; break;
    case MYRIAD_STREAM_EOF: k->eof = 1; break;
    case MYRIAD_STREAM_CLOSED:
        k->state = S_CLOSED;
        k->err = error;
        k->s = NULL; /* the handle ends with this event */
        break;
    default: break; /* DRAINED: progress below; TIMEOUT: our own timers instead */
    }
    sock_progress(k);
}

static void sock_timeout(myriad_loop_t *lp, void *ud) {
    lsock *k = ud;
    (void)lp;
    k->timer_armed = 0;
    if (k->waiting == W_NONE) return;
    if (k->waiting == W_CONNECT && k->s) myriad_stream_abort(k->s);
    if (k->waiting == W_RECV) {
        /* nil, "timeout", partial: the input so far stays buffered for the next receive */
        lua_pushnil(CB);
        lua_pushstring(CB, "timeout");
        lua_pushliteral(CB, "");
        sock_resume(k, 3);
        return;
    }
    sock_fail(k, "timeout");
}

/* Parks the running coroutine until `what` completes (or the timeout passes). */
static int sock_wait(lua_State *L, lsock *k, int what) {
    if (lua_pushthread(L)) {
        lua_pop(L, 1);
        return luaL_error(L, "myriad socket: must run in a coroutine driven by myriad "
                             "(a handler, or myriad.spawn(fn))");
    }
    k->coref = luaL_ref(L, LUA_REGISTRYINDEX);
    k->waiting = what;
    if (k->timeout > 0 && what != W_CONNECT &&
        myriad_timer_start(LP, (uint64_t)k->timeout, 0, sock_timeout, k, NULL, &k->timer) == MYRIAD_OK)
        k->timer_armed = 1;
    return lua_yield(L, 0);
}

static lsock *new_sock(lua_State *L) {
    lsock *k = (lsock *)lua_newuserdata(L, sizeof *k);
    memset(k, 0, sizeof *k);
    k->coref = k->selfref = LUA_NOREF;
    k->timeout = SOCK_DEFAULT_TIMEOUT;
    luaL_getmetatable(L, SOCK_MT);
    lua_setmetatable(L, -2);
    return k;
}

/* myriad.tcp() -> an unconnected socket */
static int l_tcp(lua_State *L) {
    new_sock(L);
    return 1;
}

/* sock:connect(addr) or sock:connect(host, port): HOST:PORT (names resolved off the
 * loop), [V6]:PORT, unix:PATH. Yields; returns 1, or nil and the error. */
static int sock_connect(lua_State *L) {
    lsock *k = checksock(L);
    char addr[600];
    if (lua_isnumber(L, 3)) {
        snprintf(addr, sizeof addr, "%s:%d", luaL_checkstring(L, 2), (int)lua_tointeger(L, 3));
    } else {
        snprintf(addr, sizeof addr, "%s", luaL_checkstring(L, 2));
    }
    if (k->state != S_NEW) {
        lua_pushnil(L);
        lua_pushstring(L, k->state == S_CLOSED ? "closed" : "already connected");
        return 2;
    }
    int rc = myriad_stream_connect(LP, addr, strlen(addr), (uint64_t)(k->timeout > 0 ? k->timeout : 0), &k->s);
    if (rc != MYRIAD_OK) {
        const char *d = myriad_last_error_detail();
        lua_pushnil(L);
        lua_pushstring(L, *d ? d : myriad_strerror(rc));
        return 2;
    }
    myriad_stream_set_callbacks(k->s, sock_data, sock_event, k, NULL);
    k->state = S_CONNECTING;
    lua_settop(L, 1);
    return sock_wait(L, k, W_CONNECT);
}

/* myriad.connect(addr [, timeout_ms]) -> sock, or nil and the error */
static int l_connect(lua_State *L) {
    lua_Integer t = luaL_optinteger(L, 2, SOCK_DEFAULT_TIMEOUT);
    lua_settop(L, 1);
    lsock *k = new_sock(L);
    k->timeout = t;
    lua_pushvalue(L, -1);
    k->selfref = luaL_ref(L, LUA_REGISTRYINDEX); /* what the connect returns */
    lua_insert(L, 1); /* sock, addr */
    int n = sock_connect(L);
    if (k->state == S_NEW) unref(L, &k->selfref); /* failed at once: nil, err */
    return n;
}

/* sock:settimeout(ms): for each later connect, send and receive (0: none). */
static int sock_settimeout(lua_State *L) {
    lsock *k = checksock(L);
    lua_Integer ms = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, ms >= 0, 2, "negative timeout");
    k->timeout = ms;
    return 0;
}

/* sock:send(data) -> #data, or nil and the error. Yields while much output is queued. */
static int sock_send(lua_State *L) {
    lsock *k = checksock(L);
    size_t n;
    const char *d = luaL_checklstring(L, 2, &n);
    if (k->state != S_OPEN || !k->s) {
        lua_pushnil(L);
        lua_pushstring(L, k->state == S_CLOSED ? (k->err ? myriad_strerror(k->err) : "closed") : "not connected");
        return 2;
    }
    int rc = myriad_stream_write(k->s, (const uint8_t *)d, n);
    if (rc != MYRIAD_OK) {
        lua_pushnil(L);
        lua_pushstring(L, myriad_strerror(rc));
        return 2;
    }
    if (myriad_stream_queued(k->s) <= SOCK_SEND_HIGH) {
        lua_pushinteger(L, (lua_Integer)n);
        return 1;
    }
    lua_settop(L, 1);
    return sock_wait(L, k, W_SEND);
}

/* sock:receive([pattern]): "*l" (default; a line without its CR LF), "*a" (everything
 * until the peer closes), or a byte count. Yields until it has it; on a close or timeout
 * returns nil, err, partial ("*a" returns what came). */
static int sock_receive(lua_State *L) {
    lsock *k = checksock(L);
    lua_Integer want = -1;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        want = lua_tointeger(L, 2);
        luaL_argcheck(L, want >= 0, 2, "negative size");
    } else if (!lua_isnoneornil(L, 2)) {
        const char *p = luaL_checkstring(L, 2);
        if (*p == '*') p++;
        if (*p == 'l') want = -1;
        else if (*p == 'a') want = -2;
        else return luaL_argerror(L, 2, "pattern must be '*l', '*a' or a number");
    }
    if (k->state == S_NEW || k->state == S_CONNECTING) {
        lua_pushnil(L);
        lua_pushstring(L, "not connected");
        return 2;
    }
    if (k->waiting != W_NONE) return luaL_error(L, "myriad socket: another coroutine is using it");
    int n = sock_take(L, k, want, k->eof || k->state == S_CLOSED);
    if (n) return n;
    k->want = want;
    if (k->paused && k->s) {
        myriad_stream_pause(k->s, 0);
        k->paused = 0;
    }
    lua_settop(L, 1);
    return sock_wait(L, k, W_RECV);
}

/* sock:close(): closes once queued output is written. Returns 1 (nil, "closed" if it was). */
static int sock_close(lua_State *L) {
    lsock *k = checksock(L);
    if (k->state == S_CLOSED || !k->s) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    myriad_stream_set_callbacks(k->s, NULL, NULL, NULL, NULL);
    myriad_stream_close(k->s);
    k->s = NULL;
    k->state = S_CLOSED;
    lua_pushinteger(L, 1);
    return 1;
}

static int sock_gc(lua_State *L) {
    lsock *k = checksock(L);
    unref(L, &k->selfref);
    sock_cancel_timer(k);
    if (k->s) {
        /* Nobody holds it any more: no callbacks into freed memory, connection dropped. */
        myriad_stream_set_callbacks(k->s, NULL, NULL, NULL, NULL);
        myriad_stream_abort(k->s);
        k->s = NULL;
    }
    free(k->in);
    k->in = NULL;
    return 0;
}

static const luaL_Reg sock_methods[] = {
    {"connect", sock_connect}, {"send", sock_send},   {"receive", sock_receive},
    {"settimeout", sock_settimeout}, {"close", sock_close}, {NULL, NULL}};

/* myriad.spawn(fn, ...): runs fn(...) now in a new coroutine that myriad drives (it may
 * sleep and use sockets); an error in it goes to stderr. */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L);
    lua_State *co = lua_newthread(L);
    lua_insert(L, 1);
    lua_xmove(L, co, n); /* fn and its arguments */
    run_co(co, n - 1, NULL);
    return 1; /* the coroutine */
}
