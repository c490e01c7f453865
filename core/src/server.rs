//! A server on one loop: one handler, any number of HTTP and FastCGI listeners, limits and
//! timeouts, graceful shutdown. An application cannot tell which protocol a request came
//! over except by asking ([`crate::Request::protocol`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::app::{Ctx, ExId, HandlerFn, Request, Response};
use crate::fcgi::FcgiConn;
use crate::http::HttpConn;
use crate::net::{Accepted, Addr, Listener, PeerAddr, Transport};
use crate::reactor::{Loop, Token};

/// Which protocol a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 (and 1.0).
    Http,
    /// FastCGI 1.0 responder (and authorizer).
    Fcgi,
}

/// Limits and timeouts of a server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest request head (request line + headers); more gives 431.
    pub max_head: usize,
    /// Longest request line / target; more gives 414.
    pub max_line: usize,
    /// Largest request body; more gives 413.
    pub max_body: u64,
    /// Time allowed for a whole request head from its first byte (slowloris defence: not
    /// extended by bytes trickling in). 408 and close.
    pub header_timeout: Duration,
    /// Time allowed between two pieces of a request body. 408 (or abort) and close.
    pub body_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Time a response may stay blocked on a client that does not read. Abort.
    pub write_timeout: Duration,
    /// Graceful shutdown: longest wait for in-flight requests before they are cut.
    pub drain_timeout: Duration,
    /// Graceful shutdown: how long a keep-alive connection idle between requests is kept
    /// (its next request answered with `Connection: close`) before it is closed. Zero, the
    /// default, closes it at once as nginx does. In a worker of myriad's supervisor the
    /// default is 1 s: a retiring worker's replacement already accepts, so nothing is kept
    /// waiting, and a client that already sent its next request on that connection (as
    /// wrk and pipelining clients do) gets an answer instead of a reset.
    pub drain_idle_grace: Duration,
    /// Longest time a handler may take to start its response, and then between two pieces
    /// of it, once the request is read (nginx's `proxy_read_timeout` /
    /// `fastcgi_read_timeout`, 60 s by default there too). When it passes, a request
    /// nothing was sent for yet is answered 504 (and its handler sees it aborted); a
    /// response already started is cut short (see [`crate::Response::abort`]). Either way
    /// the request is freed. `Duration::ZERO` turns it off (a response may then wait for
    /// ever: long polls, event streams).
    pub response_timeout: Duration,
    /// FastCGI: largest total size of a request's PARAMS (answered 431 + END_REQUEST).
    /// The other request limits apply to FastCGI as they do to HTTP: `max_body` (a
    /// CONTENT_LENGTH or a STDIN stream past it is answered 413 + END_REQUEST, the rest of
    /// that request's STDIN discarded unbuffered), `header_timeout` for the whole PARAMS
    /// from BEGIN_REQUEST on and `body_timeout` between STDIN records (408 +
    /// END_REQUEST), `response_timeout` (504 + END_REQUEST).
    pub max_params: usize,
    /// FastCGI: most requests open at once on one connection (what GET_VALUES reports as
    /// FCGI_MAX_REQS). A BEGIN_REQUEST beyond it is refused with END_REQUEST and
    /// protocolStatus FCGI_OVERLOADED (FCGI_CANT_MPX_CONN when the cap is 1, and
    /// FCGI_MPXS_CONNS is then reported 0); the connection's other requests go on.
    pub fcgi_max_requests: usize,
    /// FastCGI: peers allowed on TCP listeners (FCGI_WEB_SERVER_ADDRS); empty allows all.
    pub web_server_addrs: Vec<std::net::IpAddr>,
    /// Where finished requests are logged, one line each (none by default).
    pub access_log: Option<crate::accesslog::AccessLog>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            max_head: 64 * 1024,
            max_line: 8 * 1024,
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
            drain_idle_grace: if crate::supervisor::shm::probe().is_some() {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            },
            response_timeout: Duration::from_secs(60),
            max_params: 1 << 20,
            fcgi_max_requests: 64,
            web_server_addrs: web_server_addrs_from_env(),
            access_log: None,
        }
    }
}

/// Called once a graceful shutdown has closed every connection.
pub(crate) type DoneFn = Box<dyn FnOnce(&mut Loop)>;

/// Interned local addresses (see [`Shared::locals`]); index 0 means "the listener's".
#[derive(Default)]
pub(crate) struct Locals {
    addrs: Vec<SocketAddr>,
    index: HashMap<SocketAddr, u16>,
}

impl Locals {
    /// The index of `a` (from 1), or 0 once 65,535 distinct addresses are taken.
    fn intern(&mut self, a: SocketAddr) -> u16 {
        if let Some(&i) = self.index.get(&a) {
            return i;
        }
        let Ok(i) = u16::try_from(self.addrs.len() + 1) else {
            return 0;
        };
        self.addrs.push(a);
        self.index.insert(a, i);
        i
    }

    /// The address of index `i` (0: none).
    pub(crate) fn get(&self, i: u16) -> Option<SocketAddr> {
        self.addrs.get(usize::from(i).checked_sub(1)?).copied()
    }
}

pub(crate) struct Shared {
    pub(crate) ctx: Rc<Ctx>,
    pub(crate) opts: ServerOptions,
    pub(crate) handler: HandlerFn,
    /// Connections open (the loop keeps the connections themselves; [`Server::shutdown`]
    /// finds this server's among them).
    pub(crate) conns: Cell<usize>,
    pub(crate) listeners: RefCell<Vec<(Token, Option<SocketAddr>)>>,
    /// Local addresses seen by connections accepted on wildcard listeners, each once: a
    /// connection keeps an index into it (a host has a few addresses; ten thousand
    /// connections to one of them cost two bytes each, not a map entry).
    pub(crate) locals: RefCell<Locals>,
    pub(crate) draining: Cell<bool>,
    /// HTTP response heads' status line and Date, formatted once per second.
    pub(crate) head: RefCell<crate::http::head::HeadCache>,
    pub(crate) on_drained: RefCell<Option<DoneFn>>,
    /// The access log's one-second flush timer.
    pub(crate) log_timer: Cell<Option<crate::reactor::TimerId>>,
}

/// A server on one loop. Cheap to clone (a reference).
#[derive(Clone)]
pub struct Server {
    sh: Rc<Shared>,
}

/// FCGI_WEB_SERVER_ADDRS: a comma-separated list of IP addresses allowed to connect.
fn web_server_addrs_from_env() -> Vec<std::net::IpAddr> {
    std::env::var("FCGI_WEB_SERVER_ADDRS")
        .map(|v| v.split(',').filter_map(|a| a.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl Loop {
    /// Creates a server on this loop; add listeners with [`Server::listen`].
    pub fn server(
        &mut self,
        opts: ServerOptions,
        handler: impl Fn(&mut Loop, &mut Request, Response) + 'static,
    ) -> Server {
        let handler: HandlerFn = match self.probe {
            // A supervised worker: each request is counted and named in the page (atomic
            // stores, no syscall); its exchange's end takes it out of the in-flight count.
            Some(p) => Rc::new(move |lp: &mut Loop, req: &mut Request, res: Response| {
                p.begin(req.method(), req.target());
                res.ctx.with(res.id, |e| e.probed = true);
                handler(lp, req, res)
            }),
            None => Rc::new(handler),
        };
        let ctx = Rc::new(Ctx::new(self).with_log(opts.access_log.clone()));
        let log_timer = ctx.alog.is_some().then(|| {
            let w = Rc::downgrade(&ctx);
            let second = Duration::from_secs(1);
            self.repeat(second, second, move |lp, id| match w.upgrade() {
                Some(ctx) => ctx.flush_log(),
                None => {
                    lp.cancel_timer(id);
                }
            })
        });
        Server {
            sh: Rc::new(Shared {
                ctx,
                opts,
                handler,
                conns: Cell::new(0),
                listeners: RefCell::default(),
                locals: RefCell::default(),
                draining: Cell::new(false),
                head: RefCell::new(crate::http::head::HeadCache::new()),
                on_drained: RefCell::new(None),
                log_timer: Cell::new(log_timer),
            }),
        }
    }
}

impl Server {
    /// Serves `proto` on `l` from this loop. Returns the listener's token.
    pub fn listen(&self, lp: &mut Loop, l: Listener, proto: Proto) -> Token {
        self.listen_layered(lp, l, proto, None)
    }

    /// Serves HTTPS on `l` from this loop: HTTP/1.1 over TLS with `tls`'s certificates
    /// (reloadable: [`crate::tls::TlsAcceptor::reload`]). The TLS handshake and the first
    /// request head share the header timeout. Returns the listener's token.
    #[cfg(feature = "tls")]
    pub fn listen_tls(&self, lp: &mut Loop, l: Listener, tls: crate::tls::TlsAcceptor) -> Token {
        self.listen_layered(lp, l, Proto::Http, Some(Rc::new(move || tls.accept())))
    }

    /// [`Server::listen`] with a transport layer made by `layer` for each connection
    /// accepted (a connection it gives no layer to is closed).
    pub fn listen_layered(
        &self,
        lp: &mut Loop,
        l: Listener,
        proto: Proto,
        layer: Option<MakeLayer>,
    ) -> Token {
        let local = match l.addr() {
            Addr::Tcp(a) => Some(*a),
            _ => None,
        };
        let wildcard = local.is_some_and(|a| a.ip().is_unspecified());
        let sh = self.sh.clone();
        let idx = self.sh.listeners.borrow().len();
        let token = lp.listen(l, move |lp, a: Accepted| {
            // A connection accepted after a shutdown began (a readiness or completion of the
            // same iteration) is served, not dropped: its client sent nothing yet and could
            // not retry. Its response says `Connection: close`.
            let local = if wildcard {
                lp.stats.other += 1;
                match crate::net::local_addr(std::os::fd::AsRawFd::as_raw_fd(&a.fd)) {
                    Ok(PeerAddr::Inet(addr)) => sh.locals.borrow_mut().intern(addr),
                    _ => 0,
                }
            } else {
                0
            };
            match proto {
                Proto::Http => {
                    let opts = crate::net::ConnOptions {
                        max_input: sh.opts.max_head.max(16 * 1024),
                        ..Default::default()
                    };
                    sh.conns.set(sh.conns.get() + 1);
                    let conn = HttpConn::new(sh.clone(), idx as u8, local);
                    let t = lp.add_conn_with(a, conn, opts);
                    lp.with_conn::<HttpConn, ()>(t, |p, io| {
                        if !with_layer(io, &layer) {
                            return;
                        }
                        p.start(io)
                    });
                }
                Proto::Fcgi => {
                    if let (false, PeerAddr::Inet(peer)) =
                        (sh.opts.web_server_addrs.is_empty(), a.peer)
                    {
                        if !sh.opts.web_server_addrs.contains(&peer.ip()) {
                            log::warn!("fcgi: refusing {peer}: not in FCGI_WEB_SERVER_ADDRS");
                            return;
                        }
                    }
                    let opts = crate::net::ConnOptions {
                        // A whole management record (65535 + 8 + 255) must fit.
                        max_input: 128 * 1024,
                        ..Default::default()
                    };
                    sh.conns.set(sh.conns.get() + 1);
                    let t = lp.add_conn_with(a, FcgiConn::new(sh.clone()), opts);
                    let draining = sh.draining.get();
                    lp.with_conn::<FcgiConn, ()>(t, |p, io| {
                        if !with_layer(io, &layer) {
                            return;
                        }
                        p.start(io);
                        if draining {
                            p.drain_after_requests();
                        }
                    });
                }
            }
        });
        self.sh.listeners.borrow_mut().push((token, local));
        // A supervised worker serves from its first listener on.
        crate::supervisor::shm::ready();
        token
    }

    /// Connections open on this server.
    pub fn connection_count(&self) -> usize {
        self.sh.conns.get()
    }

    /// Graceful shutdown: stops accepting, closes idle connections now, lets in-flight
    /// requests finish (their responses say `Connection: close`), cuts what is left after
    /// the drain timeout, then calls `done`.
    pub fn shutdown(&self, lp: &mut Loop, done: impl FnOnce(&mut Loop) + 'static) {
        let sh = &self.sh;
        sh.draining.set(true);
        *sh.on_drained.borrow_mut() = Some(Box::new(done));
        for (t, _) in sh.listeners.borrow_mut().drain(..) {
            lp.close_listener(t);
        }
        for t in conns_of(lp, sh) {
            if lp
                .with_conn::<HttpConn, ()>(t, |p, io| p.drain(io))
                .is_none()
            {
                lp.with_conn::<FcgiConn, ()>(t, |p, io| p.drain(io));
            }
        }
        // WebSockets (upgraded connections left the server's count): a close with 1001,
        // for every one on this loop. The drain does not wait for their answers.
        for t in lp.conn_tokens() {
            lp.with_conn::<crate::ws::WsConn, ()>(t, |c, io| c.going_away(io));
        }
        let sh2 = self.sh.clone();
        lp.timer(sh.opts.drain_timeout, move |lp| {
            let left = conns_of(lp, &sh2);
            if !left.is_empty() {
                log::warn!("drain timeout: closing {} connections", left.len());
            }
            for t in left {
                lp.close_conn(t);
            }
            finish_drain(lp, &sh2);
        });
        finish_drain(lp, &self.sh);
    }
}

/// Makes the transport layer of each connection a listener accepts (None: refuse it).
pub type MakeLayer = Rc<dyn Fn() -> Option<Box<dyn Transport>>>;

/// Sets the connection's layer from `make`; false (and the connection aborted) if it
/// gives none.
fn with_layer(io: &mut crate::net::Io<'_>, make: &Option<MakeLayer>) -> bool {
    let Some(make) = make else { return true };
    match make() {
        Some(t) => {
            io.set_transport(t);
            true
        }
        None => {
            io.abort();
            false
        }
    }
}

/// The connections of server `sh` (those not inside one of their callbacks right now).
fn conns_of(lp: &mut Loop, sh: &Rc<Shared>) -> Vec<Token> {
    let mut mine = lp.conn_tokens();
    mine.retain(|&t| {
        lp.peek_conn::<HttpConn, _>(t, |p| p.serves(sh))
            .or_else(|| lp.peek_conn::<FcgiConn, _>(t, |p| p.serves(sh)))
            .unwrap_or(false)
    });
    mine
}

/// Calls the shutdown callback once no connection is left.
pub(crate) fn finish_drain(lp: &mut Loop, sh: &Rc<Shared>) {
    if sh.draining.get() && sh.conns.get() == 0 {
        sh.ctx.flush_log();
        if let Some(t) = sh.log_timer.take() {
            lp.cancel_timer(t);
        }
        let done = sh.on_drained.borrow_mut().take();
        if let Some(done) = done {
            lp.defer(done);
        }
    }
}

/// Rebuilds the response handle of exchange `id` on connection `conn` (for completions
/// posted from other threads). None if the connection or exchange is gone.
pub(crate) fn response_for(lp: &mut Loop, conn: Token, id: ExId) -> Option<Response> {
    let ctx = match lp.with_conn::<HttpConn, _>(conn, |p, _| p.ctx()) {
        Some(c) => c,
        None => lp.with_conn::<FcgiConn, _>(conn, |p, _| p.ctx())?,
    };
    ctx.with(id, |_| ())?;
    Some(Response {
        ctx,
        id,
        done: false,
    })
}
