/*
 * files.c — file responses and the static file handler in the Lua binding. Part of the
 * myriad.c translation unit (included from it: it uses its request objects), kept apart
 * as a concern of its own.
 *
 *   local files, err = myriad.files(root [, { index = "index.html" | false,
 *                                           precompressed = true, cache_control = "...",
 *                                           cache_entries = 1024, cache_valid_ms = 1000 }])
 *   files:serve(req, path)   -- answers and ends req: the file at path (the request path
 *                            -- below the mount point as sent, percent-encoded) -> true
 *   res:send_file(path [, offset [, length]])  -- the file (or a range) as the whole body,
 *                            -- by sendfile, and ends the response -> true | false, err
 */
#include <errno.h>
#include <fcntl.h>

#define FILES_MT "myriad.files"

typedef struct {
    myriad_files_t *f;
} lfiles;

static int files_gc(lua_State *L) {
    lfiles *f = (lfiles *)luaL_checkudata(L, 1, FILES_MT);
    myriad_files_free(f->f);
    f->f = NULL;
    return 0;
}

/* Fails the myriad.files call: nil and the message (the option that was wrong). */
static int files_fail(lua_State *L, myriad_files_t *f, int rc, const char *what) {
    myriad_files_free(f);
    lua_pushnil(L);
    if (rc == MYRIAD_EFILES_ROOT) lua_pushstring(L, myriad_last_error_detail());
    else lua_pushfstring(L, "%s: %s", what, myriad_strerror(rc));
    return 2;
}

static int l_files(lua_State *L) {
    size_t rl;
    const char *root = luaL_checklstring(L, 1, &rl);
    myriad_files_t *f = NULL;
    int rc;
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
    if ((rc = myriad_files_new(root, rl, &f)) != MYRIAD_OK) return files_fail(L, NULL, rc, "root");
    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "index");
        if (lua_isstring(L, -1)) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            rc = myriad_files_set_index(f, s, n);
        } else if (lua_isboolean(L, -1) && !lua_toboolean(L, -1)) {
            rc = myriad_files_set_index(f, "", 0);
        }
        lua_pop(L, 1);
        if (rc != MYRIAD_OK) return files_fail(L, f, rc, "index");
        lua_getfield(L, 2, "precompressed");
        if (!lua_isnil(L, -1)) rc = myriad_files_set_precompressed(f, lua_toboolean(L, -1) ? 1 : 0);
        lua_pop(L, 1);
        lua_getfield(L, 2, "cache_control");
        if (lua_isstring(L, -1)) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            rc = myriad_files_set_cache_control(f, s, n);
        }
        lua_pop(L, 1);
        if (rc != MYRIAD_OK) return files_fail(L, f, rc, "cache_control");
        lua_getfield(L, 2, "cache_entries");
        lua_getfield(L, 2, "cache_valid_ms");
        if (!lua_isnil(L, -1) || !lua_isnil(L, -2)) {
            lua_Integer entries = luaL_optinteger(L, -2, 1024), ms = luaL_optinteger(L, -1, 1000);
            rc = entries < 0 || ms < 1 || ms > 0xffffffff ? MYRIAD_EINVAL
                                                          : myriad_files_set_cache(f, (size_t)entries, (uint32_t)ms);
        }
        lua_pop(L, 2);
        if (rc != MYRIAD_OK) return files_fail(L, f, rc, "cache_entries/cache_valid_ms");
    }
    lfiles *u = (lfiles *)lua_newuserdata(L, sizeof *u);
    u->f = f;
    luaL_getmetatable(L, FILES_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* files:serve(req, path): ends req (like res:finish()). */
static int files_serve(lua_State *L) {
    lfiles *f = (lfiles *)luaL_checkudata(L, 1, FILES_MT);
    lreq *q = checkreq(L, 2);
    size_t n;
    const char *p = luaL_checklstring(L, 3, &n);
    if (!f->f) return luaL_error(L, "files: freed");
    if (!q->r) return luaL_error(L, "request already finished");
    snapshot(L, q);
    int rc = myriad_files_serve(f->f, q->r, p, n);
    ended(L, q);
    lua_pushboolean(L, rc == MYRIAD_OK);
    if (rc == MYRIAD_OK) return 1;
    lua_pushstring(L, myriad_strerror(rc));
    return 2;
}

/* res:send_file(path [, offset [, length]]): the whole body from a file, then the end. A
 * file that cannot be opened, or a range past its end, is answered 404/403/416/500 (the
 * response ends either way) and returns false and the reason. */
static int res_send_file(lua_State *L) {
    lreq *q = checkreq(L, 1);
    size_t n;
    const char *p = luaL_checklstring(L, 2, &n);
    lua_Integer off = luaL_optinteger(L, 3, 0), len = luaL_optinteger(L, 4, -1);
    int fd, rc, status;
    if (!q->r) return luaL_error(L, "request already finished");
    if (off < 0) return luaL_argerror(L, 3, "offset must be 0 or more");
    fd = memchr(p, 0, n) ? (errno = ENOENT, -1) : open(p, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    rc = fd < 0 ? MYRIAD_EOS_BASE - errno
                : myriad_req_write_file(q->r, fd, (uint64_t)off, len < 0 ? UINT64_MAX : (uint64_t)len);
    snapshot(L, q);
    if (rc == MYRIAD_OK) {
        myriad_req_finish(q->r);
        ended(L, q);
        lua_pushboolean(L, 1);
        return 1;
    }
    if (fd >= 0) close(fd);
    status = rc == MYRIAD_EOS_BASE - ENOENT || rc == MYRIAD_EFILES_FD ? 404
             : rc == MYRIAD_EOS_BASE - EACCES                        ? 403
             : rc == MYRIAD_EFILES_RANGE                             ? 416
                                                                     : 500;
    const char *reason = status == 404 ? "Not Found" : status == 403 ? "Forbidden"
                         : status == 416 ? "Range Not Satisfiable" : "Internal Server Error";
    /* (It ends the request whatever it returns.) */
    myriad_req_send(q->r, status, "text/plain", 10, (const uint8_t *)reason, strlen(reason));
    ended(L, q);
    lua_pushboolean(L, 0);
    lua_pushstring(L, myriad_strerror(rc));
    return 2;
}

static const luaL_Reg files_methods[] = {{"serve", files_serve}, {NULL, NULL}};

static void open_files(lua_State *L) {
    metatable(L, FILES_MT, files_methods, files_gc, NULL);
    lua_pushcfunction(L, l_files);
    lua_setfield(L, -2, "files");
}
