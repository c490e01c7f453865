/*
 * files.c — file responses and the static file handler in the Node addon. Part of the
 * addon.c translation unit (included from it: it uses its request slots and helpers).
 * index.js builds the API on these:
 *   filesNew(root, index|null, precompressed, cacheControl|null, cacheEntries, cacheValidMs)
 *     -> files (external; throws MYRIAD_EFILES_ROOT naming the root) ;
 *   filesServe(files, h, path) -> 0 or a negative error (answers and releases the handle) ;
 *   sendFile(h, status, headers, path, offset, length) -> 0 or a negative error (the head,
 *     the file's bytes by sendfile, finished; a file that cannot be opened or a range past
 *     its end is answered 404/403/416/500 and its code returned).
 */
#include <fcntl.h>

static void files_finalize(napi_env env, void *data, void *hint) {
    (void)env;
    (void)hint;
    myriad_files_free(data);
}

/* A string argument or null/undefined (NULL, 0). -1 for another type. */
static int opt_str(napi_env env, napi_value v, char *stack, size_t cap, char **out, size_t *len, char **heap) {
    napi_valuetype t;
    *out = NULL;
    *len = 0;
    *heap = NULL;
    napi_typeof(env, v, &t);
    if (t == napi_null || t == napi_undefined) return 0;
    return get_str(env, v, 1, stack, cap, out, len, heap);
}

static napi_value js_files_new(napi_env env, napi_callback_info info) {
    napi_value argv[6], ext;
    char rb[1024], ib[256], cb[512], *root, *index, *cc, *rh, *ih, *ch;
    size_t rl, il, cl;
    bool pre = true;
    double entries = 1024, valid = 1000;
    myriad_files_t *f = NULL;
    int rc;
    if (get_args(env, info, 6, argv) < 0) return NULL;
    if (get_str(env, argv[0], 1, rb, sizeof rb, &root, &rl, &rh) < 0) return throw_type(env, "root must be a string");
    if (opt_str(env, argv[1], ib, sizeof ib, &index, &il, &ih) < 0 || opt_str(env, argv[3], cb, sizeof cb, &cc, &cl, &ch) < 0) {
        free(rh);
        return throw_type(env, "index and cacheControl must be strings");
    }
    napi_get_value_bool(env, argv[2], &pre);
    napi_get_value_double(env, argv[4], &entries);
    napi_get_value_double(env, argv[5], &valid);
    rc = myriad_files_new(root, rl, &f);
    if (rc == MYRIAD_OK && index) rc = myriad_files_set_index(f, index, il);
    if (rc == MYRIAD_OK) rc = myriad_files_set_precompressed(f, pre ? 1 : 0);
    if (rc == MYRIAD_OK && cc) rc = myriad_files_set_cache_control(f, cc, cl);
    if (rc == MYRIAD_OK)
        rc = entries >= 0 && valid >= 1 && valid <= 4294967295.0
                 ? myriad_files_set_cache(f, (size_t)entries, (uint32_t)valid)
                 : MYRIAD_EINVAL;
    free(rh);
    free(ih);
    free(ch);
    if (rc != MYRIAD_OK) {
        myriad_files_free(f);
        return rc == MYRIAD_EFILES_ROOT ? throw_detail(env, rc, NULL) : throw_rc(env, rc, "files");
    }
    napi_create_external(env, f, files_finalize, NULL, &ext);
    return ext;
}

/* filesServe(files, h, path): the request's answer; its handle is released. */
static napi_value js_files_serve(napi_env env, napi_callback_info info) {
    napi_value argv[3];
    char pb[2048], *p, *ph;
    size_t pl;
    void *f = NULL;
    slot *s;
    myriad_req_t *r;
    int rc;
    if (get_args(env, info, 3, argv) < 0) return NULL;
    if (napi_get_value_external(env, argv[0], &f) != napi_ok || !f) return throw_type(env, "files expected");
    if (get_str(env, argv[2], 0, pb, sizeof pb, &p, &pl, &ph) < 0) return throw_type(env, "path must be a string");
    if (!(s = arg_slot(env, the_inst(env), argv[1]))) {
        free(ph);
        return int_result(env, MYRIAD_EGONE);
    }
    r = s->r;
    slot_release(s);
    rc = myriad_files_serve(f, r, p, pl);
    free(ph);
    return int_result(env, rc);
}

/* sendFile(h, status, headers, path, offset, length): a whole response from a file. */
static napi_value js_send_file(napi_env env, napi_callback_info info) {
    napi_value argv[6];
    char pb[2048], *p, *ph;
    size_t pl;
    double off = 0, len = -1;
    slot *s;
    myriad_req_t *r;
    int rc, fd, status = 0;
    if (get_args(env, info, 6, argv) < 0) return NULL;
    if (get_str(env, argv[3], 1, pb, sizeof pb, &p, &pl, &ph) < 0) return throw_type(env, "path must be a string");
    napi_get_value_double(env, argv[4], &off);
    napi_get_value_double(env, argv[5], &len);
    if (!(s = arg_slot(env, the_inst(env), argv[0]))) {
        free(ph);
        return int_result(env, MYRIAD_EGONE);
    }
    r = s->r;
    slot_release(s);
    fd = memchr(p, 0, pl) ? -1 : open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    rc = fd < 0 ? MYRIAD_EOS_BASE - (memchr(p, 0, pl) ? ENOENT : errno) : send_head(env, r, argv[1], argv[2]);
    free(ph);
    if (rc == MYRIAD_OK && (off < 0 || off > 9007199254740991.0)) rc = MYRIAD_EINVAL;
    if (rc == MYRIAD_OK)
        rc = myriad_req_write_file(r, fd, (uint64_t)off, len < 0 ? UINT64_MAX : (uint64_t)len);
    if (rc == MYRIAD_OK) return int_result(env, myriad_req_finish(r));
    if (fd >= 0) close(fd);
    if (rc == MYRIAD_EOS_BASE - ENOENT || rc == MYRIAD_EFILES_FD) status = 404;
    else if (rc == MYRIAD_EOS_BASE - EACCES) status = 403;
    else if (rc == MYRIAD_EFILES_RANGE) status = 416;
    else status = 500;
    {
        const char *reason = status == 404 ? "Not Found" : status == 403 ? "Forbidden"
                             : status == 416 ? "Range Not Satisfiable" : "Internal Server Error";
        /* (It finishes the request whatever it returns: after a head already sent, with
           what there is.) */
        myriad_req_send(r, status, "text/plain", 10, (const uint8_t *)reason, strlen(reason));
    }
    return int_result(env, rc);
}

#define FILES_FNS {"filesNew", js_files_new}, {"filesServe", js_files_serve}, {"sendFile", js_send_file},
