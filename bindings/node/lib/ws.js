// WebSocket for the Node binding, in the shape of the `ws` package's server-side socket:
//
//   const ws = res.websocket({ perMessageDeflate: true, protocols: ['chat'] });
//   if (ws) ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
//
// res.websocket() answers the upgrade (101) and returns the socket, or answers the refusal
// (400, 405, or 426 with Sec-WebSocket-Version: 13) and returns null. Events: 'open' (the
// connection runs), 'message' (data: Buffer, isBinary), 'drain' (queued output went out
// after the socket was full), 'close' (code, reason: Buffer). Pub/sub: ws.subscribe(topic),
// ws.publish(topic, data) (every subscriber but ws), myriad.publish(topic, data) (all);
// topics are per process (per loop): a cluster worker reaches its own subscribers only.
'use strict';
const { EventEmitter } = require('node:events');

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
const EWS_REFUSED = -50;
const EWS_BACKPRESSURE = -51;
const EWS_CLOSED = -52;
const EWS_CODE = -53;

function wsError(rc) {
  const e = new Error(
    rc === EWS_BACKPRESSURE ? 'WebSocket queue over maxBackpressure: message dropped'
      : rc === EWS_CLOSED ? 'WebSocket is not open'
        : rc === EWS_CODE ? 'invalid close code' : `WebSocket error ${rc}`,
  );
  e.code = rc === EWS_BACKPRESSURE ? 'EWS_BACKPRESSURE' : rc === EWS_CLOSED ? 'EWS_CLOSED'
    : rc === EWS_CODE ? 'ERR_INVALID_ARG_VALUE' : 'EWS';
  e.errno = rc;
  return e;
}

function isBinaryData(data, options) {
  if (options && typeof options.binary === 'boolean') return options.binary;
  return typeof data !== 'string';
}

class WebSocket extends EventEmitter {
  constructor(native) {
    super();
    this._native = native;
    this._w = null;
    this._state = OPEN;
  }

  /** CONNECTING, OPEN, CLOSING or CLOSED (the constants are on the class too). */
  get readyState() {
    return this._state;
  }

  /** Bytes queued and not yet written to the client. */
  get bufferedAmount() {
    return this._w && this._state !== CLOSED ? this._native.wsQueued(this._w) : 0;
  }

  /** The subprotocol chosen in the handshake ('' if none). */
  get protocol() {
    return (this._w && this._native.wsProtocol(this._w)) || '';
  }

  _event(kind, a, b) {
    switch (kind) {
      case 0:
        this.emit('open');
        break;
      case 1:
        this.emit('message', a, b);
        break;
      case 2:
        this.emit('drain');
        break;
      case 3:
        this._state = CLOSED;
        this.emit('close', a, Buffer.from(b || '', 'utf8'));
        break;
      default:
    }
  }

  _done(rc, cb) {
    const err = rc < 0 ? wsError(rc) : null;
    if (cb) process.nextTick(cb, err);
    else if (err && rc !== EWS_CLOSED && rc !== EWS_BACKPRESSURE) throw err;
    return rc >= 0;
  }

  /** Sends a message: a string (text, unless options.binary) or Buffer / TypedArray /
   * ArrayBuffer (binary, unless options.binary === false). `cb(err)` once queued (err:
   * not open, or dropped over maxBackpressure). Returns whether it was queued. */
  send(data, options, cb) {
    if (typeof options === 'function') {
      cb = options;
      options = undefined;
    }
    if (typeof data === 'number') data = String(data);
    const rc = this._state === OPEN ? this._native.wsSend(this._w, data, isBinaryData(data, options)) : EWS_CLOSED;
    return this._done(rc, cb);
  }

  /** Sends a ping (payload up to 125 bytes); the client's pong is answered by the library. */
  ping(data, mask, cb) {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    } else if (typeof mask === 'function') {
      cb = mask;
    }
    const rc = this._state === OPEN ? this._native.wsPing(this._w, data ?? '') : EWS_CLOSED;
    return this._done(rc, cb);
  }

  /** Starts the close handshake (code: 1000 by default; 1000-1003, 1007-1014, 3000-4999). */
  close(code, reason) {
    if (this._state !== OPEN) return;
    if (code !== undefined && (typeof code !== 'number' || !Number.isInteger(code))) {
      throw new TypeError('code must be an integer');
    }
    const rc = this._native.wsClose(this._w, code ?? 1000, reason ?? '');
    if (rc === EWS_CODE) throw wsError(rc);
    if (rc >= 0) this._state = CLOSING;
  }

  /** Closes the connection now, without a close handshake ('close' gets 1006). */
  terminate() {
    if (this._state !== CLOSED) this._native.wsTerminate(this._w);
  }

  /** Stops reading the client's messages until resume(). */
  pause() {
    if (this._state !== CLOSED) this._native.wsPause(this._w, true);
    this.isPaused = true;
  }

  /** Resumes reading. */
  resume() {
    if (this._state !== CLOSED) this._native.wsPause(this._w, false);
    this.isPaused = false;
  }

  /** Subscribes to `topic` (this process's topics). */
  subscribe(topic) {
    return this._state !== CLOSED && this._native.wsSubscribe(this._w, String(topic)) >= 0;
  }

  /** Unsubscribes from `topic`; false if it was not subscribed. */
  unsubscribe(topic) {
    return this._state !== CLOSED && this._native.wsUnsubscribe(this._w, String(topic)) >= 0;
  }

  /** Publishes to every subscriber of `topic` but this socket (encoded once for all);
   * returns how many got it. */
  publish(topic, data, options) {
    return this._native.wsPublish(this._w, String(topic), data, isBinaryData(data, options));
  }
}
WebSocket.CONNECTING = CONNECTING;
WebSocket.OPEN = OPEN;
WebSocket.CLOSING = CLOSING;
WebSocket.CLOSED = CLOSED;
WebSocket.prototype.isPaused = false;

/** Accepts the upgrade of request handle `h`: the WebSocket, or null when refused (the
 * request was answered with the refusal's 4xx). Throws for other errors. */
function accept(native, h, options = {}) {
  const o = { ...options };
  if (Array.isArray(o.protocols)) o.protocols = o.protocols.join(',');
  if (o.perMessageDeflate !== undefined) o.perMessageDeflate = !!o.perMessageDeflate;
  const ws = new WebSocket(native);
  const w = native.wsAccept(h, o, (kind, a, b) => ws._event(kind, a, b));
  if (typeof w === 'number') {
    if (w === EWS_REFUSED) return null;
    throw wsError(w);
  }
  ws._w = w;
  return ws;
}

/** Publishes to every subscriber of `topic` in this process; returns how many got it. */
function publish(native, topic, data, options) {
  return native.wsPublish(null, String(topic), data, isBinaryData(data, options));
}

module.exports = { WebSocket, accept, publish };
