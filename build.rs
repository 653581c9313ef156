fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // A fixed-address executable: its relocated tables (vtables, GOT) are resolved at link
    // time, so every monitor shares those pages with the daemon instead of dirtying its own.
    println!("cargo:rustc-link-arg-bin=berth=-no-pie");
    tonic_prost_build::configure()
        // Registry secrets: src/cri/mod.rs writes a Debug that redacts them.
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_protos(&["proto/runtime/v1/api.proto", "proto/berth/images/v1/images.proto"], &["proto"])?;
    Ok(())
}
