//! Third-party decoders that panic on some malformed inputs, contained at the edge where mmix
//! calls them: the panic becomes an error naming the file, and prints nothing. The fuzzers
//! found two: zune-jpeg's upsampler (through the `image` crate) and Burn's optimizer-record
//! loader.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `decode`, returning its panic's message as an error instead of unwinding further.
/// The panic message is not printed: the caller reports the error in its own words.
pub(crate) fn contain<T>(decode: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.get() {
                previous(info);
            }
        }));
    });
    let was = CONTAINING.replace(true);
    let outcome = catch_unwind(AssertUnwindSafe(decode));
    CONTAINING.set(was);
    outcome.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the decoder failed".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(contain(|| 7), Ok(7));
        let message = contain(|| -> u8 { panic!("assertion failed: a decoder's invariant") });
        assert_eq!(
            message,
            Err("assertion failed: a decoder's invariant".into())
        );
        // Outside `contain`, panics still reach the usual hook (and unwind as before).
        assert!(catch_unwind(|| panic!("plain")).is_err());
    }
}
