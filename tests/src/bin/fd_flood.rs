//! Helper for `runtime_fd_limits.rs`: floods a listener with connections that never say a
//! word. `fd_flood ADDR N` opens up to N connections to ADDR (`tcp://ip:port` or
//! `uds:///path`; each connect may take 200 ms, a full backlog counts as a failure),
//! prints `held K` (the connects that succeeded), and holds them all until stdin closes.
//! Its own soft `RLIMIT_NOFILE` is raised to the hard limit first.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: plough::Address = args.get(1).expect("ADDR").parse().expect("an address");
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).expect("N");
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let all = rustix::process::Rlimit { current: hard, maximum: hard };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, all).expect("raise NOFILE");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let mut held = Vec::new();
        for _ in 0..n {
            let connect = plough::ipc_wire::connect(&addr);
            if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
                held.push(conn);
            }
        }
        println!("held {}", held.len());
        std::io::Write::flush(&mut std::io::stdout()).ok();
        tokio::task::spawn_blocking(|| {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest);
        })
        .await
        .ok();
        drop(held);
    });
}
