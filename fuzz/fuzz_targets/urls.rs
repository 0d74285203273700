//! The URL reading's properties (see `crates/rota-url/tests/common/property.rs`)
//! on arbitrary input: the input itself as a URL, and the input cut at its
//! first two NUL bytes into `A`, `B`, `C` and read as `A:SECRETB@C`, a URL
//! whose password holds the secret text.

#![no_main]

mod common {
    include!("../../crates/rota-url/tests/common/property.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    common::check(input);
    let mut parts = input.splitn(3, '\0');
    if let (Some(a), Some(b), Some(c)) = (parts.next(), parts.next(), parts.next())
        && !input.contains(common::SECRET)
    {
        common::check(&format!("{a}:{}{b}@{c}", common::SECRET));
    }
});
