//! Compiles the demo's protos (`proto/`) with protox, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A folder: cargo reruns this when anything under it changes.
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "user/v1/user.proto",
            "recommendation/v1/recommendation.proto",
            "order/v1/order.proto",
        ],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
