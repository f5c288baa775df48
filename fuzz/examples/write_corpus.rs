//! Writes the `frame_decode` seed corpus into `fuzz/corpus/frame_decode/`, replacing its files.
//!
//! Run with `cargo run -p vhu-fuzz --example write_corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(vhu_fuzz::frame_decode::CORPUS_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let seeds = vhu_fuzz::frame_decode::seeds();
    let mut total = 0;
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
        total += bytes.len();
    }
    println!("wrote {} seeds ({total} bytes) to {}", seeds.len(), dir.display());
    Ok(())
}
