// Compiles proto/ with protox (pure Rust), so a fresh checkout builds without protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "tensorflow_serving/apis/prediction_service.proto",
            "tensorflow_serving/apis/model_service.proto",
            "tensorflow/core/protobuf/saved_model.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
