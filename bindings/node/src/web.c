/*
 * web.c — the router, forms, query strings and cookies of the Node addon. Part of the
 * addon.c translation unit (included from it: it uses its request slots and helpers),
 * kept apart as a concern of its own. index.js builds the API on these:
 *   routerNew() -> router (external) ; routerAdd(r, method, pattern, index) (throws) ;
 *   routerMatch(r, h) -> index | [status, allow] (sets the parameters on the request) ;
 *   params(h) -> [name, value, ...] ; urlencoded(str) -> [name, value, ...] ;
 *   cookies(str) -> [name, value, ...] ; cookie(name, value, path, domain, sameSite,
 *   maxAge, expires, secure, httpOnly) -> string (throws) ; formNew(contentType, parts,
 *   header, field, total) -> form (external, throws) ; formFeed(f, buf) / formFinish(f) ->
 *   events [kind, ...] (throw an Error with .status 400/413).
 */

static napi_value utf8v(napi_env env, const char *s, size_t n) {
    napi_value r;
    napi_create_string_utf8(env, s ? s : "", n, &r);
    return r;
}

/* Throws an Error with .code, .errno and .status (the HTTP status that answers it). */
static napi_value throw_status(napi_env env, int rc, const char *msg) {
    napi_value m, c, err, n, st;
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_string_utf8(env, rc == MYRIAD_ETOOLARGE ? "MYRIAD_ETOOLARGE"
                                 : rc == MYRIAD_EMEDIATYPE ? "MYRIAD_EMEDIATYPE"
                                 : rc == MYRIAD_ECOOKIE ? "MYRIAD_ECOOKIE"
                                 : rc == MYRIAD_EPATTERN ? "MYRIAD_EPATTERN"
                                 : rc == MYRIAD_ECONFLICT ? "MYRIAD_ECONFLICT"
                                 : rc == MYRIAD_EBADREQ ? "MYRIAD_EBADREQ" : code_name(rc),
                             NAPI_AUTO_LENGTH, &c);
    napi_create_error(env, c, m, &err);
    napi_create_int32(env, rc, &n);
    napi_set_named_property(env, err, "errno", n);
    napi_create_int32(env, myriad_http_status_of(rc), &st);
    napi_set_named_property(env, err, "status", st);
    napi_throw(env, err);
    return NULL;
}

/* ---- flat [name, value, ...] arrays from pair callbacks ---- */

typedef struct {
    napi_env env;
    napi_value arr;
    uint32_t n;
} flat;

static int flat_pair(const char *n, size_t nl, const char *v, size_t vl, void *ud) {
    flat *f = ud;
    napi_set_element(f->env, f->arr, f->n++, utf8v(f->env, n, nl));
    napi_set_element(f->env, f->arr, f->n++, utf8v(f->env, v, vl));
    return 0;
}

typedef int (*pair_parser)(const char *, size_t, myriad_pair_fn, void *);

static napi_value parse_flat(napi_env env, napi_callback_info info, pair_parser parse) {
    napi_value argv[1];
    char stack[1024], *s, *heap;
    size_t n;
    flat f = {env, NULL, 0};
    if (get_args(env, info, 1, argv) < 0) return NULL;
    napi_create_array(env, &f.arr);
    if (get_str(env, argv[0], 0, stack, sizeof stack, &s, &n, &heap) < 0) return f.arr;
    parse(s, n, flat_pair, &f);
    free(heap);
    return f.arr;
}

/* urlencoded(str): the string's bytes (latin1, as the target is given) decoded. */
static napi_value js_urlencoded(napi_env env, napi_callback_info info) {
    return parse_flat(env, info, myriad_urlencoded_parse);
}

static napi_value js_cookies(napi_env env, napi_callback_info info) {
    return parse_flat(env, info, myriad_cookie_parse);
}

/* params(h) -> [name, value, ...] of the routed request, or undefined once finished. */
static napi_value js_params(napi_env env, napi_callback_info info) {
    napi_value argv[1], arr;
    slot *s;
    int n;
    if (get_args(env, info, 1, argv) < 0) return NULL;
    if (!(s = arg_slot(env, the_inst(env), argv[0])) || (n = myriad_req_param_count(s->r)) < 0) return undefined(env);
    napi_create_array_with_length(env, (size_t)n * 2, &arr);
    for (int i = 0; i < n; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (myriad_req_param_at(s->r, (size_t)i, &k, &kl, &v, &vl) != MYRIAD_OK) continue;
        napi_set_element(env, arr, (uint32_t)(2 * i), utf8v(env, k, kl));
        napi_set_element(env, arr, (uint32_t)(2 * i + 1), utf8v(env, v, vl));
    }
    return arr;
}

/* ---- the router ---- */

static void router_finalize(napi_env env, void *data, void *hint) {
    (void)env; (void)hint;
    myriad_router_free((myriad_router_t *)data);
}

static napi_value js_router_new(napi_env env, napi_callback_info info) {
    myriad_router_t *r;
    napi_value ext;
    int rc;
    (void)info;
    if ((rc = myriad_router_new(&r)) != MYRIAD_OK) return throw_rc(env, rc, "router");
    napi_create_external(env, r, router_finalize, NULL, &ext);
    return ext;
}

static myriad_router_t *router_arg(napi_env env, napi_value v) {
    void *p = NULL;
    if (napi_get_value_external(env, v, &p) != napi_ok) return NULL;
    return p;
}

/* routerAdd(r, method, pattern, index): throws the router's message on a bad route. */
static napi_value js_router_add(napi_env env, napi_callback_info info) {
    napi_value argv[4];
    char mb[64], pb[1024], *m, *p, *mh, *ph;
    size_t ml, pl;
    double idx;
    myriad_router_t *r;
    if (get_args(env, info, 4, argv) < 0) return NULL;
    if (!(r = router_arg(env, argv[0]))) return throw_type(env, "router expected");
    if (napi_get_value_double(env, argv[3], &idx) != napi_ok) return throw_type(env, "index expected");
    if (get_str(env, argv[1], 1, mb, sizeof mb, &m, &ml, &mh) < 0) return throw_type(env, "method must be a string");
    if (get_str(env, argv[2], 1, pb, sizeof pb, &p, &pl, &ph) < 0) {
        free(mh);
        return throw_type(env, "pattern must be a string");
    }
    int rc = myriad_router_add(r, m, ml, p, pl, NULL, (void *)(intptr_t)idx, NULL);
    free(mh);
    free(ph);
    if (rc != MYRIAD_OK) {
        char msg[512];
        if (myriad_router_last_error(r, msg, sizeof msg) <= 0) snprintf(msg, sizeof msg, "%s", myriad_strerror(rc));
        return throw_status(env, rc, msg);
    }
    return undefined(env);
}

/* routerMatch(r, h) -> index, or [status, allow] (allow undefined unless 405). */
static napi_value js_router_match(napi_env env, napi_callback_info info) {
    napi_value argv[2], arr, v;
    myriad_router_t *r;
    slot *s;
    void *ud = NULL;
    const char *allow = NULL;
    size_t al = 0;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (!(r = router_arg(env, argv[0]))) return throw_type(env, "router expected");
    if (!(s = arg_slot(env, the_inst(env), argv[1]))) return throw_rc(env, MYRIAD_EGONE, "router");
    int rc = myriad_router_match(r, s->r, &ud, &allow, &al);
    if (rc == MYRIAD_OK) {
        napi_create_double(env, (double)(intptr_t)ud, &v);
        return v;
    }
    napi_create_array_with_length(env, 2, &arr);
    napi_create_int32(env, myriad_http_status_of(rc), &v);
    napi_set_element(env, arr, 0, v);
    if (allow) napi_set_element(env, arr, 1, latin1(env, allow, al));
    return arr;
}

/* ---- Set-Cookie ---- */

/* cookie(name, value, path, domain, sameSite, maxAge, expires, secure, httpOnly) -> string */
static napi_value js_cookie(napi_env env, napi_callback_info info) {
    napi_value argv[9], out = NULL;
    char nb[256], vb[1024], *n, *v, *nh, *vh;
    size_t nl, vl;
    myriad_cookie_t *c;
    if (get_args(env, info, 9, argv) < 0) return NULL;
    if (get_str(env, argv[0], 1, nb, sizeof nb, &n, &nl, &nh) < 0) return throw_type(env, "cookie name must be a string");
    if (get_str(env, argv[1], 1, vb, sizeof vb, &v, &vl, &vh) < 0) {
        free(nh);
        return throw_type(env, "cookie value must be a string");
    }
    int rc = myriad_cookie_new(&c, n, nl, v, vl);
    free(nh);
    free(vh);
    if (rc != MYRIAD_OK) return throw_status(env, rc, "invalid cookie name or value");
    static const int strs[] = {MYRIAD_COOKIE_PATH, MYRIAD_COOKIE_DOMAIN, MYRIAD_COOKIE_SAMESITE};
    for (int i = 0; rc == MYRIAD_OK && i < 3; i++) {
        char sb[1024], *s, *sh;
        size_t sl;
        if (get_str(env, argv[2 + i], 1, sb, sizeof sb, &s, &sl, &sh) < 0) continue; /* not a string: unset */
        rc = myriad_cookie_set(c, strs[i], s, sl);
        free(sh);
    }
    static const int ints[] = {MYRIAD_COOKIE_MAX_AGE, MYRIAD_COOKIE_EXPIRES};
    for (int i = 0; rc == MYRIAD_OK && i < 2; i++) {
        double d;
        if (napi_get_value_double(env, argv[5 + i], &d) != napi_ok) continue;
        rc = myriad_cookie_set_int(c, ints[i], (int64_t)d);
    }
    static const int flags[] = {MYRIAD_COOKIE_SECURE, MYRIAD_COOKIE_HTTPONLY};
    for (int i = 0; rc == MYRIAD_OK && i < 2; i++) {
        bool b;
        if (napi_get_value_bool(env, argv[7 + i], &b) != napi_ok) continue;
        rc = myriad_cookie_set_int(c, flags[i], b ? 1 : 0);
    }
    const char *s;
    size_t sl;
    if (rc == MYRIAD_OK) rc = myriad_cookie_value(c, &s, &sl);
    if (rc == MYRIAD_OK) out = latin1(env, s, sl);
    else throw_status(env, rc, rc == MYRIAD_ECOOKIE ? myriad_cookie_error(c) : myriad_strerror(rc));
    myriad_cookie_free(c);
    return out;
}

/* ---- forms ---- */

typedef struct {
    napi_env env;
    napi_value arr;
    uint32_t n;
} fevents;

typedef struct {
    myriad_form_t *f;
    fevents *ev; /* the array being filled during a feed */
} jform;

static void fput(fevents *e, napi_value v) { napi_set_element(e->env, e->arr, e->n++, v); }

static int jform_event(int ev, const myriad_part_t *part, const uint8_t *data, size_t len, void *ud) {
    jform *j = ud;
    fevents *e = j->ev;
    napi_value v;
    const char *s;
    size_t n;
    if (!e) return 1;
    napi_create_int32(e->env, ev, &v);
    fput(e, v);
    if (ev == MYRIAD_FORM_PART) {
        fput(e, myriad_part_name(part, &s, &n) == MYRIAD_OK ? utf8v(e->env, s, n) : undefined(e->env));
        fput(e, myriad_part_filename(part, &s, &n) == MYRIAD_OK ? utf8v(e->env, s, n) : undefined(e->env));
        fput(e, myriad_part_content_type(part, &s, &n) == MYRIAD_OK ? utf8v(e->env, s, n) : undefined(e->env));
    } else if (ev == MYRIAD_FORM_DATA) {
        void *copy;
        napi_create_buffer_copy(e->env, len, data, &copy, &v);
        fput(e, v);
    }
    return 0;
}

static void form_finalize(napi_env env, void *data, void *hint) {
    jform *j = data;
    (void)env; (void)hint;
    myriad_form_free(j->f);
    free(j);
}

/* formNew(contentType, parts, headerBytes, fieldBytes, totalBytes) (limits: numbers or
 * undefined) -> form; throws with .status 415 / 400. */
static napi_value js_form_new(napi_env env, napi_callback_info info) {
    napi_value argv[5], ext;
    char cb[1024], *ct, *ch;
    size_t cl;
    jform *j;
    if (get_args(env, info, 5, argv) < 0) return NULL;
    if (get_str(env, argv[0], 0, cb, sizeof cb, &ct, &cl, &ch) < 0) return throw_status(env, MYRIAD_EMEDIATYPE, "no Content-Type");
    if (!(j = calloc(1, sizeof *j))) {
        free(ch);
        return throw_rc(env, MYRIAD_ENOMEM, "form");
    }
    int rc = myriad_form_new(&j->f, ct, cl, jform_event, j, NULL);
    free(ch);
    if (rc != MYRIAD_OK) {
        free(j);
        return throw_status(env, rc, rc == MYRIAD_EMEDIATYPE ? "not a form content type"
                                                              : "multipart body without a valid boundary");
    }
    static const int which[] = {MYRIAD_FORM_MAX_PARTS, MYRIAD_FORM_MAX_HEADER, MYRIAD_FORM_MAX_FIELD, MYRIAD_FORM_MAX_TOTAL};
    for (int i = 0; i < 4; i++) {
        double d;
        if (napi_get_value_double(env, argv[1 + i], &d) != napi_ok) continue;
        if (d < 1 || myriad_form_set_limit(j->f, which[i], (uint64_t)d) != MYRIAD_OK) {
            myriad_form_free(j->f);
            free(j);
            return throw_type(env, "form limits are positive numbers");
        }
    }
    napi_create_external(env, j, form_finalize, NULL, &ext);
    return ext;
}

static napi_value form_run(napi_env env, napi_callback_info info, int finish) {
    napi_value argv[2];
    void *p = NULL;
    jform *j;
    fevents e = {env, NULL, 0};
    void *data = NULL;
    size_t len = 0;
    if (get_args(env, info, 2, argv) < 0) return NULL;
    if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) return throw_type(env, "form expected");
    j = p;
    if (!finish && napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) return throw_type(env, "Buffer expected");
    napi_create_array(env, &e.arr);
    j->ev = &e;
    int rc = finish ? myriad_form_finish(j->f) : myriad_form_feed(j->f, (const uint8_t *)data, len);
    j->ev = NULL;
    if (rc != MYRIAD_OK) return throw_status(env, rc, myriad_form_error(j->f));
    return e.arr;
}

static napi_value js_form_feed(napi_env env, napi_callback_info info) { return form_run(env, info, 0); }
static napi_value js_form_finish(napi_env env, napi_callback_info info) { return form_run(env, info, 1); }

#define WEB_FNS                                                                                    \
    {"routerNew", js_router_new}, {"routerAdd", js_router_add}, {"routerMatch", js_router_match}, \
        {"params", js_params}, {"urlencoded", js_urlencoded}, {"cookies", js_cookies},            \
        {"cookie", js_cookie}, {"formNew", js_form_new}, {"formFeed", js_form_feed},              \
        {"formFinish", js_form_finish},
