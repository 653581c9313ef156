fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // A fixed-address executable: its relocated tables (vtables, GOT) are resolved at link
    // time, so every monitor shares those pages with the daemon instead of dirtying its own.
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
    tonic_prost_build::configure().compile_protos(&["proto/berth/images/v1/images.proto"], &["proto"])?;
    Ok(())
}
