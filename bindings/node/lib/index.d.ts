// TypeScript declarations for myriad's Node.js binding (lib/index.js).
/// <reference types="node" />
import { EventEmitter } from 'node:events';

/** A listener address: HOST:PORT, [V6]:PORT, unix:PATH or fd:N (port 0 picks a free port). */
export type Address = string;

/** Limits and timeouts (milliseconds), as myriad_server_set_limit takes them. */
export interface Limits {
  /** Largest request body in bytes (default 1 MiB): over it the client gets 413. */
  maxBody?: number;
  /** Largest request head in bytes: over it the client gets 431. */
  maxHead?: number;
  headerTimeout?: number;
  bodyTimeout?: number;
  idleTimeout?: number;
  writeTimeout?: number;
  /** How long close() waits for in-flight requests. */
  drainTimeout?: number;
  /** Most FastCGI params per request. */
  maxParams?: number;
  /** Milliseconds a handler may take to start its response, then between two pieces of it
   * (default 60000; 0: no limit): then 504, or the response is cut short if it started. */
  responseTimeout?: number;
  /** Most FastCGI requests open at once on one connection (default 64). */
  fcgiMaxRequests?: number;
  /** Access log: a file path (appended to), or '-' for stderr. One line per finished
   * request, buffered (written at least once a second); see reopenAccessLog(). */
  accessLog?: string;
  /** An nginx log_format-like string ($remote_addr, $time_local, $request, $status,
   * $body_bytes_sent, $http_NAME, $request_time, $protocol...); the combined format by
   * default. */
  accessLogFormat?: string;
}

/** PEM text or bytes, as Node's https.createServer takes them. */
export type Pem = string | Buffer | ArrayBufferView;

/** One certificate chain and its private key (PEM: PKCS#8, RSA or SEC1 EC). */
export interface TlsPair {
  cert: Pem;
  key: Pem;
  /** What error messages call the certificate and the key (e.g. their file names). */
  certName?: string;
  keyName?: string;
}

/** The HTTPS certificates: `cert`/`key` (one each, or arrays in pairs) and/or `tls` (a
 * list for SNI); the first is the default, the others are chosen by SNI against their
 * certificates' DNS names. */
export interface SecureOptions {
  cert?: Pem | Pem[];
  key?: Pem | Pem[];
  tls?: TlsPair[];
}

export interface ListenOptions extends Limits, SecureOptions {
  http?: Address | Address[];
  fcgi?: Address | Address[];
  /** Also serve the listeners of socket activation (systemd's LISTEN_FDS for this process:
   * an fd named "fcgi" serves FastCGI, the others HTTP; their addresses read "fd:3"...). */
  inherited?: boolean;
  /** HTTPS listeners (HTTP/1.1 over TLS 1.2/1.3, ALPN http/1.1), with the certificates of
   * `cert`/`key`/`tls`. */
  https?: Address | Address[];
  /** Must be 1 (or absent): a Node.js thread runs one loop; use worker_threads for more. */
  threads?: 1;
}

export interface BoundAddress {
  proto: 'http' | 'https' | 'fcgi';
  addr: string;
}

export type Chunk = string | Buffer | ArrayBufferView | ArrayBuffer;

/** The request. Properties other than method, path and protocol are read from myriad on
 * first use: read what you need before ending the response (afterwards, unread ones are
 * undefined). */
export declare class Request extends EventEmitter implements AsyncIterable<Buffer> {
  readonly method: string;
  /** The path part of the target, as sent ("/a%20b"). */
  readonly path: string;
  readonly protocol: 'http' | 'fcgi';
  /** The TLS facts of an HTTPS request; undefined over plain HTTP or FastCGI. */
  readonly tls:
    | { version: 'TLSv1.2' | 'TLSv1.3'; cipher: string; sni: string | undefined; alpn: string | undefined }
    | undefined;
  /** True once the client went away before the response ended. */
  readonly aborted: boolean;
  /** The request target as sent: "/path?query". */
  readonly url: string;
  /** The query string without '?' ("" if none). */
  readonly rawQuery: string;
  /** The query parsed by myriad's urlencoded rules (as in C and Lua): `+` a space, a bad
   * escape kept as it is, a name without `=` an empty value, repeated names an array. */
  readonly query: Record<string, string | string[]>;
  /** The route's path parameters, percent-decoded (set by a Router; {} otherwise). */
  readonly params: Record<string, string>;
  /** The Cookie header parsed (the first of a repeated name; values not decoded). */
  readonly cookies: Record<string, string>;
  /** The body as a form (urlencoded or multipart/form-data) as it arrives: parts in
   * order, each an async iterator of its data (a part not read is skipped). Throws a
   * FormError: status 400 malformed, 413 over a limit, 415 not a form. */
  form(limits?: FormLimits): AsyncIterable<Part>;
  /** Lower-cased names; repeated headers joined with ", " ("; " for cookie), set-cookie
   * as an array. */
  readonly headers: Record<string, string | string[] | undefined>;
  /** CGI variables: the FastCGI params, or derived from the HTTP request. */
  readonly env: Record<string, string>;
  /** The client: "127.0.0.1:5678", "[::1]:5678" or "unix:". */
  readonly peer: string;
  /** Aborted when the client goes away before the response ends. */
  readonly signal: AbortSignal;
  /** The whole body (bounded by maxBody). Rejects (code ECONNRESET) if it is cut short. */
  body(): Promise<Buffer>;
  /** The body piece by piece as it arrives. Throws (code ECONNRESET) if it is cut short. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer>;
  /** Stops 'data' events until resume(). */
  pause(): this;
  /** Resumes 'data' events; with no 'data' listener, reads the body and drops it. */
  resume(): this;
  /** Writes the body into `dest` (ended after, unless `end: false`), paced by its 'drain'. */
  pipe<T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T;
  /** A 'data' listener reads the body as Node's request does: 'data', then 'end' (or
   * 'error', code ECONNRESET, after 'aborted' if it is cut short). */
  on(event: 'data', listener: (chunk: Buffer) => void): this;
  on(event: 'end', listener: () => void): this;
  on(event: 'error', listener: (err: Error) => void): this;
  on(event: 'aborted', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'aborted', listener: () => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: 'aborted', listener: () => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** The response: the head goes out with the first write() or with end(). A writable
 * stream for Node's stream helpers: `readable.pipe(res)`, `pipeline(source, res, cb)`
 * (a source that fails cuts the response short, as destroy() does). */
export declare class Response extends EventEmitter implements NodeJS.WritableStream {
  readonly req: Request;
  statusCode: number;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  /** Whether end() handed the whole response to myriad ('finish' comes a tick later). */
  readonly writableFinished: boolean;
  /** Whether write() may be called: not ended, not destroyed. */
  readonly writable: boolean;
  /** Whether write() returned false and 'drain' has not come yet. */
  readonly writableNeedDrain: boolean;
  /** Bytes written and not yet sent to the client. */
  readonly writableLength: number;
  /** Content-Length, Transfer-Encoding, Connection and Date are managed by myriad and
   * ignored here. Throws a TypeError for an invalid name or value. */
  setHeader(name: string, value: string | number | ReadonlyArray<string | number>): this;
  /** Adds a Set-Cookie header; throws (code MYRIAD_ECOOKIE) on an invalid name, value or
   * attribute. */
  setCookie(name: string, value: string, options?: CookieOptions): this;
  getHeader(name: string): string | number | ReadonlyArray<string | number> | undefined;
  hasHeader(name: string): boolean;
  removeHeader(name: string): void;
  getHeaders(): Record<string, string | number | ReadonlyArray<string | number>>;
  writeHead(status: number, headers?: Record<string, string | number | ReadonlyArray<string | number>> | string[]): this;
  writeHead(status: number, message: string, headers?: Record<string, string | number | ReadonlyArray<string | number>> | string[]): this;
  /** Sends a piece of the body (a string in `encoding`, utf8 by default). False once
   * 64 KiB wait to be sent or the client is gone: wait for 'drain' (or
   * `await res.drain()`) before writing more. `callback` runs once the piece is handed to
   * myriad, with an error (code ERR_STREAM_DESTROYED) if the client is gone. */
  write(chunk: Chunk, callback?: (err?: Error | null) => void): boolean;
  write(chunk: string, encoding?: BufferEncoding, callback?: (err?: Error | null) => void): boolean;
  /** Sends the status and headers now (they otherwise go with the first write or end). */
  flushHeaders(): void;
  /** Sends the file at `path` (or `length` bytes of it from `offset`) as the whole body
   * with the status and headers set so far, and ends the response (by sendfile: no byte
   * through user space). Returns 0, or a negative myriad code when it cannot (the answer
   * is then 404 for a missing file, 403 unreadable, 416 past its end, 500 otherwise). */
  sendFile(path: string, range?: { offset?: number; length?: number }): number;
  /** Abandons the response: what was written goes out, then the connection closes
   * without ending it (the client sees it cut short). */
  destroy(): this;
  /** Whether destroy() was called. */
  readonly destroyed: boolean;
  /** Ends the response, with a last piece of body if given (a string in `encoding`);
   * `callback` runs with 'finish', a tick later ('close' follows). A second call does
   * nothing. */
  end(callback?: () => void): this;
  end(chunk: Chunk, callback?: () => void): this;
  end(chunk: string, encoding?: BufferEncoding, callback?: () => void): this;
  /** Resolves once everything written so far has been sent, or the client is gone. */
  drain(): Promise<void>;
  /** A message for the front end's error log (FastCGI STDERR; over HTTP, myriad's log). */
  log(message: string): void;
  /** Accepts a WebSocket upgrade of this request: answers 101 and returns the socket, or
   * answers the refusal (400, 405, 426) and returns null. The response is over either way.
   * Throws if the response already started. */
  websocket(options?: WebSocketOptions): WebSocket | null;
  on(event: 'drain' | 'close' | 'finish', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'drain' | 'close' | 'finish', listener: () => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: 'drain' | 'close' | 'finish', listener: () => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** A request handler; a Connect-style one also gets `next`: `next(err)` answers 500 (and
 * reports `err`), `next()` with nothing sent answers 404. (Express/Connect apps are refused:
 * ERR_MYRIAD_EXPRESS_APP.) */
export type Handler = (req: Request, res: Response, next: (err?: unknown) => void) => void | Promise<void>;

/** Options of a Set-Cookie header. */
export interface CookieOptions {
  path?: string;
  domain?: string;
  /** Seconds (0 or less: expire now). */
  maxAge?: number;
  /** A Date, or seconds since the Unix epoch. */
  expires?: Date | number;
  secure?: boolean;
  httpOnly?: boolean;
  /** 'None' needs secure: true. */
  sameSite?: 'Strict' | 'Lax' | 'None';
}

/** Limits on one form body (413 beyond). */
export interface FormLimits {
  /** Most parts (default 1000). */
  parts?: number;
  /** Largest header block of one multipart part (default 8 KiB). */
  headerBytes?: number;
  /** Largest non-file field (default 1 MiB). */
  fieldBytes?: number;
  /** Largest body (default: no limit beyond maxBody). */
  totalBytes?: number;
}

/** An error of a form body, a route or a cookie. */
export interface FormError extends Error {
  code: string;
  errno: number;
  /** The HTTP status that answers it (400, 413, 415). */
  status: number;
}

/** One part of a form: a field, or a file when it has a filename. */
export declare class Part implements AsyncIterable<Buffer> {
  readonly name: string;
  /** The filename as the client gave it (never a safe path); undefined for a field. */
  readonly filename: string | undefined;
  readonly contentType: string | undefined;
  /** The value as it arrives. */
  [Symbol.asyncIterator](): AsyncIterator<Buffer>;
  buffer(): Promise<Buffer>;
  text(): Promise<string>;
}

/** Routes method + pattern ('/users/:id', '/static/*path') to handlers; hooks run first
 * (a hook that ends the response stops the request). Throws on a malformed pattern (code
 * MYRIAD_EPATTERN) or a conflicting one (MYRIAD_ECONFLICT). */
export declare class Router {
  constructor();
  route(method: string, pattern: string, handler: Handler): this;
  get(pattern: string, handler: Handler): this;
  post(pattern: string, handler: Handler): this;
  put(pattern: string, handler: Handler): this;
  delete(pattern: string, handler: Handler): this;
  patch(pattern: string, handler: Handler): this;
  head(pattern: string, handler: Handler): this;
  options(pattern: string, handler: Handler): this;
  use(hook: Handler): this;
  /** Serves one request: hooks, then the route, or 404 / 405 (Allow) / 400. */
  dispatch(req: Request, res: Response): void | Promise<void>;
  /** dispatch bound to this router, for createServer. */
  readonly handler: Handler;
}

/** A new Router. */
export declare function router(): Router;

/** Options of the static file handler (nginx's defaults). */
export interface FilesOptions {
  /** The file served for a directory asked for with a slash ('index.html'; null or '' for none: 403). */
  index?: string | null;
  /** Serve NAME.br / NAME.gz to clients that accept them, with Vary: Accept-Encoding (true). */
  precompressed?: boolean;
  /** A Cache-Control value for every file response (none by default). */
  cacheControl?: string | null;
  /** Paths kept in the open-file cache (1024; 0 for none). */
  cacheEntries?: number;
  /** How long a cached lookup is trusted, in ms (1000). */
  cacheValidMs?: number;
}

/** The static file handler: the files under a root as nginx's static module serves them
 * (conditionals, ranges, directories, precompressed siblings, traversal refused). */
export declare class Files {
  /** Throws (code MYRIAD_EFILES_ROOT) if `root` is not a directory that can be opened. */
  constructor(root: string, options?: FilesOptions);
  /** Answers `req` with the file at `path` below the root (the request path below the
   * mount point as sent, percent-encoded) and ends `res`. Returns 0 or a negative code. */
  serve(req: Request, res: Response, path: string): number;
}

/** `new Files(root, options)`. */
export declare function files(root: string, options?: FilesOptions): Files;
/** Decodes application/x-www-form-urlencoded text into [name, value] pairs in order. */
export declare function parseUrlencoded(text: string): Array<[string, string]>;
/** A Set-Cookie header value; throws (code MYRIAD_ECOOKIE) on invalid input. */
export declare function serializeCookie(name: string, value: string, options?: CookieOptions): string;

export declare class Server extends EventEmitter {
  readonly listening: boolean;
  /** Binds every listener and starts serving; resolves to the bound addresses. Rejects
   * with code MYRIAD_EADDR (bad address), MYRIAD_EINVAL (bad limit), MYRIAD_EOS (bind
   * failed: the message says why), ERR_SERVER_ALREADY_LISTEN. */
  listen(what: ListenOptions | Address): Promise<BoundAddress[]>;
  /** Replaces the HTTPS certificates for new connections (open ones keep theirs). Throws
   * code MYRIAD_ETLS, naming the bad certificate or key, and changes nothing, if they are
   * unusable. */
  setSecureContext(options: SecureOptions): void;
  addresses(): BoundAddress[];
  /** Opens the access log's file again (after logrotate moved it; call it on SIGUSR1).
   * Throws if it cannot be opened (the old file stays in use). */
  reopenAccessLog(): void;
  /** Stops accepting, closes idle connections, lets in-flight requests finish (up to
   * drainTimeout). Resolves once drained; Node may then exit by itself. */
  close(): Promise<void>;
  /** A handler threw or rejected (the client got a 500). Without a listener the error goes
   * to stderr. */
  on(event: 'error', listener: (err: unknown, req: Request) => void): this;
  on(event: 'listening' | 'close', listener: () => void): this;
}

export declare function createServer(handler: Handler | Router): Server;
export declare function createServer(options: Limits, handler: Handler | Router): Server;

export interface Stats {
  /** Live request handles (not yet ended or aborted). */
  requests: number;
  /** Servers listening or draining. */
  servers: number;
  /** Loop iterations. */
  iterations: number;
  /** Backend waits (epoll_wait, io_uring_enter, kevent). */
  wait: number;
  /** Interest changes made by syscall (epoll_ctl). */
  ctl: number;
  /** Reads. */
  read: number;
  /** Connection input the backend received itself (io_uring completions, no syscall). */
  received: number;
  /** Writes. */
  write: number;
  /** accept4 calls (or, accepting through io_uring, a getpeername per TCP connection). */
  accept: number;
  /** Other syscalls (close, shutdown, signalfd...). */
  other: number;
  /** Eventfd writes by cross-thread posts. */
  wakeups: number;
  /** Connections accepted. */
  accepted: number;
}

/** This thread's loop counters. */
export declare function stats(): Stats;

/** How many listening fds socket activation passed to this process (not taken); 0 when
 * not socket-activated. Throws on malformed LISTEN_* variables. */
export declare function listenFds(): number;

/** sd_notify: sends `state` ("READY=1", "STOPPING=1", "STATUS=...", "WATCHDOG=1", or
 * several lines) to NOTIFY_SOCKET, never blocking. True when sent, false when
 * NOTIFY_SOCKET is unset; throws on a send error. */
export declare function notify(state: string): boolean;

/** Arms WATCHDOG=1 pings every half WATCHDOG_USEC from the loop's timers; false when no
 * watchdog is asked for. */
export declare function watchdog(): boolean;
/** Options of {@link supervise}. */
export interface SuperviseOptions {
  /** Workers always running (1..1024; default 1). */
  workers?: number;
  /** A dynamic pool's maximum. */
  maxWorkers?: number;
  /** A worker retires after this many requests (0: never). */
  maxRequests?: number;
  /** A worker retires above this resident size in bytes. */
  maxRss?: number;
  /** Seconds without a loop iteration after which a worker is killed and replaced. */
  watchdog?: number;
  /** Milliseconds a retiring worker may take before it is killed. */
  drainTimeout?: number;
  /** Run the workers as this user (the supervisor must be root). */
  user?: string;
  /** chroot the workers into this directory (absolute, existing) before switching user;
   * an executed worker must find its program inside it. */
  chroot?: string;
  /** HTTPS listeners: bound plain by the supervisor, named `https` in each worker's
   * LISTEN_FDNAMES; the worker serves them with listen({ https: ['fd:N'], key, cert }). */
  https?: string[];
  /** Also take the socket-activated fds (LISTEN_FDS: "fcgi" by name FastCGI, the others
   * HTTP) as listeners, shared by every worker. */
  inherited?: boolean;
  http?: string[];
  fcgi?: string[];
  /** Status listeners, served by the supervisor (JSON; OpenMetrics on /metrics). */
  status?: string[];
  /** The command each worker executes: [file, ...args]. */
  exec: string[];
  /** Called for each bound listener before the workers start. */
  onListening?: (proto: 'http' | 'https' | 'fcgi' | 'status', addr: string) => void;
  /** Called in the supervisor on SIGHUP, before the workers are replaced. */
  onReload?: () => void;
}

/** Runs a supervisor of worker processes in exec mode; blocks until it stopped; returns the exit code. */
export declare function supervise(opts: SuperviseOptions): number;

/** Options of `res.websocket()`. */
export interface WebSocketOptions {
  /** Largest message accepted (after inflating, all fragments), bytes; 16 MiB. Larger closes with 1009. */
  maxPayload?: number;
  /** Accept permessage-deflate when the client offers it (true). */
  perMessageDeflate?: boolean;
  /** Messages shorter than this are sent uncompressed (1024). */
  threshold?: number;
  /** Subprotocols spoken; the first the client offers is chosen. */
  protocols?: string[] | string;
  /** Bytes queued past which a send is dropped (1 MiB). */
  maxBackpressure?: number;
  /** Close the connection (1008) instead of dropping a message past maxBackpressure. */
  closeOnBackpressure?: boolean;
  /** Ping after this many ms without input; close if nothing answers as long again (0: off). */
  pingInterval?: number;
  /** Close (1001) after this many ms without input (120000; 0: never). */
  idleTimeout?: number;
}

/** Options of `ws.send()`. */
export interface SendOptions {
  /** Send as binary (default: true for Buffers, false for strings). */
  binary?: boolean;
}

/** A WebSocket on the server side, in the shape of the `ws` package's. */
export declare class WebSocket extends EventEmitter {
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  /** 0 CONNECTING, 1 OPEN, 2 CLOSING, 3 CLOSED. */
  readonly readyState: 0 | 1 | 2 | 3;
  /** Bytes queued and not yet written. */
  readonly bufferedAmount: number;
  /** The subprotocol chosen ('' if none). */
  readonly protocol: string;
  readonly isPaused: boolean;
  /** Queues a message; `cb(err)` once queued (err: not open, or over maxBackpressure). Returns whether it was queued. */
  send(data: string | Buffer | ArrayBuffer | ArrayBufferView, cb?: (err: Error | null) => void): boolean;
  send(data: string | Buffer | ArrayBuffer | ArrayBufferView, options: SendOptions, cb?: (err: Error | null) => void): boolean;
  /** Sends a ping (up to 125 bytes of payload). */
  ping(data?: string | Buffer, mask?: boolean, cb?: (err: Error | null) => void): boolean;
  /** Starts the close handshake (1000 by default). */
  close(code?: number, reason?: string | Buffer): void;
  /** Closes the connection now ('close' gets 1006). */
  terminate(): void;
  pause(): void;
  resume(): void;
  /** Subscribes to a topic of this process. */
  subscribe(topic: string): boolean;
  unsubscribe(topic: string): boolean;
  /** Publishes to every subscriber of `topic` but this socket; returns how many got it. */
  publish(topic: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: SendOptions): number;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  on(event: 'open' | 'drain', listener: () => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  once(event: 'close', listener: (code: number, reason: Buffer) => void): this;
  once(event: 'open' | 'drain', listener: () => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
}

/** Publishes a WebSocket message to every subscriber of `topic` in this process; returns how many got it. */
export declare function publish(topic: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: SendOptions): number;

/** The library version, e.g. "0.1.0". */
export declare const version: string;
