//! The one address syntax used everywhere (API, command lines, configs):
//! `HOST:PORT`, `[V6]:PORT`, `unix:PATH`, `fd:N`. Port 0 picks a free port.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// A listen or connect address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// TCP over IPv4 or IPv6.
    Tcp(SocketAddr),
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// An inherited, already listening socket (fd 0 from spawn-fcgi, 3.. from systemd).
    Fd(i32),
}

/// Why an address string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrError(pub(crate) String);

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddrError {}

impl From<AddrError> for std::io::Error {
    fn from(e: AddrError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

fn err(s: &str, why: &str) -> AddrError {
    AddrError(format!(
        "invalid address {s:?}: {why} (expected HOST:PORT, [V6]:PORT, unix:PATH or fd:N)"
    ))
}

impl FromStr for Addr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Addr, AddrError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err(s, "empty path"));
            }
            if path.len() >= 108 {
                return Err(err(s, "path longer than 107 bytes"));
            }
            if path.contains('\0') {
                return Err(err(s, "NUL in path"));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd:") {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(s, "fd must be a non-negative decimal number"));
            }
            let fd: i32 = n.parse().map_err(|_| err(s, "fd out of range"))?;
            return Ok(Addr::Fd(fd));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((h, p)) = rest.split_once("]:") else {
                return Err(err(s, "IPv6 literal must be [ADDR]:PORT"));
            };
            let ip: Ipv6Addr = h.parse().map_err(|_| err(s, "bad IPv6 address"))?;
            (IpAddr::V6(ip), p)
        } else {
            let Some((h, p)) = s.rsplit_once(':') else {
                return Err(err(s, "missing port"));
            };
            let ip = match h {
                "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                "*" | "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                // A name (letters and dots): say that names are not looked up here rather
                // than call the syntax bad.
                _ if h.bytes().any(|b| b.is_ascii_alphabetic())
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    return Err(AddrError(format!(
                        "invalid address {s:?}: {h:?} is a host name, and addresses here are \
                         numeric (listeners and this parser do not resolve names: use an IP \
                         address such as 127.0.0.1 or [::1], localhost, or * for all)"
                    )))
                }
                _ => IpAddr::V4(h.parse().map_err(|_| err(s, "bad IPv4 address"))?),
            };
            (ip, p)
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
            return Err(err(s, "bad port"));
        }
        let port: u16 = port.parse().map_err(|_| err(s, "port out of range"))?;
        Ok(Addr::Tcp(SocketAddr::new(host, port)))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Tcp(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

/// The address of a connection's peer, as accept4 returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Inet(SocketAddr),
    /// A Unix-socket peer (normally unnamed).
    Unix,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix => f.write_str("unix:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "127.0.0.1:80".parse::<Addr>().unwrap(),
            Addr::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            "[::1]:0".parse::<Addr>().unwrap(),
            Addr::Tcp("[::1]:0".parse().unwrap())
        );
        assert_eq!(
            "localhost:8080".parse::<Addr>().unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!("*:81".parse::<Addr>().unwrap().to_string(), "0.0.0.0:81");
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Addr>().unwrap(),
            Addr::Unix("/tmp/x.sock".into())
        );
        assert_eq!("fd:0".parse::<Addr>().unwrap(), Addr::Fd(0));
        assert_eq!("fd:3".parse::<Addr>().unwrap().to_string(), "fd:3");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "80",
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:65536",
            "1.2.3.4:-1",
            "1.2.3.4:+80",
            "::1:80",
            "[::1]80",
            "[nope]:1",
            "unix:",
            "fd:",
            "fd:-1",
            "fd:x",
            "host.name:80",
            "1.2.3.4: 80",
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} accepted");
        }
        let e = "nosuchhost.invalid:80"
            .parse::<Addr>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a host name") && e.contains("numeric"), "{e}");
        let long = format!("unix:{}", "a".repeat(120));
        assert!(long.parse::<Addr>().is_err());
    }
}
