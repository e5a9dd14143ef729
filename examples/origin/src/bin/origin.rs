//! `origin`: runs one example origin until Ctrl-C.

use std::net::SocketAddr;

use clap::Parser;
use wasmgate_example_origin::Origin;

/// A tiny HTTP origin that answers with its name.
#[derive(Parser)]
struct Args {
    /// The name it answers with.
    #[arg(long)]
    name: String,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Refuse (403) requests whose Host is not this.
    #[arg(long)]
    expect_host: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let origin = Origin::start(&args.name, args.listen, args.expect_host.clone()).await?;
    match &args.expect_host {
        Some(host) => println!("origin {} on http://{} (expects Host: {host})", origin.name(), origin.addr()),
        None => println!("origin {} on http://{}", origin.name(), origin.addr()),
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
