//! Writes the seed corpora into `fuzz/corpus/<target>/`, replacing their files.
//!
//! Run with `cargo run -p vhu-fuzz --example write_corpus`.

use std::path::Path;

/// A target's corpus directory and the function making its seeds.
type Target = (&'static str, fn() -> Vec<(&'static str, Vec<u8>)>);

fn main() -> std::io::Result<()> {
    let targets: [Target; 6] = [
        (vhu_fuzz::frame_decode::CORPUS_DIR, vhu_fuzz::frame_decode::seeds),
        (vhu_fuzz::virtq_chain::CORPUS_DIR, vhu_fuzz::virtq_chain::seeds),
        (vhu_fuzz::fuse_request::CORPUS_DIR, vhu_fuzz::fuse_request::seeds),
        (vhu_fuzz::backend_session::CORPUS_DIR, vhu_fuzz::backend_session::seeds),
        (vhu_fuzz::frontend_session::CORPUS_DIR, vhu_fuzz::frontend_session::seeds),
        (vhu_fuzz::frontend_backend_pair::CORPUS_DIR, vhu_fuzz::frontend_backend_pair::seeds),
    ];
    for (corpus_dir, seeds) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(corpus_dir);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let seeds = seeds();
        let mut total = 0;
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes)?;
            total += bytes.len();
        }
        println!("wrote {} seeds ({total} bytes) to {}", seeds.len(), dir.display());
    }
    Ok(())
}
