/*
 * web.c — the Lua binding's router, forms, query arguments and cookies. Part of the
 * myriad.c translation unit (included from it: it uses its request objects and callback
 * thread), kept apart because it is a concern of its own.
 *
 *   local r = myriad.router()
 *   r:get("/users/:id", function(req, res) ... req.params.id ... end)  -- also post, put,
 *   r:use(function(req, res) ... return true to stop ... end)            -- delete, patch,
 *   myriad.server{ http = {...}, handler = r }                           -- head, options, add
 *   req.cookies, req.params, myriad.parse_urlencoded(s) (req.args is in myriad.c)
 *   local ok, err, status = req:form(function(ev, a) ... end)  -- "part"/"data"/"part_end"
 *   res:cookie(name, value, { path=, domain=, max_age=, expires=, secure=, http_only=,
 *              same_site= })  ;  myriad.cookie(name, value, opts) -> header value | nil, err
 */

/* ---- query arguments and cookies as tables ---- */

/* myriad.parse_urlencoded(s) -> { {name, value}, ... } in order (a form body, a query). */
static int list_pair(const char *n, size_t nl, const char *v, size_t vl, void *ud) {
    lua_State *L = (lua_State *)ud;
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, n, nl);
    lua_rawseti(L, -2, 1);
    lua_pushlstring(L, v, vl);
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, (int)rawlen(L, -2) + 1);
    return 0;
}

static int l_parse_urlencoded(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_newtable(L);
    myriad_urlencoded_parse(s, n, list_pair, L);
    return 1;
}

/* The first cookie of a name wins (RFC 6265 §5.4). */
static int cookie_pair(const char *n, size_t nl, const char *v, size_t vl, void *ud) {
    lua_State *L = (lua_State *)ud;
    lua_pushlstring(L, n, nl);
    lua_rawget(L, -2);
    int seen = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!seen) {
        lua_pushlstring(L, n, nl);
        lua_pushlstring(L, v, vl);
        lua_rawset(L, -3);
    }
    return 0;
}

static void push_cookies(lua_State *L, myriad_req_t *r) {
    int c = myriad_req_header_count(r);
    lua_newtable(L);
    for (int i = 0; i < c; i++) {
        const char *k, *v;
        size_t kn, vn;
        if (myriad_req_header_at(r, (size_t)i, &k, &kn, &v, &vn) != MYRIAD_OK) continue;
        if (kn == 6 && strncasecmp(k, "cookie", 6) == 0) myriad_cookie_parse(v, vn, cookie_pair, L);
    }
}

static void push_params(lua_State *L, myriad_req_t *r) {
    int c = myriad_req_param_count(r);
    lua_newtable(L);
    for (int i = 0; i < c; i++) {
        const char *k, *v;
        size_t kn, vn;
        if (myriad_req_param_at(r, (size_t)i, &k, &kn, &v, &vn) != MYRIAD_OK) continue;
        lua_pushlstring(L, k, kn);
        lua_pushlstring(L, v, vn);
        lua_rawset(L, -3);
    }
}

/* ---- Set-Cookie ---- */

/* Builds the header value from (name, value, opts) at 1..3; returns 1 with it pushed, or
 * 0 with an error message pushed. */
static int build_cookie(lua_State *L) {
    size_t nl, vl;
    const char *n = luaL_checklstring(L, 1, &nl);
    const char *v = luaL_checklstring(L, 2, &vl);
    myriad_cookie_t *c;
    int rc = myriad_cookie_new(&c, n, nl, v, vl);
    if (rc != MYRIAD_OK) {
        lua_pushstring(L, rc == MYRIAD_ECOOKIE ? "invalid cookie name or value" : myriad_strerror(rc));
        return 0;
    }
    if (lua_istable(L, 3)) {
        static const struct { const char *k; int a; } strs[] = {
            {"path", MYRIAD_COOKIE_PATH}, {"domain", MYRIAD_COOKIE_DOMAIN}, {"same_site", MYRIAD_COOKIE_SAMESITE}};
        static const struct { const char *k; int a; } ints[] = {
            {"max_age", MYRIAD_COOKIE_MAX_AGE}, {"expires", MYRIAD_COOKIE_EXPIRES},
            {"secure", MYRIAD_COOKIE_SECURE}, {"http_only", MYRIAD_COOKIE_HTTPONLY}};
        for (size_t i = 0; rc == MYRIAD_OK && i < sizeof strs / sizeof strs[0]; i++) {
            lua_getfield(L, 3, strs[i].k);
            if (lua_type(L, -1) == LUA_TSTRING) {
                size_t sl;
                const char *s = lua_tolstring(L, -1, &sl);
                rc = myriad_cookie_set(c, strs[i].a, s, sl);
            }
            lua_pop(L, 1);
        }
        for (size_t i = 0; rc == MYRIAD_OK && i < sizeof ints / sizeof ints[0]; i++) {
            lua_getfield(L, 3, ints[i].k);
            if (lua_type(L, -1) == LUA_TBOOLEAN) rc = myriad_cookie_set_int(c, ints[i].a, lua_toboolean(L, -1));
            else if (lua_type(L, -1) == LUA_TNUMBER)
                rc = myriad_cookie_set_int(c, ints[i].a, (int64_t)lua_tointeger(L, -1));
            lua_pop(L, 1);
        }
    }
    const char *out;
    size_t ol;
    if (rc == MYRIAD_OK) rc = myriad_cookie_value(c, &out, &ol);
    if (rc == MYRIAD_OK) lua_pushlstring(L, out, ol);
    else lua_pushstring(L, rc == MYRIAD_ECOOKIE ? myriad_cookie_error(c) : myriad_strerror(rc));
    myriad_cookie_free(c);
    return rc == MYRIAD_OK;
}

/* myriad.cookie(name, value [, opts]) -> "name=value; ..." | nil, error */
static int l_cookie(lua_State *L) {
    lua_settop(L, 3);
    if (build_cookie(L)) return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* res:cookie(name, value [, opts]) adds a Set-Cookie header; raises on invalid input. */
static int res_cookie(lua_State *L) {
    myriad_req_t *r = live(L, 1);
    lua_remove(L, 1);
    lua_settop(L, 3);
    if (!build_cookie(L)) return lua_error(L);
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    check_rc(L, myriad_req_header_add(r, "Set-Cookie", 10, v, n));
    return 0;
}

/* ---- forms ---- */

typedef struct {
    lreq *q;
    int fnref, coref, selfref;
    int done;
} lform;

static void form_resume(lform *f, int ok, const char *err, int status) {
    if (f->done) return;
    f->done = 1;
    lua_rawgeti(CB, LUA_REGISTRYINDEX, f->coref);
    lua_State *co = lua_tothread(CB, -1);
    lua_pop(CB, 1);
    unref(CB, &f->coref);
    unref(CB, &f->fnref);
    unref(CB, &f->selfref);
    if (!co) return;
    int n = 1;
    if (ok) {
        lua_pushboolean(co, 1);
    } else {
        lua_pushnil(co);
        lua_pushstring(co, err);
        lua_pushinteger(co, status);
        n = 3;
    }
    run_co(co, n, f->q);
}

static int form_event(int ev, const myriad_part_t *part, const uint8_t *data, size_t len, void *ud) {
    lform *f = ud;
    const char *s;
    size_t n;
    if (f->done) return 1;
    if (ev == MYRIAD_FORM_END) {
        form_resume(f, 1, NULL, 0);
        return 0;
    }
    if (ev < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%.*s", (int)len, (const char *)data);
        form_resume(f, 0, msg, ev == MYRIAD_EGONE ? 499 : myriad_http_status_of(ev));
        return 1;
    }
    lua_rawgeti(CB, LUA_REGISTRYINDEX, f->fnref);
    if (ev == MYRIAD_FORM_PART) {
        lua_pushstring(CB, "part");
        lua_newtable(CB);
        if (myriad_part_name(part, &s, &n) == MYRIAD_OK) { lua_pushlstring(CB, s, n); lua_setfield(CB, -2, "name"); }
        if (myriad_part_filename(part, &s, &n) == MYRIAD_OK) { lua_pushlstring(CB, s, n); lua_setfield(CB, -2, "filename"); }
        if (myriad_part_content_type(part, &s, &n) == MYRIAD_OK) {
            lua_pushlstring(CB, s, n);
            lua_setfield(CB, -2, "content_type");
        }
    } else if (ev == MYRIAD_FORM_DATA) {
        lua_pushstring(CB, "data");
        lua_pushlstring(CB, (const char *)data, len);
    } else {
        lua_pushstring(CB, "part_end");
        lua_pushnil(CB);
    }
    if (lua_pcall(CB, 2, 0, 0) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "form callback: %s", lua_tostring(CB, -1) ? lua_tostring(CB, -1) : "error");
        report(CB, "form callback error");
        lua_pop(CB, 1);
        form_resume(f, 0, msg, 500);
        return 1;
    }
    return 0;
}

static void form_release(void *ud) {
    lform *f = ud;
    unref(CB, &f->coref);
    unref(CB, &f->fnref);
    unref(CB, &f->selfref);
    free(f);
}

/* ok, err, status = req:form(fn): parses the body (urlencoded or multipart) as it arrives,
 * calling fn("part", {name=, filename=, content_type=}), fn("data", chunk),
 * fn("part_end") in body order; yields until the end. Returns true, or nil, message and
 * the HTTP status to answer (400 malformed, 413 a limit, 415 not a form, 499 client gone). */
static int req_form(lua_State *L) {
    lreq *q = checkreq(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!q->r || !q->in_handler)
        return luaL_error(L, "req:form() must be called before the handler first yields");
    if (lua_pushthread(L)) return luaL_error(L, "req:form() must run in the handler coroutine");
    lform *f = (lform *)calloc(1, sizeof *f);
    if (!f) return luaL_error(L, "out of memory");
    f->q = q;
    f->coref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    f->fnref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 1);
    f->selfref = luaL_ref(L, LUA_REGISTRYINDEX); /* C holds `q` until the form ends */
    int rc = myriad_req_read_form(q->r, form_event, f, form_release);
    if (rc != MYRIAD_OK) {
        form_release(f);
        lua_pushnil(L);
        lua_pushstring(L, myriad_strerror(rc));
        lua_pushinteger(L, myriad_http_status_of(rc));
        return 3;
    }
    return lua_yield(L, 0);
}

/* ---- the router (its dispatch is Lua code: see ROUTER_LUA) ---- */

#define ROUTER_MT "myriad.router"

typedef struct {
    myriad_router_t *r;
} lrouter;

static int router_gc(lua_State *L) {
    lrouter *r = (lrouter *)luaL_checkudata(L, 1, ROUTER_MT);
    myriad_router_free(r->r);
    r->r = NULL;
    return 0;
}

static int l_router_core(lua_State *L) {
    lrouter *r = (lrouter *)lua_newuserdata(L, sizeof *r);
    r->r = NULL;
    luaL_getmetatable(L, ROUTER_MT);
    lua_setmetatable(L, -2);
    check_rc(L, myriad_router_new(&r->r));
    return 1;
}

/* core:add(method, pattern, index): raises with the router's message on a bad pattern. */
static int router_add(lua_State *L) {
    lrouter *r = (lrouter *)luaL_checkudata(L, 1, ROUTER_MT);
    size_t ml, pl;
    const char *m = luaL_checklstring(L, 2, &ml);
    const char *p = luaL_checklstring(L, 3, &pl);
    lua_Integer idx = luaL_checkinteger(L, 4);
    int rc = myriad_router_add(r->r, m, ml, p, pl, NULL, (void *)(intptr_t)idx, NULL);
    if (rc != MYRIAD_OK) {
        char msg[256];
        if (myriad_router_last_error(r->r, msg, sizeof msg) <= 0) snprintf(msg, sizeof msg, "%s", myriad_strerror(rc));
        return luaL_error(L, "%s", msg);
    }
    return 0;
}

/* core:match(req) -> index | nil, status, allow (the parameters are set on req). */
static int router_match(lua_State *L) {
    lrouter *r = (lrouter *)luaL_checkudata(L, 1, ROUTER_MT);
    myriad_req_t *q = live(L, 2);
    void *ud = NULL;
    const char *allow = NULL;
    size_t al = 0;
    int rc = myriad_router_match(r->r, q, &ud, &allow, &al);
    if (rc == MYRIAD_OK) {
        lua_pushinteger(L, (lua_Integer)(intptr_t)ud);
        return 1;
    }
    lua_pushnil(L);
    lua_pushinteger(L, myriad_http_status_of(rc));
    if (allow) lua_pushlstring(L, allow, al);
    else lua_pushnil(L);
    return 3;
}

static const luaL_Reg router_methods[] = {{"add", router_add}, {"match", router_match}, {NULL, NULL}};

static const char ROUTER_LUA[] =
    "local M, core = ...\n"
    "local Router = {}\n"
    "Router.__index = Router\n"
    "local reasons = { [400] = 'Bad Request', [404] = 'Not Found', [405] = 'Method Not Allowed' }\n"
    "function M.router()\n"
    "  return setmetatable({ core = core(), routes = {}, hooks = {} }, Router)\n"
    "end\n"
    "function Router:add(method, pattern, fn)\n"
    "  assert(type(fn) == 'function', 'route handler function required')\n"
    "  local i = #self.routes + 1\n"
    "  self.core:add(method, pattern, i)\n"
    "  self.routes[i] = fn\n"
    "  return self\n"
    "end\n"
    "for _, m in ipairs({ 'get', 'post', 'put', 'delete', 'patch', 'head', 'options' }) do\n"
    "  local M_ = m:upper()\n"
    "  Router[m] = function(self, pattern, fn) return self:add(M_, pattern, fn) end\n"
    "end\n"
    "function Router:use(fn)\n"
    "  assert(type(fn) == 'function', 'hook function required')\n"
    "  self.hooks[#self.hooks + 1] = fn\n"
    "  return self\n"
    "end\n"
    "function Router:dispatch(req, res)\n"
    "  for _, h in ipairs(self.hooks) do\n"
    "    if h(req, res) then return end\n"
    "  end\n"
    "  local i, status, allow = self.core:match(req)\n"
    "  if i then return self.routes[i](req, res) end\n"
    "  if allow then res:header('Allow', allow) end\n"
    "  res:status(status):header('Content-Type', 'text/plain'):finish(reasons[status] or '')\n"
    "end\n"
    "function Router:handler()\n"
    "  return function(req, res) return self:dispatch(req, res) end\n"
    "end\n";

/* Adds the router, forms and cookies to the module table on top of the stack. */
static void open_web(lua_State *L) {
    metatable(L, ROUTER_MT, router_methods, router_gc, NULL);
    lua_pushcfunction(L, l_cookie);
    lua_setfield(L, -2, "cookie");
    lua_pushcfunction(L, l_parse_urlencoded);
    lua_setfield(L, -2, "parse_urlencoded");
    if (luaL_loadbuffer(L, ROUTER_LUA, sizeof ROUTER_LUA - 1, "=myriad.router") != 0) lua_error(L);
    lua_pushvalue(L, -2);
    lua_pushcfunction(L, l_router_core);
    lua_call(L, 2, 0);
}
