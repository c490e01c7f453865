// myriad for Node.js: HTTP/1.1 and FastCGI served by myriad's event loop, which Node's own
// libuv loop drives (src/addon.c) — no extra thread.
//
//   const myriad = require('myriad');
//   const srv = myriad.createServer(async (req, res) => {
//     res.setHeader('Content-Type', 'text/plain');
//     res.end(`hello ${req.path}`);
//   });
//   await srv.listen({ http: ['127.0.0.1:0'], fcgi: ['unix:/tmp/app.sock'] });
//   await srv.close();
'use strict';
const { EventEmitter } = require('node:events');
const { Readable } = require('node:stream');
const path = require('node:path');
const os = require('node:os');
const cluster = require('node:cluster');

const native = require(path.join(__dirname, '..', 'build', 'myriad.node'));
const ws = require('./ws.js');

const EGONE = -8;
const BODY_DATA = 0;
const BODY_END = 1;
const SLOT_SPAN = 2 ** 24; // a handle is generation * 2^24 + slot
const HIGH_WATER = 64 * 1024; // write() returns false above this many queued bytes
// Managed by myriad (framing, keep-alive, Date): ignored when set.
const MANAGED = new Set(['content-length', 'transfer-encoding', 'connection', 'date']);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]|[^\t\x20-\xff]/;
const LIMITS = ['maxBody', 'maxHead', 'headerTimeout', 'bodyTimeout', 'idleTimeout', 'writeTimeout', 'drainTimeout', 'maxParams',
  'responseTimeout', 'fcgiMaxRequests'];

const servers = new Map(); // id -> Server (listening or closing)
const live = []; // slot -> Response, for body, abort and drain events
let nextId = 1;

/** A string chunk in another encoding than utf8, as bytes. */
function encoded(chunk, encoding) {
  if (typeof chunk !== 'string' || !encoding || encoding === 'utf8' || encoding === 'utf-8') return chunk;
  if (!Buffer.isEncoding(encoding)) throw codeError(`Unknown encoding: ${encoding}`, 'ERR_UNKNOWN_ENCODING');
  return Buffer.from(chunk, encoding);
}

function codeError(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

// Events are rare on requests and responses: the emitter is made on first use, and the
// EventEmitter methods go to it. (Requests and responses are EventEmitters by prototype, so
// that Node's stream helpers, pipe() and pipeline(), take a response for a destination.)
class Lazy {
  _emitter() {
    return (this._ee ??= new EventEmitter());
  }

  on(event, fn) {
    this._emitter().on(event, fn);
    this._listening(event);
    return this;
  }

  addListener(event, fn) {
    return this.on(event, fn);
  }

  once(event, fn) {
    this._emitter().once(event, fn);
    this._listening(event);
    return this;
  }

  prependListener(event, fn) {
    this._emitter().prependListener(event, fn);
    this._listening(event);
    return this;
  }

  prependOnceListener(event, fn) {
    this._emitter().prependOnceListener(event, fn);
    this._listening(event);
    return this;
  }

  off(event, fn) {
    this._ee?.off(event, fn);
    return this;
  }

  removeListener(event, fn) {
    return this.off(event, fn);
  }

  removeAllListeners(...event) {
    this._ee?.removeAllListeners(...event);
    return this;
  }

  emit(event, ...args) {
    return this._emitter().emit(event, ...args); // throws an 'error' nobody listens to
  }

  listenerCount(event) {
    return this._ee ? this._ee.listenerCount(event) : 0;
  }

  listeners(event) {
    return this._ee ? this._ee.listeners(event) : [];
  }

  rawListeners(event) {
    return this._ee ? this._ee.rawListeners(event) : [];
  }

  eventNames() {
    return this._ee ? this._ee.eventNames() : [];
  }

  setMaxListeners(n) {
    this._emitter().setMaxListeners(n);
    return this;
  }

  getMaxListeners() {
    return this._emitter().getMaxListeners();
  }

  /** A listener for `event` was added. */
  _listening(_event) {}

  _emit(event, ...args) {
    if (this._ee) this._ee.emit(event, ...args);
  }
}
Object.setPrototypeOf(Lazy.prototype, EventEmitter.prototype);

/** Emits a response's 'finish' then 'close', a tick after end() as Node's do (stream
 * helpers waiting for 'finish' start waiting after they call end()). */
function finished(res) {
  res._emit('finish');
  res._close();
}

/** The request: properties are read from myriad when first used. Ending the response
 * (end() or destroy()) or a client abort keeps url, headers and peer (and what was read)
 * for the object's life, so a 'finish' or 'close' listener (an access logger) still reads
 * them; env only if read before. */
class Request extends Lazy {
  constructor(h, method, path, flags) {
    super();
    this._h = h;
    this.method = method;
    this.path = path;
    this.protocol = flags & 2 ? 'fcgi' : 'http';
    this.aborted = false;
    this._url = undefined;
    this._query = undefined;
    this._params = undefined;
    this._cookies = undefined;
    this._headers = undefined;
    this._env = undefined;
    this._peer = undefined;
    this._tls = undefined;
    this._ac = undefined;
    // The body: chunks not yet consumed, then the end or the error.
    this._chunks = flags & 1 ? [] : null;
    this._ended = !(flags & 1);
    this._error = null;
    this._wake = null;
    this._reading = false;
    this._paused = false;
    this._resume = null;
  }

  /** The TLS facts of an HTTPS request: { version, cipher, sni, alpn } (e.g. 'TLSv1.3',
   * 'TLS_AES_128_GCM_SHA256', 'example.com', 'http/1.1'; sni and alpn may be undefined);
   * undefined over plain HTTP or FastCGI. */
  get tls() {
    if (this._tls === undefined) {
      const t = native.tls(this._h);
      this._tls = t ? { version: t[0], cipher: t[1], sni: t[2], alpn: t[3] } : null;
    }
    return this._tls ?? undefined;
  }

  /** The request target as sent: "/path?query". */
  get url() {
    return (this._url ??= native.target(this._h));
  }

  /** The raw query string without '?' ("" if none). */
  get rawQuery() {
    const u = this.url;
    if (u === undefined) return undefined;
    const i = u.indexOf('?');
    return i < 0 ? '' : u.slice(i + 1);
  }

  /** The query string parsed: { a: '1', b: ['x', 'y'] } (myriad's urlencoded rules, the
   * same as C's and Lua's: `+` is a space, a bad escape stays as it is, a name without `=`
   * has an empty value, a repeated name gives an array in order). */
  get query() {
    if (this._query === undefined) {
      const q = this.rawQuery;
      if (q !== undefined) this._query = groupPairs(native.urlencoded(q));
    }
    return this._query;
  }

  /** The route's path parameters, decoded: { id: '42' } (set by a Router). */
  get params() {
    if (this._params === undefined) {
      const flat = native.params(this._h);
      if (flat === undefined) return undefined;
      const p = Object.create(null);
      for (let i = 0; i < flat.length; i += 2) p[flat[i]] = flat[i + 1];
      this._params = p;
    }
    return this._params;
  }

  /** The Cookie header parsed: { name: 'value' } (the first of a repeated name; values as
   * sent, not decoded). */
  get cookies() {
    if (this._cookies === undefined) {
      const h = this.headers;
      if (h === undefined) return undefined;
      const c = Object.create(null);
      if (h.cookie !== undefined) {
        const flat = native.cookies(h.cookie);
        for (let i = 0; i < flat.length; i += 2) if (!(flat[i] in c)) c[flat[i]] = flat[i + 1];
      }
      this._cookies = c;
    }
    return this._cookies;
  }

  /** The body as a form (urlencoded or multipart/form-data), as it arrives: an async
   * iterator of parts `{ name, filename, contentType }`, each itself an async iterator of
   * its data Buffers (a file's bytes as they come: never held whole), with `text()` and
   * `buffer()`. A part not read is skipped. Errors have `.status`: 400 malformed, 413 a
   * limit (`limits`: { parts, headerBytes, fieldBytes, totalBytes }), 415 not a form. */
  form(limits = {}) {
    return readForm(this, limits);
  }

  /** Headers with lower-cased names; repeated ones joined with ", " ("; " for cookie),
   * set-cookie as an array — as Node's http does. */
  get headers() {
    if (this._headers === undefined) {
      const flat = native.headers(this._h);
      if (flat === undefined) return undefined;
      const h = {};
      for (let i = 0; i < flat.length; i += 2) {
        const k = flat[i];
        const v = flat[i + 1];
        const old = h[k];
        if (k === 'set-cookie') (old ? old : (h[k] = [])).push(v);
        else if (old === undefined) h[k] = v;
        else h[k] = old + (k === 'cookie' ? '; ' : ', ') + v;
      }
      this._headers = h;
    }
    return this._headers;
  }

  /** CGI variables: the FastCGI params, or derived from the HTTP request. */
  get env() {
    if (this._env === undefined) {
      const flat = native.env(this._h);
      if (flat === undefined) return undefined;
      const e = {};
      for (let i = 0; i < flat.length; i += 2) e[flat[i]] = flat[i + 1];
      this._env = e;
    }
    return this._env;
  }

  /** The client: "127.0.0.1:5678", "[::1]:5678" or "unix:". */
  get peer() {
    return (this._peer ??= native.peer(this._h));
  }

  /** Reads the fields an access log wants while the native handle is live. */
  _keep() {
    void this.url;
    void this.headers;
    void this.peer;
  }

  /** An AbortSignal aborted when the client goes away before the response ends. */
  get signal() {
    if (!this._ac) {
      this._ac = new AbortController();
      if (this.aborted) this._ac.abort(codeError('client went away', 'ECONNRESET'));
    }
    return this._ac.signal;
  }

  /** The whole body as one Buffer (bounded by the server's maxBody). */
  async body() {
    const parts = [];
    let n = 0;
    for await (const c of this) {
      parts.push(c);
      n += c.length;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, n);
  }

  /** The body as it arrives, one Buffer per piece. */
  async *[Symbol.asyncIterator]() {
    if (this._reading) throw codeError('the body is already being read', 'ERR_BODY_CONSUMED');
    this._reading = true;
    for (;;) {
      const chunks = this._chunks;
      if (chunks && chunks.length) {
        this._chunks = [];
        yield* chunks;
        continue;
      }
      if (this._error) throw this._error;
      if (this._ended) return;
      await new Promise((resolve) => {
        this._wake = resolve;
      });
    }
  }

  _wakeUp() {
    const w = this._wake;
    this._wake = null;
    if (w) w();
  }

  _listening(event) {
    // A 'data' listener reads the body as Node's request does: 'data' events, then 'end'.
    if (event === 'data' && !this._reading && !this._paused) this._flow();
  }

  /** Emits the body as 'data' events (held while paused), then 'end'; a body cut short
   * emits 'error' (code ECONNRESET) to its listeners, after 'aborted'. */
  async _flow() {
    try {
      for await (const c of this) {
        while (this._paused) await new Promise((resolve) => (this._resume = resolve));
        this._emit('data', c);
      }
      this._emit('end');
    } catch (err) {
      if (this.listenerCount('error') > 0) this._emit('error', err);
    }
  }

  /** Stops 'data' events until resume(). */
  pause() {
    this._paused = true;
    return this;
  }

  /** Resumes 'data' events; with no 'data' listener, reads the body and drops it. */
  resume() {
    this._paused = false;
    const r = this._resume;
    this._resume = null;
    if (r) r();
    else if (!this._reading) this._flow();
    return this;
  }

  /** Writes the body into `dest` (a writable stream; ended after, unless `end: false`),
   * paced by its 'drain'. Returns `dest`. */
  pipe(dest, options) {
    const r = Readable.from(this, { objectMode: false });
    // The request's own 'end' and 'error', for whoever watches it (pipeline() does).
    r.on('end', () => this._emit('end'));
    r.on('error', (err) => {
      if (this.listenerCount('error') > 0) this._emit('error', err);
    });
    return r.pipe(dest, options);
  }
}

function validateHeader(name, value) {
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    throw new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
  }
  for (const v of Array.isArray(value) ? value : [value]) {
    if (v === undefined) throw new TypeError(`Invalid value "undefined" for header "${name}"`);
    if (BAD_VALUE.test(String(v))) throw new TypeError(`Invalid character in header content ["${name}"]`);
  }
}

/** The response: the head (statusCode and headers) goes out with the first write() or
 * with end(). */
class Response extends Lazy {
  constructor(h, req) {
    super();
    this._h = h;
    this.req = req;
    this.statusCode = 200;
    this._fields = null; // lower-cased name -> [name, value]
    this.headersSent = false;
    this.writableEnded = false;
    this.destroyed = false;
    /** Whether end() handed the whole response to myriad (its 'finish' may be a tick away). */
    this.writableFinished = false;
    this._drainWanted = false;
    this._drainers = null;
    this._finishDue = false; // ended: 'finish' is to be emitted to whoever listens
    this._closed = false;
  }

  setHeader(name, value) {
    if (this.headersSent) throw codeError('Cannot set headers after they are sent to the client', 'ERR_HTTP_HEADERS_SENT');
    validateHeader(name, value);
    (this._fields ??= Object.create(null))[name.toLowerCase()] = [name, value];
    return this;
  }

  getHeader(name) {
    return this._fields?.[String(name).toLowerCase()]?.[1];
  }

  /** Adds a Set-Cookie header: `setCookie(name, value, { path, domain, maxAge, expires
   * (a Date or seconds since the epoch), secure, httpOnly, sameSite })`. Throws (with
   * .code MYRIAD_ECOOKIE) on an invalid name, value or attribute. */
  setCookie(name, value, options = {}) {
    const exp = options.expires instanceof Date ? Math.floor(options.expires.getTime() / 1000) : options.expires;
    const v = native.cookie(String(name), String(value), options.path, options.domain, options.sameSite,
      options.maxAge, exp, options.secure, options.httpOnly);
    const prev = this.getHeader('set-cookie');
    this.setHeader('Set-Cookie', prev === undefined ? [v] : [].concat(prev, v));
    return this;
  }

  hasHeader(name) {
    return this.getHeader(name) !== undefined;
  }

  removeHeader(name) {
    if (this.headersSent) throw codeError('Cannot remove headers after they are sent to the client', 'ERR_HTTP_HEADERS_SENT');
    if (this._fields) delete this._fields[String(name).toLowerCase()];
  }

  getHeaders() {
    const o = {};
    for (const k in this._fields) o[k] = this._fields[k][1];
    return o;
  }

  /** Sets the status and headers (an object or a flat [name, value, ...] array); they are
   * sent with the first write() or end(). */
  writeHead(status, headers) {
    if (this.headersSent) throw codeError('Cannot write headers after they are sent to the client', 'ERR_HTTP_HEADERS_SENT');
    if (typeof headers === 'string') headers = arguments[2]; // writeHead(status, message, headers)
    this.statusCode = status;
    if (Array.isArray(headers)) {
      for (let i = 0; i + 1 < headers.length; i += 2) this.setHeader(headers[i], headers[i + 1]);
    } else if (headers) {
      for (const k of Object.keys(headers)) this.setHeader(k, headers[k]);
    }
    return this;
  }

  _head() {
    const status = this.statusCode;
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw codeError(`Invalid status code: ${status}`, 'ERR_HTTP_INVALID_STATUS_CODE');
    }
    let flat;
    if (this._fields) {
      flat = [];
      for (const k in this._fields) {
        if (MANAGED.has(k)) continue;
        const [name, value] = this._fields[k];
        if (Array.isArray(value)) for (const v of value) flat.push(name, String(v));
        else flat.push(name, String(value));
      }
    }
    return flat;
  }

  /** Sends a piece of the body (string, Buffer, TypedArray, ArrayBuffer; a string in
   * `encoding`, utf8 by default). Returns false once 64 KiB wait to be sent or the client
   * is gone: wait for 'drain' (or `await res.drain()`) before writing more. `callback`
   * runs once the piece is handed to myriad, with an error if the client is gone. */
  write(chunk, encoding, callback) {
    if (typeof encoding === 'function') [encoding, callback] = [undefined, encoding];
    if (this.writableEnded) throw codeError('write after end', 'ERR_STREAM_WRITE_AFTER_END');
    const status = this.headersSent ? 0 : this.statusCode;
    const flat = this.headersSent ? undefined : this._head();
    const q = native.write(this._h, status, flat, encoded(chunk, encoding)); // throws for a bad chunk type
    this.headersSent = true;
    if (typeof callback === 'function') {
      process.nextTick(callback, q < 0 ? codeError('the client went away', 'ERR_STREAM_DESTROYED') : null);
    }
    if (q < 0) return false;
    if (q >= HIGH_WATER) {
      this._wantDrain();
      return false;
    }
    return true;
  }

  /** Whether write() may be called: not ended, not destroyed. */
  get writable() {
    return !this.writableEnded;
  }

  /** Whether write() returned false and 'drain' has not come yet. */
  get writableNeedDrain() {
    return this._drainWanted;
  }

  /** Sends the status and headers now (they otherwise go with the first write or end). */
  flushHeaders() {
    if (!this.headersSent && !this.writableEnded) this.write(undefined);
  }

  /** Ends the response, with a last piece of body if given (a string in `encoding`);
   * `callback` runs with 'finish', once it is handed to myriad: end(callback),
   * end(chunk, callback), end(chunk, encoding, callback). 'finish' and then 'close' are
   * emitted on the next tick. */
  end(chunk, encoding, callback) {
    if (typeof chunk === 'function') [chunk, encoding, callback] = [undefined, undefined, chunk];
    else if (typeof encoding === 'function') [encoding, callback] = [undefined, encoding];
    if (this.writableEnded) {
      if (typeof callback === 'function') process.nextTick(callback);
      return this;
    }
    const status = this.headersSent ? 0 : this.statusCode;
    const flat = this.headersSent ? undefined : this._head();
    const h = this._h;
    this.req._keep();
    native.end(h, status, flat, encoded(chunk, encoding)); // throws for a bad chunk type
    this.headersSent = true;
    this._release(h);
    if (this._closed) {
      // The client went away first: no 'finish'.
      if (typeof callback === 'function') process.nextTick(callback, codeError('the client went away', 'ERR_STREAM_DESTROYED'));
      return this;
    }
    this._finishDue = this.writableFinished = true;
    if (typeof callback === 'function') this.once('finish', callback);
    else if (this._ee) this._listening('finish');
    return this;
  }

  _listening(event) {
    // Someone waits for the end: emit it (once), unless the client went away first.
    if (this._finishDue && (event === 'finish' || event === 'close')) {
      this._finishDue = false;
      process.nextTick(finished, this);
    }
  }

  /** Emits 'close', once. */
  _close() {
    if (this._closed) return;
    this._closed = true;
    this._emit('close');
  }

  /** The native handle `h` was released (ended or abandoned): no more writes, and the
   * handle's slot no longer leads here. */
  _release(h) {
    this.writableEnded = true;
    if (live[h % SLOT_SPAN] === this) live[h % SLOT_SPAN] = undefined;
  }

  /** Sends the file at `path` (or `length` bytes of it from `offset`) as the whole body,
   * with the status and headers set so far, and ends the response: the bytes go from the
   * page cache to the socket by sendfile (over FastCGI, STDOUT records read a block at a
   * time). Returns 0, or a negative myriad code when the file cannot be sent (then the
   * answer is 404 for a missing file, 403 when unreadable, 416 for a range past its end,
   * 500 otherwise). */
  sendFile(file, { offset = 0, length = -1 } = {}) {
    if (this.writableEnded) return EGONE;
    if (typeof file !== 'string') throw codeError('sendFile: the path must be a string', 'ERR_INVALID_ARG_TYPE');
    const status = this.headersSent ? 0 : this.statusCode;
    const flat = this.headersSent ? undefined : this._head();
    const h = this._h;
    this.req._keep();
    const rc = native.sendFile(h, status, flat, file, offset, length);
    this._handedOver(h);
    return rc;
  }

  /** The response was answered whole by myriad (sendFile, Files.serve): ended, as by end(). */
  _handedOver(h) {
    this.headersSent = true;
    this._release(h);
    if (this._closed) return;
    this._finishDue = this.writableFinished = true;
    if (this._ee) this._listening('finish');
  }

  /** Abandons the response, for a handler that cannot complete it (as Node's
   * `res.destroy()`): what was written goes out, then the connection closes without
   * ending it, so the client sees it cut short (an HTTP/1.1 chunked body lacks its last
   * chunk; nothing at all if the head was not sent). Over FastCGI, see myriad_req_abort. */
  destroy() {
    if (this.writableEnded || this.destroyed) return this;
    const h = this._h;
    this.req._keep();
    native.abort(h);
    this.destroyed = true;
    this._release(h);
    this._drained();
    this._close();
    return this;
  }

  /** Accepts a WebSocket upgrade of this request (see lib/ws.js): answers 101 and returns
   * the WebSocket, or answers the refusal (400, 405, 426) and returns null. The response is
   * over either way. */
  websocket(options) {
    if (this.writableEnded || this.destroyed || this.headersSent) throw codeError('the response already started', 'ERR_HTTP_HEADERS_SENT');
    const h = this._h;
    this.req._keep();
    this._release(h);
    const sock = ws.accept(native, h, options); // the handle is released by the accept
    this.headersSent = this.writableFinished = true;
    this.statusCode = sock ? 101 : this.statusCode;
    process.nextTick(finished, this);
    return sock;
  }

  /** Bytes written and not yet sent to the client. */
  get writableLength() {
    return native.queued(this._h);
  }

  /** Resolves once everything written so far has been sent (at once if it has, or if the
   * response ended or the client went away). */
  drain() {
    if (this.writableEnded || this.req.aborted || native.queued(this._h) === 0) return Promise.resolve();
    return new Promise((resolve) => {
      (this._drainers ??= []).push(resolve);
      this._wantDrain();
    });
  }

  _drained() {
    const d = this._drainers;
    this._drainers = null;
    if (d) for (const resolve of d) resolve();
  }

  _wantDrain() {
    if (this._drainWanted) return;
    this._drainWanted = true;
    native.onDrain(this._h);
  }

  /** Sends a message to the front end's error log (FastCGI STDERR; over HTTP, myriad's log). */
  log(message) {
    native.log(this._h, String(message));
  }
}

// ---- query strings, forms, the router ----

/** [name, value, ...] -> { name: value | [values...] } */
function groupPairs(flat) {
  const o = Object.create(null);
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i];
    const old = o[k];
    if (old === undefined) o[k] = flat[i + 1];
    else if (Array.isArray(old)) old.push(flat[i + 1]);
    else o[k] = [old, flat[i + 1]];
  }
  return o;
}

/** Decodes an application/x-www-form-urlencoded string into [[name, value], ...]. */
function parseUrlencoded(str) {
  const flat = native.urlencoded(String(str));
  const out = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

/** A Set-Cookie header value (see Response.setCookie). */
function serializeCookie(name, value, options = {}) {
  const exp = options.expires instanceof Date ? Math.floor(options.expires.getTime() / 1000) : options.expires;
  return native.cookie(String(name), String(value), options.path, options.domain, options.sameSite,
    options.maxAge, exp, options.secure, options.httpOnly);
}

const F_PART = 1;
const F_DATA = 2;
const F_PART_END = 3;
const F_END = 4;

/** Pulls form events out of the request body, one body piece at a time. */
class FormEvents {
  constructor(req, f) {
    this._body = req[Symbol.asyncIterator]();
    this._f = f;
    this._q = [];
    this._i = 0;
    this._finished = false;
  }

  async next() {
    while (this._i >= this._q.length) {
      if (this._finished) return undefined;
      this._q = [];
      this._i = 0;
      const r = await this._body.next();
      if (r.done) {
        this._finished = true;
        this._q = native.formFinish(this._f);
      } else {
        this._q = native.formFeed(this._f, r.value);
      }
    }
    const kind = this._q[this._i++];
    if (kind === F_PART) {
      const e = { kind, name: this._q[this._i], filename: this._q[this._i + 1], contentType: this._q[this._i + 2] };
      this._i += 3;
      return e;
    }
    if (kind === F_DATA) return { kind, data: this._q[this._i++] };
    return { kind };
  }
}

/** One part of a form: its fields, and its data as an async iterator of Buffers. */
class Part {
  constructor(e, events) {
    this.name = e.name;
    this.filename = e.filename;
    this.contentType = e.contentType;
    this._events = events;
    this._done = false;
  }

  async *[Symbol.asyncIterator]() {
    while (!this._done) {
      const e = await this._events.next();
      if (e === undefined || e.kind === F_PART_END) this._done = true;
      else if (e.kind === F_DATA) yield e.data;
    }
  }

  /** The whole value as one Buffer (fields are bounded by the fieldBytes limit). */
  async buffer() {
    const parts = [];
    for await (const c of this) parts.push(c);
    return Buffer.concat(parts);
  }

  /** The whole value as a UTF-8 string. */
  async text() {
    return (await this.buffer()).toString('utf8');
  }

  async _skip() {
    for await (const _ of this); // eslint-disable-line no-unused-vars
  }
}

async function* readForm(req, limits) {
  const ct = req.headers?.['content-type'];
  if (ct === undefined) throw Object.assign(codeError('not a form: no Content-Type', 'MYRIAD_EMEDIATYPE'), { status: 415 });
  const f = native.formNew(ct, limits.parts, limits.headerBytes, limits.fieldBytes, limits.totalBytes);
  const events = new FormEvents(req, f);
  let part = null;
  for (;;) {
    if (part && !part._done) await part._skip();
    const e = await events.next();
    if (e === undefined || e.kind === F_END) return;
    if (e.kind === F_PART) {
      part = new Part(e, events);
      yield part;
    }
  }
}

const REASONS = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed' };

/** A router: `router.get('/users/:id', handler)` (post, put, delete, patch, head, options,
 * all of them through `route(method, pattern, handler)`), hooks run before every route
 * (`router.use(async (req, res) => {...})`: a hook that ends the response stops the
 * request there), and `createServer(router)`. Patterns: `:name` one segment, `*name` the
 * rest of the path; static > parameter > wildcard whatever the order; 404, 405 with
 * Allow, 400 for a bad escape in a parameter; HEAD served by GET. A bad or conflicting
 * pattern throws (.code MYRIAD_EPATTERN or MYRIAD_ECONFLICT). */
class Router {
  constructor() {
    this._r = native.routerNew();
    this._routes = [];
    this._hooks = [];
    this.handler = (req, res) => this.dispatch(req, res);
  }

  route(method, pattern, handler) {
    if (typeof handler !== 'function') throw new TypeError('route: a handler function is required');
    native.routerAdd(this._r, String(method), String(pattern), this._routes.length);
    this._routes.push(handler);
    return this;
  }

  use(hook) {
    if (typeof hook !== 'function') throw new TypeError('use: a hook function is required');
    this._hooks.push(hook);
    return this;
  }

  /** Serves one request: the hooks, then the route (or 404 / 405 / 400). */
  dispatch(req, res) {
    if (this._hooks.length) return this._withHooks(req, res, 0);
    return this._route(req, res);
  }

  async _withHooks(req, res, i) {
    for (; i < this._hooks.length; i++) {
      await this._hooks[i](req, res);
      if (res.writableEnded || res.destroyed) return;
    }
    return this._route(req, res);
  }

  _route(req, res) {
    const m = native.routerMatch(this._r, req._h);
    if (typeof m === 'number') return this._routes[m](req, res);
    const [status, allow] = m;
    if (allow !== undefined) res.setHeader('Allow', allow);
    res.statusCode = status;
    res.setHeader('Content-Type', 'text/plain');
    res.end(REASONS[status] ?? '');
    return undefined;
  }
}
for (const m of ['get', 'post', 'put', 'delete', 'patch', 'head', 'options']) {
  Router.prototype[m] = function (pattern, handler) {
    return this.route(m.toUpperCase(), pattern, handler);
  };
}

/** A new Router. */
function router() {
  return new Router();
}

function report(server, err, req) {
  if (server.listenerCount('error') > 0) server.emit('error', err, req);
  else console.error('myriad: request handler failed:', err);
}

/** A Connect-style handler `(req, res, next)`: `next(err)` answers 500 (the error goes to
 * 'error'), `next()` with nothing sent answers 404, as Connect's final handler does. */
function connectStyle(fn) {
  const wrapped = function (req, res) {
    const next = (err) => {
      if (err) return failed(this, req, res, err);
      if (!res.headersSent && !res.writableEnded) {
        res.statusCode = 404;
        res.setHeader('Content-Type', 'text/plain');
        res.end(`Cannot ${req.method} ${req.path}`);
      }
    };
    return fn.call(this, req, res, next);
  };
  return wrapped;
}

function failed(server, req, res, err) {
  report(server, err, req);
  if (res.writableEnded) return;
  if (!res.headersSent) {
    res._fields = null;
    res.statusCode = 500;
    res.setHeader('Content-Type', 'text/plain');
    res.end('Internal Server Error');
  } else {
    res.destroy(); // the head is out: cut the body short, never pass it off as whole
  }
}

// ---- events from the addon ----

function dispatch(sid, h, method, path, flags) {
  const server = servers.get(sid);
  if (server === undefined) {
    native.end(h, 503, undefined, undefined);
    return;
  }
  const req = new Request(h, method, path, flags);
  const res = new Response(h, req);
  live[h % SLOT_SPAN] = res;
  let r;
  try {
    r = server._handler(req, res);
  } catch (e) {
    failed(server, req, res, e);
    return;
  }
  if (r !== undefined && r !== null && typeof r.then === 'function') {
    r.then(undefined, (e) => failed(server, req, res, e));
  }
}

function responseOf(h) {
  const res = live[h % SLOT_SPAN];
  return res !== undefined && res._h === h ? res : undefined;
}

function onBody(h, buf, event) {
  const res = responseOf(h);
  if (!res) return;
  const req = res.req;
  if (event === BODY_DATA) req._chunks.push(buf);
  else if (event === BODY_END) req._ended = true;
  else req._error ??= codeError('the request body was cut short (client gone or over maxBody)', 'ECONNRESET');
  req._wakeUp();
}

function onAbort(h) {
  const res = responseOf(h);
  if (!res) return;
  const req = res.req;
  req._keep(); // (the handle is live until this returns)
  live[h % SLOT_SPAN] = undefined;
  req.aborted = true;
  req._error ??= codeError('client went away', 'ECONNRESET');
  req._wakeUp();
  req._ac?.abort(req._error);
  req._emit('aborted');
  res._drained();
  res._finishDue = false; // not finished: cut short
  res._close();
}

function onDrain(h) {
  const res = responseOf(h);
  if (!res) return;
  res._drainWanted = false;
  res._drained();
  res._emit('drain');
}

function onClosed(id) {
  const server = servers.get(id);
  servers.delete(id);
  if (!server) return;
  server._listening = false;
  const done = server._closing;
  server._closing = null;
  server._addresses = [];
  if (done) done.resolve();
  server.emit('close');
}

native.init(dispatch, onBody, onAbort, onDrain, onClosed);

// ---- servers ----

const asList = (v, what) => {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const a of list) if (typeof a !== 'string') throw new TypeError(`${what} addresses must be strings`);
  return list;
};

const pem = (v, what) => {
  if (typeof v === 'string') return Buffer.from(v);
  if (Buffer.isBuffer(v)) return v;
  if (ArrayBuffer.isView(v)) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new TypeError(`${what} must be a PEM string or Buffer`);
};

/** [cert, key, certName, keyName, ...] for the native side, from `{ key, cert }` (each a PEM
 * string or Buffer, or arrays of them in pairs, as Node's https takes them) and/or
 * `tls: [{ key, cert, keyName?, certName? }, ...]` (the SNI list: the first is the default).
 * keyName/certName (e.g. file names) are what error messages call them. */
function tlsPems(o) {
  const pairs = [];
  if (o.cert !== undefined || o.key !== undefined) {
    const certs = Array.isArray(o.cert) ? o.cert : [o.cert];
    const keys = Array.isArray(o.key) ? o.key : [o.key];
    if (certs.length !== keys.length) throw codeError('https: as many keys as certificates', 'ERR_INVALID_ARG_VALUE');
    certs.forEach((c, i) => pairs.push({ cert: c, key: keys[i] }));
  }
  if (o.tls !== undefined) {
    if (!Array.isArray(o.tls)) throw new TypeError('tls must be an array of { key, cert }');
    pairs.push(...o.tls);
  }
  if (!pairs.length) throw codeError('https needs a certificate and its key (cert, key)', 'ERR_INVALID_ARG_VALUE');
  const flat = [];
  pairs.forEach((p, i) => {
    if (!p || typeof p !== 'object') throw new TypeError('tls entries must be { key, cert }');
    flat.push(pem(p.cert, 'cert'), pem(p.key, 'key'), String(p.certName ?? `cert[${i}]`), String(p.keyName ?? `key[${i}]`));
  });
  return flat;
}

class Server extends EventEmitter {
  constructor(options, handler) {
    super();
    if (typeof options === 'function' || options instanceof Router) [options, handler] = [handler, options];
    if (handler instanceof Router) handler = handler.handler;
    if (typeof handler !== 'function') throw new TypeError('createServer: a handler function is required');
    if (typeof handler.handle === 'function' && typeof handler.use === 'function') {
      // An Express or Connect app: it swaps the request's and response's prototypes for its
      // own (built on http.IncomingMessage / ServerResponse), which myriad's are not.
      throw codeError(
        'createServer: an Express/Connect app (app.handle/app.use) needs Node\'s own http.IncomingMessage and ' +
          'ServerResponse, which myriad\'s request and response are not: serve it with http.createServer(app), or ' +
          'call plain (req, res, next) middleware from a myriad handler',
        'ERR_MYRIAD_EXPRESS_APP',
      );
    }
    if (handler.length === 3) handler = connectStyle(handler);
    this._handler = handler;
    this._options = { ...options };
    this._id = 0;
    this._listening = false;
    this._closing = null;
    this._addresses = [];
  }

  get listening() {
    return this._listening;
  }

  /** Binds the listeners and starts serving. `what`: { http: ADDR | ADDR[], fcgi: ADDR |
   * ADDR[], inherited: true, ...limits } or one HTTP address. ADDR is HOST:PORT, [V6]:PORT,
   * unix:PATH or fd:N (port 0 picks a free port). `inherited` adds the listeners of socket
   * activation (systemd's LISTEN_FDS: an fd named "fcgi" serves FastCGI, others HTTP; they
   * read "fd:3"...). Resolves to the bound addresses. */
  async listen(what) {
    if (this._listening || this._closing) throw codeError('already listening', 'ERR_SERVER_ALREADY_LISTEN');
    const o = typeof what === 'string' ? { http: what } : { ...this._options, ...what };
    if (o.threads !== undefined && o.threads !== 1) {
      throw codeError('threads: a Node.js thread runs one loop (use worker_threads or more processes)', 'ERR_INVALID_ARG_VALUE');
    }
    let http = asList(o.http, 'http');
    let fcgi = asList(o.fcgi, 'fcgi');
    let https = asList(o.https, 'https');
    const inherited = o.inherited === true;
    if (inherited && !http.length && !fcgi.length && !https.length && native.listenFds() === 0) {
      throw codeError('listen: not socket-activated (no LISTEN_FDS for this process)', 'ERR_INVALID_ARG_VALUE');
    }
    if (!http.length && !fcgi.length && !https.length && !inherited) {
      throw codeError('listen: no http, https or fcgi address', 'ERR_INVALID_ARG_VALUE');
    }
    if (cluster.isWorker) [http, fcgi, https] = [http.map(clusterAddr), fcgi.map(clusterAddr), https.map(clusterAddr)];
    const limits = { inherited };
    for (const k of LIMITS) if (o[k] !== undefined) limits[k] = o[k];
    for (const k of ['accessLog', 'accessLogFormat']) if (o[k] !== undefined) limits[k] = o[k];
    const pems = https.length ? tlsPems(o) : [];
    const id = nextId++;
    try {
      // Throws on a bad address, limit or certificate, or bind errors.
      native.listen(id, http, fcgi, limits, https, pems);
    } catch (e) {
      throw listenError(e);
    }
    this._id = id;
    this._listening = true;
    servers.set(id, this);
    const flat = native.addresses(id);
    this._addresses = [];
    for (let i = 0; i < flat.length; i += 2) this._addresses.push({ proto: flat[i], addr: flat[i + 1] });
    this.emit('listening');
    return this.addresses();
  }

  /** Opens the access log's file again (after logrotate moved it; call it on SIGUSR1).
   * Throws if it cannot be opened (the old file stays in use). */
  reopenAccessLog() {
    if (this._listening) native.reopenAccessLog(this._id);
  }

  /** Replaces the HTTPS certificates for new connections (as Node's
   * server.setSecureContext): `{ key, cert }` or `{ tls: [{ key, cert }, ...] }`. Throws
   * (and changes nothing) if they are unusable. */
  setSecureContext(options) {
    if (!this._listening) throw codeError('not listening', 'ERR_SERVER_NOT_RUNNING');
    native.reloadTls(this._id, tlsPems(options || {}));
  }

  /** The bound addresses: [{ proto: 'http' | 'https' | 'fcgi', addr: '127.0.0.1:40123' }]. */
  addresses() {
    return this._addresses.map((a) => ({ ...a }));
  }

  /** Stops accepting, lets in-flight requests finish (up to drainTimeout), closes idle
   * connections. Resolves once drained; Node may then exit by itself. */
  close() {
    if (this._closing) return this._closing.promise;
    if (!this._listening) return Promise.reject(codeError('not listening', 'ERR_SERVER_NOT_RUNNING'));
    let resolve;
    const promise = new Promise((r) => {
      resolve = r;
    });
    this._closing = { promise, resolve };
    native.close(this._id);
    return promise;
  }
}

const ERRNO_NAMES = new Map(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

/** A listen failure in Node's shape: an OS error gets Node's code ('EADDRINUSE'), errno
 * (-98), syscall ('listen') and the address (and port) of the listener that failed, as
 * net.Server's 'error' has them; the message keeps the library's detail. Other errors
 * (bad address syntax: MYRIAD_EADDR) keep their code and get the detail as message. */
function listenError(e) {
  if (typeof e.errno !== 'number' || e.errno > -1000) return e;
  const sys = -1000 - e.errno;
  const code = ERRNO_NAMES.get(sys) || 'EUNKNOWN';
  const err = new Error(`listen ${code}: ${e.detail || e.message}`);
  err.code = code;
  err.errno = -sys;
  err.syscall = 'listen';
  const m = /^(?:https?|fcgi) listener (\S+): /.exec(e.detail || '');
  if (m) {
    const a = m[1];
    const t = /^\[(.*)\]:(\d+)$/.exec(a) || /^([^:]*):(\d+)$/.exec(a);
    if (a.startsWith('unix:')) err.address = a.slice(5);
    else if (t) {
      err.address = t[1];
      err.port = Number(t[2]);
    } else err.address = a;
  }
  return err;
}

/** In a `cluster` worker: Node's cluster shares a listener through its primary, which
 * myriad's listeners do not use; instead every worker binds the TCP port itself with
 * SO_REUSEPORT (`?reuseport`, added here), and the kernel spreads connections over them. A
 * Unix socket path cannot be bound by several processes: refused with what to use. */
function clusterAddr(a) {
  if (typeof a !== 'string' || a.startsWith('fd:')) return a;
  if (a.startsWith('unix:')) {
    throw codeError(
      `listen: ${a} in a cluster worker: several processes cannot bind one Unix socket path; give each worker its ` +
        "own path, use a TCP address (shared with ?reuseport), or myriad's supervisor (exec mode, see the README)",
      'ERR_MYRIAD_CLUSTER',
    );
  }
  if (/[?&]reuseport/.test(a)) return a;
  return a + (a.includes('?') ? '&' : '?') + 'reuseport';
}

/**
 * The static file handler (myriad_files_*): serves the files under `root` as nginx's
 * static module would — GET and HEAD, conditionals (304/412), ranges (206, multipart,
 * 416), directories (index.html, 301 to the slash form, 403), precompressed .br/.gz
 * siblings, traversal refused (400/403/404), 405 with Allow for other methods.
 * Options: index ('index.html'; null or '' for none), precompressed (true), cacheControl
 * (a Cache-Control value, none by default), cacheEntries (1024, the open-file cache's
 * size; 0 for none), cacheValidMs (1000). Throws (code MYRIAD_EFILES_ROOT) when root is
 * not a directory that can be opened.
 */
class Files {
  constructor(root, options = {}) {
    if (typeof root !== 'string') throw codeError('files: root must be a string', 'ERR_INVALID_ARG_TYPE');
    const o = options || {};
    const index = o.index === undefined ? null : o.index || '';
    this._f = native.filesNew(root, index, o.precompressed !== false, o.cacheControl ?? null,
      o.cacheEntries ?? 1024, o.cacheValidMs ?? 1000);
  }

  /** Answers `req` with the file at `path` below the root and ends `res`: `path` is the
   * request path below the mount point as sent, still percent-encoded (for a route
   * '/static/*path', `req.path.slice('/static/'.length)`; decoded and checked once here).
   * Returns 0 or a negative myriad code. */
  serve(req, res, path) {
    if (res.writableEnded) return EGONE;
    if (typeof path !== 'string') throw codeError('files.serve: path must be a string', 'ERR_INVALID_ARG_TYPE');
    const h = res._h;
    req._keep();
    const rc = native.filesServe(this._f, h, path);
    res._handedOver(h);
    return rc;
  }
}

/** `new Files(root, options)`. */
function files(root, options) {
  return new Files(root, options);
}

/** Creates a server: `createServer([options,] handler)`; options are limits (maxBody,
 * maxHead, headerTimeout, bodyTimeout, idleTimeout, writeTimeout, drainTimeout, maxParams)
 * and the access log (accessLog: a path or '-' for stderr; accessLogFormat: an nginx
 * log_format-like string, the combined format by default), also accepted by listen(). */
function createServer(options, handler) {
  return new Server(options, handler);
}

/** Loop counters: { requests (live handles), servers, iterations, wait, ctl, read,
 * received, write, accept, other, wakeups, accepted } (myriad_stats_t). */
function stats() {
  return native.stats();
}

/** The number of listening fds socket activation passed to this process (systemd's
 * LISTEN_FDS, when LISTEN_PID is this process), without taking them; 0 when not
 * socket-activated. Throws (code MYRIAD_EINVAL) on malformed variables. */
function listenFds() {
  return native.listenFds();
}

/** sd_notify: sends `state` ('READY=1', 'STOPPING=1', 'STATUS=...', 'WATCHDOG=1', several
 * lines at once) to the service manager's NOTIFY_SOCKET in one datagram, never blocking.
 * Returns true when sent, false when NOTIFY_SOCKET is unset. Throws on a send error. */
function notify(state) {
  if (typeof state !== 'string') throw codeError('notify: state must be a string', 'ERR_INVALID_ARG_TYPE');
  return native.notify(state);
}

/** When the service manager asks for a watchdog (WATCHDOG_USEC) and listens: sends
 * WATCHDOG=1 now and every half timeout from myriad's loop timers. Returns true if armed,
 * false if no watchdog is asked for. */
function watchdog() {
  return native.watchdog();
}

/**
 * Runs a supervisor of worker processes in exec mode (Node does not fork): binds the
 * listeners once, calls onListening(proto, addr) for each, then runs `workers` copies of the
 * command `exec` (each gets the listeners as LISTEN_FDS, LISTEN_FDNAMES http/fcgi; a myriad
 * server there listens on 'fd:3'...) and supervises them: respawn, maxRequests recycling,
 * watchdog (seconds), SIGHUP rolling reload (onReload() first), SIGUSR2 re-exec in place,
 * SIGTERM drain. Blocks this thread until the pool has stopped; returns the exit code.
 * Throws on a bad option, an unknown user or a listener that cannot be bound.
 */
function supervise(opts) {
  if (!opts || typeof opts !== 'object') throw new TypeError('supervise: options object required');
  return native.supervise(opts);
}

/** Publishes a WebSocket message to every subscriber of `topic` in this process (this
 * process's loop: a cluster worker reaches its own subscribers only). */
function publish(topic, data, options) {
  return ws.publish(native, topic, data, options);
}

module.exports = {
  createServer, Server, Request, Response, Router, Part, router, parseUrlencoded, serializeCookie, stats,
  listenFds, notify, watchdog, supervise, Files, files, WebSocket: ws.WebSocket, publish, version: native.version,
};
