//! Panic containment for connections: a panic while one connection is handled (a bug in a
//! protocol, or in a handler it calls) closes that connection, logged, instead of unwinding
//! out of the loop and ending it for every other connection. The C ABI's panic boundary
//! stays the last line, for panics outside any connection.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::reactor::Token;

/// Runs `f`; a panic inside it is caught and logged (at error level, with its message) as
/// one that closes connection `token`, and gives `Err(())`.
///
/// `AssertUnwindSafe`: what `f` may leave half-updated belongs to the connection being
/// closed (its buffers and protocol state, which are only released from then on) or sits
/// behind `RefCell`s whose guards are dropped during the unwind.
pub(crate) fn contained<R>(token: Token, f: impl FnOnce() -> R) -> Result<R, ()> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        log::error!(
            "connection {token:?}: panic while handling it ({}): closing it",
            message(&*p)
        );
    })
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_a_value_passes_through() {
        let t = Token::from_u64(7);
        assert_eq!(contained(t, || 5), Ok(5));
        assert_eq!(contained(t, || -> u8 { panic!("boom") }), Err(()));
        let owned = String::from("owned");
        assert_eq!(contained(t, move || -> u8 { panic!("{owned}") }), Err(()));
        assert_eq!(message(&"text"), "text");
        assert_eq!(message(&String::from("s")), "s");
        assert_eq!(message(&5u8), "non-string payload");
    }
}
