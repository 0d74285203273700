//! The URL reading's properties (see `crates/rota-url/tests/common/property.rs`)
//! on arbitrary input, read as `check_fuzz_input` says.

#![no_main]

mod common {
    include!("../../crates/rota-url/tests/common/property.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    common::check_fuzz_input(input);
});
