//! Several "hosts" on one machine: network namespaces the test makes, joined by a bridge,
//! with private addresses the test picks, and removed — namespaces, links, processes — on
//! drop, also when the test panics.
//!
//! [`Lab::new`] makes `n` host namespaces `plough-t-<tag>-<i>` and one switch namespace
//! `plough-t-<tag>-sw` holding a bridge; host `i` has `eth0` (a veth whose other end is a
//! port of the bridge) with `10.X.Y.(i+1)/24`, where `X.Y` is random and checked to be
//! unused by this machine's own addresses and routes and by other labs. Nothing is
//! created in the machine's own namespace, so no traffic of a lab ever leaves its
//! namespaces. Programs run inside a host with [`Lab::spawn`] (`ip netns exec`, their
//! own process group, killed and reaped on drop); in-process code runs there on a thread
//! of its own that entered the namespace ([`Lab::in_host`]), which is where a test's
//! client sockets live.
//!
//! Needs root and iproute2's `ip`: [`Lab::new`] says [`LabError::Unavailable`] otherwise,
//! and tests skip loudly on it (see [`skip_without_netns`]).

use std::io;
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdout, Command, Stdio};

/// The prefix of every namespace a lab makes (a leak check can look for it).
pub const NETNS_PREFIX: &str = "plough-t-";

/// A lab could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// This machine or user cannot make namespaces (not root, no `ip`): skip.
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    /// An `ip` command failed.
    #[error("`ip {args}` failed: {detail}")]
    Ip {
        /// Its arguments.
        args: String,
        /// Its stderr, or why it did not run.
        detail: String,
    },
}

/// One host of a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabHost {
    /// Its namespace's name.
    pub ns: String,
    /// Its address on the lab's network (on `eth0`).
    pub ip: Ipv4Addr,
}

/// A set of namespaces joined by a bridge; everything it made goes on drop.
#[derive(Debug)]
pub struct Lab {
    hosts: Vec<LabHost>,
    /// Every namespace made, the switch included, in order of creation.
    made: Vec<String>,
    children: Vec<Child>,
}

/// Runs `ip` with `args`.
fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output();
    let fail = |detail: String| LabError::Ip { args: args.join(" "), detail };
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_owned())),
        Err(e) => Err(fail(e.to_string())),
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u32::from_ne_bytes(b)
}

/// Why this process cannot make a lab, if it cannot.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        _ => Some("iproute2's `ip` is not installed".into()),
    }
}

/// A lab of `n` hosts, or `None` after printing why this machine cannot have one (the
/// test then returns: a skip, said loudly, not a pass in silence).
///
/// # Panics
/// When the machine could have a lab but making it failed.
pub fn skip_without_netns(test: &str, n: usize) -> Option<Lab> {
    match Lab::new(n) {
        Ok(lab) => Some(lab),
        Err(LabError::Unavailable(why)) => {
            eprintln!("SKIPPED {test}: {why}");
            println!("SKIPPED {test}: {why}");
            None
        }
        Err(e) => panic!("{test}: cannot make the network lab: {e}"),
    }
}

impl Lab {
    /// Makes `n` hosts on a bridge (see the module docs).
    ///
    /// # Errors
    /// [`LabError::Unavailable`] without root or `ip`; [`LabError::Ip`] when a step fails
    /// (whatever was made is removed again).
    pub fn new(n: usize) -> Result<Lab, LabError> {
        if let Some(why) = unavailable() {
            return Err(LabError::Unavailable(why));
        }
        let tag = format!("{:08x}", random_u32());
        let subnet = free_subnet()?;
        let mut lab = Lab { hosts: Vec::new(), made: Vec::new(), children: Vec::new() };
        let switch = format!("{NETNS_PREFIX}{tag}-sw");
        ip(&["netns", "add", &switch]).map_err(|e| match e {
            LabError::Ip { detail, .. } if detail.contains("ermission") => {
                LabError::Unavailable(format!("`ip netns add` is not permitted: {detail}"))
            }
            e => e,
        })?;
        lab.made.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{NETNS_PREFIX}{tag}-{i}");
            ip(&["netns", "add", &ns])?;
            lab.made.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            let host_ip = Ipv4Addr::new(10, subnet.0, subnet.1, (i + 1) as u8);
            ip(&["-n", &ns, "addr", "add", &format!("{host_ip}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            lab.hosts.push(LabHost { ns, ip: host_ip });
        }
        Ok(lab)
    }

    /// Host `i`.
    ///
    /// # Panics
    /// When there is no host `i`.
    pub fn host(&self, i: usize) -> &LabHost {
        &self.hosts[i]
    }

    /// Every namespace this lab made (the switch's included).
    pub fn namespaces(&self) -> &[String] {
        &self.made
    }

    /// Runs `program args` inside host `i` (`ip netns exec`), in a process group of its
    /// own, stdout piped back; the lab kills (the group) and reaps it on drop.
    ///
    /// # Errors
    /// The program could not be started.
    pub fn spawn(
        &mut self,
        i: usize,
        program: &str,
        args: &[&str],
    ) -> io::Result<(u32, ChildStdout)> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let out = child.stdout.take().expect("piped stdout");
        let pid = child.id();
        self.children.push(child);
        Ok((pid, out))
    }

    /// The pids of the programs [`Lab::spawn`] started (each its group's leader).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Runs `f` on a thread that entered host `i`'s network namespace (so every socket
    /// it makes is that host's), and returns its result. A panic in `f` is resumed here.
    ///
    /// # Panics
    /// When the namespace cannot be entered, or `f` panics.
    pub fn in_host<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.hosts[i].ns);
        std::thread::scope(|s| {
            let joined = s
                .spawn(|| {
                    let ns = std::fs::File::open(&path).expect("the namespace's file");
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&ns),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .expect("setns into the host's network namespace");
                    f()
                })
                .join();
            joined.unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Sets host `i`'s link up or down (a cut cable).
    ///
    /// # Errors
    /// The `ip` command failed.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), LabError> {
        ip(&["-n", &self.hosts[i].ns, "link", "set", "eth0", if up { "up" } else { "down" }])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            // The whole group: whatever the program started goes with it.
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::KILL,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        // Hosts first (their veths go with them, and so do the bridge's ports), the
        // switch last.
        for ns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("netns lab: could not remove {ns}: {e}");
            }
        }
    }
}

/// A random `X.Y` for `10.X.Y.0/24` that nothing on this machine uses: not an address or
/// route of its own namespace, nor of another lab's.
fn free_subnet() -> Result<(u8, u8), LabError> {
    let mut seen = ip_output(&["-o", "-4", "addr", "show"]);
    seen.push_str(&ip_output(&["-4", "route", "show", "table", "all"]));
    for ns in ip_output(&["netns", "list"]).lines() {
        let name = ns.split_whitespace().next().unwrap_or_default();
        if name.starts_with(NETNS_PREFIX) {
            seen.push_str(&ip_output(&["-n", name, "-o", "-4", "addr", "show"]));
        }
    }
    for _ in 0..64 {
        let r = random_u32();
        let (x, y) = (200 + (r % 50) as u8, (r >> 8) as u8);
        if !seen.contains(&format!("10.{x}.{y}.")) {
            return Ok((x, y));
        }
    }
    Err(LabError::Ip { args: "-o -4 addr show".into(), detail: "no free 10.x.y.0/24".into() })
}

/// The namespaces whose name starts with `prefix` that exist now.
pub fn namespaces_named(prefix: &str) -> Vec<String> {
    ip_output(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}
