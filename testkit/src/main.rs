//! `fake-provider`: the local OpenAI-format streaming server, as a process (for the
//! browser end-to-end test and for trying the system without a real provider).

use std::net::SocketAddr;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
    let mut key = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => addr = args.next().unwrap_or_default().parse()?,
            "--api-key" => key = args.next(),
            "--help" | "-h" => {
                println!(
                    "fake-provider [--listen ADDR] [--api-key KEY]\nServes OpenAI-format streaming chat completions at http://ADDR/v1."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}; see --help"),
        }
    }
    let fake = aisa_testkit::provider::start(addr, key).await?;
    println!("fake-provider: {}", fake.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
