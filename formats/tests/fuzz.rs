//! Mutation fuzzing of every decoder: each fixture of each format (valid
//! and invalid) is mutated at random — bits flipped, bytes set to edge
//! values, cut short, spliced, repeated, grown — and decoded whole and in
//! random pieces, under `fail` and `skip`. A decoder must end in batches or a
//! positioned error naming its input; a panic fails the test with the seed
//! that reproduces it. An abort (say, an allocation a hostile length asked
//! for) or a hang ends the test binary, which fails too.
//!
//! The run is seeded and bounded. To fuzz longer, or one format:
//!
//! ```text
//! ROTA_FUZZ_ROUNDS=5000 ROTA_FUZZ_FORMAT=avro ROTA_FUZZ_SEED=7 \
//!     cargo nextest run -p rota-formats --test fuzz --no-capture
//! ```
//!
//! `ROTA_FUZZ_VERBOSE=1` names each case before it runs, to find the one
//! that ended the binary (and with `ROTA_FUZZ_SAVE=DIR` writes its bytes to
//! `DIR/case`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rota_core::OnError;
use rota_core::format::{DecodeOptions, Format};

/// Inputs larger than this are left out (a decompression bomb would make
/// every round slow, and says nothing new mutated).
const MAX_FIXTURE: usize = 64 << 10;

/// A small, fast, seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixtures(format: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(format);
    let mut out = Vec::new();
    for dir in [root.clone(), root.join("invalid")] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            let small = e.metadata().is_ok_and(|m| m.len() as usize <= MAX_FIXTURE);
            if p.is_file() && small && p.extension().is_none_or(|x| x != "opts") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// One random change to `bytes`, some of them taken from `other`.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, other: &[u8]) {
    const EDGES: &[u8] = &[
        0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, b'"', b'\n', b',', b'<', b'{',
    ];
    let len = bytes.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            bytes[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            bytes[i] = EDGES[rng.below(EDGES.len())];
        }
        2 => bytes.truncate(rng.below(len + 1)),
        3 if len > 0 => {
            // Repeat a slice in place.
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            let piece = bytes[a..b].to_vec();
            let at = rng.below(len + 1);
            bytes.splice(at..at, piece);
        }
        4 if !other.is_empty() => {
            // Splice in a piece of another input.
            let a = rng.below(other.len());
            let b = (a + 1 + rng.below(256)).min(other.len());
            let at = rng.below(len + 1);
            bytes.splice(at..at, other[a..b].iter().copied());
        }
        5 if len > 0 => {
            // A length field made huge: four 0xFF bytes somewhere.
            let at = rng.below(len);
            let end = (at + 4).min(len);
            bytes[at..end].fill(0xFF);
        }
        6 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(32)).min(len);
            bytes.drain(a..b);
        }
        _ => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let noise: Vec<u8> = (0..n).map(|_| rng.next().to_le_bytes()[0]).collect();
            bytes.splice(at..at, noise);
        }
    }
}

/// Decodes `bytes` in pieces of `split`; panics propagate, errors are
/// checked to name the input.
fn decode(
    format: &dyn Format,
    bytes: &[u8],
    split: usize,
    on_error: OnError,
) -> Result<(), String> {
    // Workbooks get a cell budget to match the record size limit: the
    // reader loads XLS and ODS sheets whole, so a mutation that grows a
    // sheet costs what the budget allows.
    let sheet = ["xlsx", "xls", "ods"].contains(&format.name());
    let options = DecodeOptions {
        location: "fuzzed-input".into(),
        on_error,
        batch_records: 5,
        infer_records: 20,
        max_record_bytes: 1 << 20,
        options: if sheet {
            [("max_cells".to_owned(), "1000000".to_owned())].into()
        } else {
            Default::default()
        },
        ..DecodeOptions::default()
    };
    let mut decoder = match rota_formats::decoder(format, &options) {
        Ok(d) => d,
        Err(e) => return check(&e),
    };
    let mut outputs = 0u64;
    let result = rota_formats::drive::drive(
        decoder.as_mut(),
        bytes
            .chunks(split.max(1))
            .map(Ok::<_, std::convert::Infallible>),
        |_| {
            outputs += 1;
            assert!(outputs < 1_000_000, "the decoder never ends");
            true
        },
    );
    match result {
        Ok(_) => Ok(()),
        Err(rota_formats::drive::DriveError::Decode(e)) => check(&e),
        Err(rota_formats::drive::DriveError::Input(never)) => match never {},
    }
}

fn check(e: &rota_core::DecodeError) -> Result<(), String> {
    if e.location == "fuzzed-input" {
        Ok(())
    } else {
        Err(format!("an error that does not name its input: {e}"))
    }
}

#[test]
fn mutated_inputs_never_panic_and_errors_name_their_input() {
    let rounds = env_u64("ROTA_FUZZ_ROUNDS", 40);
    let seed = env_u64("ROTA_FUZZ_SEED", 20_261_122);
    let only = std::env::var("ROTA_FUZZ_FORMAT").ok();
    let verbose = std::env::var_os("ROTA_FUZZ_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut runs = 0u64;
    for format in rota_formats::builtin() {
        if only.as_deref().is_some_and(|f| f != format.name()) {
            continue;
        }
        let inputs: Vec<Vec<u8>> = fixtures(format.name())
            .iter()
            .filter_map(|p| std::fs::read(p).ok())
            .collect();
        for (n, original) in inputs.iter().enumerate() {
            for round in 0..rounds {
                let case_seed = seed ^ (round << 20) ^ ((n as u64) << 8) ^ 0x9E37_79B9;
                let mut rng = Rng(case_seed | 1);
                let mut bytes = original.clone();
                let other = &inputs[rng.below(inputs.len())];
                for _ in 0..=rng.below(4) {
                    mutate(&mut rng, &mut bytes, other);
                }
                let split = [0, 1, 7, 64, 4096][rng.below(5)];
                let on_error = if rng.below(2) == 0 {
                    OnError::Fail
                } else {
                    OnError::Skip
                };
                runs += 1;
                if verbose {
                    eprintln!("{} fixture #{n} round {round}", format.name());
                    if let Some(dir) = std::env::var_os("ROTA_FUZZ_SAVE") {
                        let _ = std::fs::write(Path::new(&dir).join("case"), &bytes);
                    }
                }
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    decode(format.as_ref(), &bytes, split, on_error)
                }));
                let problem = match outcome {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => e,
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .map_or_else(|| "a panic".to_owned(), |m| format!("panic: {m}")),
                };
                failures.push(format!(
                    "{} fixture #{n} round {round} (ROTA_FUZZ_SEED={seed}): {problem}",
                    format.name()
                ));
            }
        }
    }
    assert!(runs > 0, "nothing was fuzzed");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
