//! The fuzz target's properties (see `fuzz/`), run here on a few thousand
//! URLs built from hostile pieces, so that every test run checks them.

mod common {
    include!("common/property.rs");
}

/// A small deterministic generator (xorshift64*), so that a failure names a
/// seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Up to `most` pieces from `items`, joined.
    fn pieces(&mut self, items: &[&str], most: usize) -> String {
        let n = self.below(most + 1);
        (0..n).map(|_| self.pick(items)).collect()
    }
}

const SCHEMES: &[&str] = &[
    "http", "https", "HTTP", "sftp", "ftp", "ftps", "s3", "webdav", "webdavs", "file", "hTtPs",
];
const HOSTS: &[&str] = &[
    "hooks.example.com",
    "HOOKS.EXAMPLE.COM",
    "hooks.example.com.",
    "hooks.example.com.evil.org",
    "data.example.com",
    "files.example.com",
    "ftp.example.com",
    "dav.example.com",
    "bucket",
    "127.0.0.1",
    "127.0.0.1:8080",
    "[::1]:9000",
    "[0:0::1]:9000",
    "[::ffff:127.0.0.1]",
    "[fe80::1%25eth0]",
    "2130706433",
    "0x7f.1",
    "10.0.0.5:9200",
    "169.254.169.254",
    "%68ooks.example.com",
    "h\u{43e}oks.example.com",
    "xn--hoks-xxx.example.com",
    "evil.org",
    "",
];
const HOSTILE: &[&str] = &[
    "@", "?", "#", "\\", "%", ":", "[", "]", "/", "%40", "%3F", "%23", "%2F", "%5C", "%2e", "..",
    ".", "%2e%2e", "%00", " ", "\t", "\n", "é", "\u{3000}", "\u{ff0f}", "*", "{", "}",
];
const WORDS: &[&str] = &[
    "data",
    "exports",
    "x",
    "pub",
    "rota",
    "a.csv",
    "hooks.example.com",
];

fn url(rng: &mut Rng) -> String {
    let scheme = rng.pick(SCHEMES);
    let seps = ["://", "://", "://", ":/", ":\\\\", ":///"];
    let sep = seps[rng.below(seps.len())];
    let mut out = format!("{scheme}{sep}");
    // Userinfo: a user, maybe a password holding the secret and hostile
    // pieces, maybe a stray `@`.
    match rng.below(4) {
        0 => {}
        1 => {
            out.push_str(rng.pick(&["rota", "root", "bob", ""]));
            out.push('@');
        }
        _ => {
            out.push_str(rng.pick(&["rota", "bob", "", "b%40b"]));
            out.push(':');
            out.push_str(&rng.pieces(HOSTILE, 2));
            out.push_str(common::SECRET);
            out.push_str(&rng.pieces(HOSTILE, 3));
            out.push('@');
        }
    }
    out.push_str(rng.pick(HOSTS));
    if rng.below(3) == 0 {
        out.push_str(rng.pick(&[":80", ":443", ":8080", ":22", ":0", ":99999", ":x", ":"]));
    }
    if rng.below(3) == 0 {
        out.push_str(&rng.pieces(HOSTILE, 2));
        out.push_str(rng.pick(HOSTS));
    }
    for _ in 0..rng.below(4) {
        out.push('/');
        if rng.below(2) == 0 {
            out.push_str(rng.pick(WORDS));
        } else {
            out.push_str(&rng.pieces(HOSTILE, 3));
        }
    }
    if rng.below(4) == 0 {
        out.push_str(rng.pick(&["?", "#", "?x=1@evil.org", "#@hooks.example.com/"]));
    }
    out
}

#[test]
fn admitted_urls_reach_only_allowed_places_and_passwords_never_show() {
    let mut rng = Rng(0x5EED_2026_0017);
    let mut admitted = 0;
    for _ in 0..20_000 {
        let u = url(&mut rng);
        common::check(&u);
        if rota_url::RemoteUrl::parse(&u).is_ok_and(|r| {
            common::ENTRIES
                .iter()
                .any(|e| rota_url::UrlPrefix::parse(e).is_ok_and(|p| p.admits(&r)))
        }) {
            admitted += 1;
        }
    }
    // The generator reaches both sides of the check.
    assert!(admitted > 50, "only {admitted} admitted");
}

#[test]
fn known_bypass_urls_and_their_kin_hold_the_properties() {
    for u in [
        "http://127.0.0.1:18999?@hooks.example.com/",
        "https://10.0.0.5:9200#@hooks.example.com/",
        "https://127.0.0.1:7878\\@hooks.example.com/x",
        "sftp://bob:Summer#2026Zq9@files.example.com/data/",
        "https://bob:paZq9?ss@h/x",
        "ftp://bob:12/Zq9@ftp.example.com/",
        "http:/u:Zq9@hooks.example.com/",
        "http:\\\\u:Zq9@hooks.example.com/",
        "s3://b/:Zq9@bucket/exports/",
    ] {
        common::check(u);
    }
}

/// The fuzz target's seeds (and any input a fuzzing run found and kept
/// there), read as the fuzz target reads them, on every test run.
#[test]
fn the_fuzz_seeds_hold_the_properties() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/urls");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/urls") {
        let bytes = std::fs::read(entry.expect("a seed").path()).expect("read a seed");
        let Ok(input) = std::str::from_utf8(&bytes) else {
            continue;
        };
        common::check_fuzz_input(input);
        read += 1;
    }
    assert!(read >= 10, "only {read} seeds in {}", dir.display());
}
