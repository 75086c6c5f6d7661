//! read_plan: read a dynsel plan directory from Rust with no external crates.
//!
//! Build:  cargo build --release --offline          (in docs/examples/rust)
//!    or:  rustc -O --edition 2021 -o read_plan src/main.rs
//! Usage:  read_plan PLAN_DIR          per-epoch counts and the sha256 of indices.bin:
//!                                       epoch 0 count 30000
//!                                       ...
//!                                       sha256 5f1c...
//!         read_plan PLAN_DIR EPOCH    epoch EPOCH's sample ids, one per line, in training order
//!                                     (the same bytes as PLAN_DIR/epochs/epoch-EEEE.txt)
//!
//! Before printing anything, both forms check the two files they read, indices.bin and offsets.bin:
//! their sizes fit each other (offsets non-decreasing from 0 to the number of ids), and each file's
//! size and sha256 equal what manifest.json records under "files". Any mismatch is one line on stderr
//! naming the file, and exit status 2. Not checked: counts against the manifest's "counts", ids against
//! "n_samples", and the files this reader does not read (weights.bin, epochs/, plan.parquet).
//!
//! The plan format (docs/formats.md, "Plan"):
//!   indices.bin  all epochs' sample ids concatenated, little-endian; u32 when manifest.json says
//!                "index_dtype": "<u4", u64 when it says "<u8"
//!   offsets.bin  little-endian u64, epochs + 1 entries (CSR): epoch e is
//!                indices[offsets[e] .. offsets[e + 1])
//!
//! Choices made to stay dependency-free (crates.io is not needed, and was not reachable where this was
//! written):
//! - Memory mapping uses `mmap`/`munmap` from the C library, declared with `extern "C"`, on 64-bit
//!   Linux and macOS (where `off_t` is 64 bits and PROT_READ = 1, MAP_PRIVATE = 2). Elsewhere the
//!   files are read into memory with `std::fs::read`, which gives the same bytes. A real trainer would
//!   use the `memmap2` crate and `serde_json`.
//! - manifest.json is read with a minimal string search instead of a JSON parser: "index_dtype", and
//!   "files" -> "indices.bin"/"offsets.bin" -> "bytes" and "sha256". That is safe for dynsel's
//!   manifests (JSON written by dynsel, where "index_dtype" is a top-level key whose value is the plain
//!   string "<u4" or "<u8", and each "files" entry is a flat object of a number and a hex string).
//! - SHA-256 is a small hand-written implementation (FIPS 180-4).
//!
//! Values are decoded with `from_le_bytes`, so the reader is right on big-endian hosts too.

use std::fs::File;
use std::process::ExitCode;

// ------------------------------------------------------------------------------------------------
// A read-only view of a whole file: memory-mapped where possible.

#[cfg(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64"))]
mod mapped {
    use std::fs::File;
    use std::os::raw::{c_int, c_void};
    use std::os::unix::io::AsRawFd;

    extern "C" {
        fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: i64) -> *mut c_void;
        fn munmap(addr: *mut c_void, len: usize) -> c_int;
    }
    const PROT_READ: c_int = 1;
    const MAP_PRIVATE: c_int = 2;

    /// A read-only, private memory map of a file (an empty file maps to an empty slice).
    pub struct Mapped {
        ptr: *mut c_void,
        len: usize,
    }

    impl Mapped {
        pub fn open(file: &File) -> std::io::Result<Mapped> {
            let len = usize::try_from(file.metadata()?.len())
                .map_err(|_| std::io::Error::other("file too large to map"))?;
            if len == 0 {
                return Ok(Mapped { ptr: std::ptr::null_mut(), len: 0 }); // mmap refuses length 0
            }
            // SAFETY: a fresh read-only private mapping of an open file descriptor; checked for
            // MAP_FAILED. The descriptor may be closed afterwards; the mapping stays valid.
            let ptr = unsafe { mmap(std::ptr::null_mut(), len, PROT_READ, MAP_PRIVATE, file.as_raw_fd(), 0) };
            if ptr as isize == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(Mapped { ptr, len })
        }

        pub fn bytes(&self) -> &[u8] {
            if self.len == 0 {
                return &[];
            }
            // SAFETY: ptr points to len readable bytes until Drop unmaps them. The plan must not be
            // truncated while it is read (dynsel replaces plans atomically, so it never is).
            unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
        }
    }

    impl Drop for Mapped {
        fn drop(&mut self) {
            if self.len != 0 {
                // SAFETY: unmapping exactly the region mmap returned.
                unsafe { munmap(self.ptr, self.len) };
            }
        }
    }
}

#[cfg(not(all(any(target_os = "linux", target_os = "macos"), target_pointer_width = "64")))]
mod mapped {
    use std::fs::File;
    use std::io::Read;

    /// Fallback without mmap: the file's bytes read into memory.
    pub struct Mapped(Vec<u8>);

    impl Mapped {
        pub fn open(mut file: &File) -> std::io::Result<Mapped> {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(Mapped(bytes))
        }

        pub fn bytes(&self) -> &[u8] {
            &self.0
        }
    }
}

use mapped::Mapped;

fn map(path: &str) -> Result<Mapped, String> {
    let file = File::open(path).map_err(|e| format!("{path}: {e}"))?;
    Mapped::open(&file).map_err(|e| format!("{path}: mmap: {e}"))
}

/// Little-endian unsigned integer of `width` (4 or 8) bytes at the start of `bytes`.
fn load_le(bytes: &[u8], width: usize) -> u64 {
    if width == 4 {
        u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64
    } else {
        u64::from_le_bytes(bytes[..8].try_into().unwrap())
    }
}

// ------------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), small and unoptimised.

struct Sha256 {
    h: [u32; 8],
    block: [u8; 64],
    fill: usize,
    total: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            h: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
            ],
            block: [0; 64],
            fill: 0,
            total: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = data.len().min(64 - self.fill);
            self.block[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == 64 {
                let block = self.block;
                self.compress(&block);
                self.fill = 0;
            }
        }
    }

    fn hexdigest(mut self) -> String {
        let bits = self.total.wrapping_mul(8);
        let mut pad = [0u8; 72];
        pad[0] = 0x80;
        let pad_len = if self.fill < 56 { 56 - self.fill } else { 120 - self.fill };
        pad[pad_len..pad_len + 8].copy_from_slice(&bits.to_be_bytes());
        self.update(&pad[..pad_len + 8]);
        self.h.iter().map(|w| format!("{w:08x}")).collect()
    }

    fn compress(&mut self, p: &[u8; 64]) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(p[4 * i..4 * i + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (state, v) in self.h.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *state = state.wrapping_add(v);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// manifest.json: "index_dtype" and two "files" entries, found by string search (see the module comment).

/// The text from the first value (past the ':' and any blanks) of a key `"key"` on, or None. A quoted
/// word followed by ':' is a key: a JSON string cannot hold an unescaped quote, so a string's contents
/// (a class name, say) never match.
fn find_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let mut from = 0;
    while let Some(at) = text[from..].find(&quoted) {
        let after = &text[from + at + quoted.len()..];
        if let Some(value) = after.trim_start().strip_prefix(':') {
            return Some(value.trim_start());
        }
        from += at + 1;
    }
    None
}

fn index_width(text: &str, manifest_path: &str) -> Result<usize, String> {
    let rest = find_value(text, "index_dtype").ok_or_else(|| format!("{manifest_path}: no \"index_dtype\" key"))?;
    let malformed = || format!("{manifest_path}: malformed \"index_dtype\"");
    let rest = rest.strip_prefix('"').ok_or_else(malformed)?;
    let dtype = &rest[..rest.find('"').ok_or_else(malformed)?];
    match dtype {
        "<u4" => Ok(4),
        "<u8" => Ok(8),
        other => Err(format!("{manifest_path}: unsupported index_dtype \"{other}\"")),
    }
}

/// What the manifest records for one data file: "files": {NAME: {"bytes": N, "sha256": "HEX"}, ...}.
struct FileRecord {
    bytes: u64,
    sha256: String,
}

fn file_record(text: &str, manifest_path: &str, name: &str) -> Result<FileRecord, String> {
    let missing = || format!("{manifest_path}: no \"files\" entry with \"bytes\" and \"sha256\" for {name}");
    let entry = find_value(text, "files")
        .and_then(|files| find_value(files, name))
        .and_then(|value| value.strip_prefix('{'))
        .ok_or_else(missing)?;
    let entry = &entry[..entry.find('}').ok_or_else(missing)?]; // flat: no nested objects
    let bytes = find_value(entry, "bytes")
        .and_then(|v| v[..v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len())].parse().ok())
        .ok_or_else(missing)?;
    let sha256 = find_value(entry, "sha256")
        .and_then(|v| v.strip_prefix('"'))
        .and_then(|v| Some(&v[..v.find('"')?]))
        .ok_or_else(missing)?;
    Ok(FileRecord { bytes, sha256: sha256.to_string() })
}

/// The sha256 of a file's bytes, after checking their size and hash against the manifest's record.
fn check_file(dir: &str, name: &str, bytes: &[u8], want: &FileRecord) -> Result<String, String> {
    if bytes.len() as u64 != want.bytes {
        return Err(format!(
            "{dir}/{name}: {} bytes, manifest.json says {} (modified or truncated); rebuild the plan",
            bytes.len(),
            want.bytes
        ));
    }
    let mut sha = Sha256::new();
    sha.update(bytes);
    let got = sha.hexdigest();
    if got != want.sha256 {
        return Err(format!(
            "{dir}/{name}: checksum mismatch (sha256 {got}, manifest.json says {}); rebuild the plan",
            want.sha256
        ));
    }
    Ok(got)
}

// ------------------------------------------------------------------------------------------------

fn run(args: &[String]) -> Result<(), String> {
    let dir = &args[1];
    let manifest_path = format!("{dir}/manifest.json");
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("{manifest_path}: {e} (is this a dynsel plan directory?)"))?;
    let width = index_width(&manifest, &manifest_path)?;
    let indices_record = file_record(&manifest, &manifest_path, "indices.bin")?;
    let offsets_record = file_record(&manifest, &manifest_path, "offsets.bin")?;
    let indices_map = map(&format!("{dir}/indices.bin"))?;
    let offsets_map = map(&format!("{dir}/offsets.bin"))?;
    let (indices, offsets_bytes) = (indices_map.bytes(), offsets_map.bytes());

    if indices.len() % width != 0 || offsets_bytes.len() % 8 != 0 || offsets_bytes.len() < 8 {
        return Err(format!("{dir}: indices.bin/offsets.bin have impossible sizes; rebuild the plan"));
    }
    let n_indices = (indices.len() / width) as u64;
    let offsets: Vec<u64> = offsets_bytes.chunks_exact(8).map(|b| load_le(b, 8)).collect();
    let epochs = offsets.len() - 1;
    if offsets.windows(2).any(|p| p[0] > p[1]) {
        return Err(format!("{dir}: offsets.bin is not non-decreasing; rebuild the plan"));
    }
    if offsets[0] != 0 || offsets[epochs] != n_indices {
        return Err(format!("{dir}: offsets.bin does not span indices.bin; rebuild the plan"));
    }
    check_file(dir, "offsets.bin", offsets_bytes, &offsets_record)?;
    let indices_sha256 = check_file(dir, "indices.bin", indices, &indices_record)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    use std::io::Write;
    let write_err = |e: std::io::Error| format!("stdout: {e}");

    if let Some(arg) = args.get(2) {
        // one epoch's ids, one per line
        let e = arg
            .parse::<usize>()
            .ok()
            .filter(|&e| e < epochs)
            .ok_or_else(|| format!("epoch {arg} is not in this plan (it has {epochs} epochs)"))?;
        let (start, stop) = (offsets[e] as usize, offsets[e + 1] as usize);
        for chunk in indices[start * width..stop * width].chunks_exact(width) {
            writeln!(out, "{}", load_le(chunk, width)).map_err(write_err)?;
        }
        return out.flush().map_err(write_err);
    }

    for e in 0..epochs {
        writeln!(out, "epoch {e} count {}", offsets[e + 1] - offsets[e]).map_err(write_err)?;
    }
    writeln!(out, "sha256 {indices_sha256}").map_err(write_err)?;
    out.flush().map_err(write_err)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 && args.len() != 3 {
        eprintln!("usage: {} PLAN_DIR [EPOCH]", args.first().map(String::as_str).unwrap_or("read_plan"));
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("read_plan: {message}");
            ExitCode::from(2)
        }
    }
}
