//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../../proto";
    let files = [
        format!("{proto_dir}/master_worker.proto"),
        format!("{proto_dir}/master_agent.proto"),
        format!("{proto_dir}/master_admin.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(&files, [proto_dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
