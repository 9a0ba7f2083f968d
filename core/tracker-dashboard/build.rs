//! Embeds `dashboard/dist`: every file with its gzip (made here, once) and its ETag, as a table in `files.rs`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = manifest.join("../../dashboard/dist");
    println!("cargo::rerun-if-changed={}", dist.display());
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut table = String::from("pub(crate) static FILES: &[crate::File] = &[\n");
    for (i, (name, path)) in files.iter().enumerate() {
        let bytes = std::fs::read(path).expect("a file of dashboard/dist is readable");
        let gz_path = out.join(format!("{i}.gz"));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("gzip in memory");
        std::fs::write(&gz_path, gz.finish().expect("gzip in memory")).expect("OUT_DIR is writable");
        let etag = hex::encode(Sha256::digest(&bytes).get(..8).unwrap_or_default());
        writeln!(
            table,
            "    crate::File {{ name: {name:?}, body: include_bytes!({path:?}), gzip: include_bytes!({gz_path:?}), \
             etag: \"\\\"{etag}\\\"\" }},",
        )
        .expect("writing to a String");
    }
    table.push_str("];\n");
    std::fs::write(out.join("files.rs"), table).expect("OUT_DIR is writable");
}

/// Every file below `dir` as (its path relative to `root` with `/` separators, its full path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("dashboard/dist is readable") {
        let path = entry.expect("dashboard/dist is readable").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let name = path.strip_prefix(root).expect("below the root").to_string_lossy().replace('\\', "/");
            files.push((name, path));
        }
    }
}
