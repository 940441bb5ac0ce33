//! The intake checks a module file passes before `dlopen` (`baton_host::loader::check`), over
//! arbitrary bytes: whatever the input, they answer and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = baton_host::loader::check(data);
});
