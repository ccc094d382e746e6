//! Prints the phonemes espeak-ng gives each argument, as the voice sees them.
//! `cargo run -p sandpiper-voice --example phonemes -- "Hello, world!"`

fn main() -> anyhow::Result<()> {
    let espeak = sandpiper_voice::Espeak::new("en-us")?;
    for text in std::env::args().skip(1) {
        println!("{:?}", espeak.phonemize(&text)?);
    }
    Ok(())
}
