//! FastCGI 1.0 on the loop: a sans-IO record codec (nom) and a connection driver serving the
//! same handlers as HTTP, with multiplexing, GET_VALUES, ABORT_REQUEST, KEEP_CONN, the
//! AUTHORIZER role, and the fd-0 listen socket of spawn-fcgi.

mod conn;
mod params;
pub(crate) mod record;

pub(crate) use conn::FcgiConn;

/// Whether `fd` is a listening socket handed over the FastCGI way (FCGI_LISTENSOCK_FILENO,
/// fd 0 under spawn-fcgi or a web server): a socket on which getpeername fails with
/// ENOTCONN.
pub fn is_listen_socket(fd: i32) -> bool {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getpeername writes at most `len` bytes into `st`.
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}
