fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().compile_protos(&["proto/berth/images/v1/images.proto"], &["proto"])?;
    Ok(())
}
