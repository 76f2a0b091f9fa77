//! Where the daemons are, as the launcher that started them says: a Slurm allocation's
//! node list, or a Kubernetes StatefulSet's pods. A root reads what its own launcher gave
//! it (an environment variable, a DNS name) and turns it into the `tls://host@ip:port`
//! addresses [`plough::Actor::attach_host`] takes.
//!
//! ```no_run
//! # async fn f(root: plough::Actor) -> Result<(), Box<dyn std::error::Error>> {
//! // In a Slurm job: one `plough-host` per node on port 7070 (`host/launchers/`).
//! let nodes = plough_host::discover::slurm_nodes()?; // SLURM_JOB_NODELIST, expanded
//! for addr in plough_host::discover::resolve_all(&nodes, 7070)? {
//!     let host = root.attach_host(&addr).await?; // tls://<node>@<its ip>:7070
//! #   let _ = host;
//! }
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! # async fn f(root: plough::Actor) -> Result<(), Box<dyn std::error::Error>> {
//! // In a Kubernetes pod: the StatefulSet `plough` behind the headless service `plough`.
//! let pods = plough_host::discover::stateful_set("plough", "plough", 3)?;
//! for addr in plough_host::discover::resolve_all(&pods, 7070)? {
//!     let host = root.attach_host(&addr).await?; // tls://plough-<i>@<pod ip>:7070
//! #   let _ = host;
//! }
//! # Ok(()) }
//! ```
//!
//! The certificate of each host must name it as it is found here (`plough ca issue DIR
//! <name>`): the node name for Slurm, the pod's name (`<set>-<i>`) for Kubernetes.

use crate::limits::{MAX_HOSTLIST_HOSTS, MAX_REPLICAS};
use plough::Address;
use std::net::{SocketAddr, ToSocketAddrs};

/// The variable Slurm sets in a job's environment to the nodes it was given.
pub const SLURM_NODELIST_VAR: &str = "SLURM_JOB_NODELIST";

/// A host as a launcher names it: the name its certificate carries, and the DNS name to
/// resolve for its address (the same for Slurm; `<pod>.<service>` for Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundHost {
    /// The name its certificate carries (`tls://<name>@…`).
    pub name: String,
    /// What to resolve to reach it.
    pub dns: String,
}

/// Discovery failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoverError {
    /// A hostlist expression is malformed.
    #[error("bad hostlist `{expr}` at byte {at}: {why}")]
    Hostlist {
        /// The expression.
        expr: String,
        /// Where it went wrong.
        at: usize,
        /// What is wrong there.
        why: &'static str,
    },
    /// A hostlist expands to more than [`MAX_HOSTLIST_HOSTS`] names.
    #[error("hostlist `{expr}` names more than {MAX_HOSTLIST_HOSTS} hosts")]
    TooManyHosts {
        /// The expression.
        expr: String,
    },
    /// The launcher's variable is not set (not inside a job of that launcher).
    #[error("`{var}` is not set (not inside a Slurm job?)")]
    NotSet {
        /// The variable.
        var: &'static str,
    },
    /// A StatefulSet name or service is not a DNS label, or replicas are out of range.
    #[error("bad StatefulSet `{set}` / service `{service}` / {replicas} replicas: {why}")]
    StatefulSet {
        /// The set's name.
        set: String,
        /// The headless service's name.
        service: String,
        /// How many replicas.
        replicas: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A host's DNS name did not resolve to an IPv4 or IPv6 address.
    #[error("cannot resolve `{dns}`: {detail}")]
    Resolve {
        /// The name.
        dns: String,
        /// The resolver's error.
        detail: String,
    },
}

fn bad(expr: &str, at: usize, why: &'static str) -> DiscoverError {
    DiscoverError::Hostlist { expr: expr.to_owned(), at, why }
}

/// Expands a Slurm hostlist expression — `node[01-04,07],gpu-[1-2]`,
/// `rack[1-2]-n[1-3]` — into host names, in order (as `scontrol show hostnames` does).
/// A range keeps the width of its lower bound (`[01-04]` is `01`…`04`); several bracket
/// groups in one name multiply out, the first varying slowest.
///
/// # Errors
/// [`DiscoverError::Hostlist`] for an unbalanced or nested bracket, an empty name or
/// range, a bound that is not decimal, or a range whose upper bound is below its lower;
/// [`DiscoverError::TooManyHosts`] past [`MAX_HOSTLIST_HOSTS`].
pub fn expand_hostlist(expr: &str) -> Result<Vec<String>, DiscoverError> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut depth = 0usize;
    for (i, c) in expr.char_indices() {
        match c {
            '[' if depth > 0 => return Err(bad(expr, i, "nested `[`")),
            '[' => depth = 1,
            ']' if depth == 0 => return Err(bad(expr, i, "`]` without `[`")),
            ']' => depth = 0,
            ',' if depth == 0 => {
                expand_one(expr, start, &expr[start..i], &mut out)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err(bad(expr, expr.len(), "`[` without `]`"));
    }
    expand_one(expr, start, &expr[start..], &mut out)?;
    Ok(out)
}

/// Expands one comma-free (outside brackets) item at byte `at` of `expr` into `out`.
fn expand_one(
    expr: &str,
    at: usize,
    item: &str,
    out: &mut Vec<String>,
) -> Result<(), DiscoverError> {
    if item.is_empty() {
        return Err(bad(expr, at, "empty host name"));
    }
    let mut names = vec![String::new()];
    let mut rest = item;
    let mut pos = at;
    while !rest.is_empty() {
        let Some(open) = rest.find('[') else {
            check_literal(expr, pos, rest)?;
            names.iter_mut().for_each(|n| n.push_str(rest));
            break;
        };
        let (lit, tail) = rest.split_at(open);
        check_literal(expr, pos, lit)?;
        let close = tail.find(']').expect("balanced: checked by the caller");
        let values = expand_ranges(expr, pos + open + 1, &tail[1..close])?;
        let total = names.len().saturating_mul(values.len()).saturating_add(out.len());
        if total > MAX_HOSTLIST_HOSTS {
            return Err(DiscoverError::TooManyHosts { expr: expr.to_owned() });
        }
        names =
            names.iter().flat_map(|n| values.iter().map(move |v| format!("{n}{lit}{v}"))).collect();
        pos += open + close + 1;
        rest = &tail[close + 1..];
    }
    out.extend(names);
    Ok(())
}

/// A literal part of a host name: letters, digits, `-`, `_`, `.`.
fn check_literal(expr: &str, at: usize, lit: &str) -> Result<(), DiscoverError> {
    match lit.char_indices().find(|(_, c)| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        Some((i, _)) => Err(bad(expr, at + i, "not a host name character")),
        None => Ok(()),
    }
}

/// `01-04,07` (at byte `at` of `expr`) into its zero-padded values.
fn expand_ranges(expr: &str, at: usize, body: &str) -> Result<Vec<String>, DiscoverError> {
    let mut values = Vec::new();
    let mut pos = at;
    for part in body.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str, at: usize| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(expr, at, "a range bound is not a decimal number"));
            }
            s.parse::<u64>().map_err(|_| bad(expr, at, "a range bound is too large"))
        };
        let (l, h) = (number(lo, pos)?, number(hi, pos + lo.len() + 1)?);
        if h < l {
            return Err(bad(expr, pos, "a range's upper bound is below its lower"));
        }
        if (h - l) as usize >= MAX_HOSTLIST_HOSTS
            || values.len() + ((h - l) as usize) >= MAX_HOSTLIST_HOSTS
        {
            return Err(DiscoverError::TooManyHosts { expr: expr.to_owned() });
        }
        let width = lo.len();
        values.extend((l..=h).map(|v| format!("{v:0width$}")));
        pos += part.len() + 1;
    }
    Ok(values)
}

/// The nodes of the Slurm job this process runs in ([`SLURM_NODELIST_VAR`], expanded).
///
/// # Errors
/// [`DiscoverError::NotSet`] outside a Slurm job; the errors of [`expand_hostlist`].
pub fn slurm_nodes() -> Result<Vec<FoundHost>, DiscoverError> {
    let list = std::env::var(SLURM_NODELIST_VAR)
        .map_err(|_| DiscoverError::NotSet { var: SLURM_NODELIST_VAR })?;
    Ok(expand_hostlist(&list)?.into_iter().map(|n| FoundHost { dns: n.clone(), name: n }).collect())
}

/// Whether `s` is a DNS label as Kubernetes names objects (RFC 1123: lowercase letters,
/// digits and `-`, at most 63, starting and ending with a letter or digit).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The pods of StatefulSet `set` with `replicas` replicas behind the headless service
/// `service` (in the root's own namespace): `<set>-<i>`, reached at `<set>-<i>.<service>`,
/// for `i` in `0..replicas`, as Kubernetes names them.
///
/// # Errors
/// [`DiscoverError::StatefulSet`] when a name is not a DNS label, a pod's name would be
/// longer than one, or `replicas` is 0 or above [`MAX_REPLICAS`].
pub fn stateful_set(
    set: &str,
    service: &str,
    replicas: u32,
) -> Result<Vec<FoundHost>, DiscoverError> {
    let fail = |why| DiscoverError::StatefulSet {
        set: set.to_owned(),
        service: service.to_owned(),
        replicas,
        why,
    };
    if replicas == 0 || replicas > MAX_REPLICAS {
        return Err(fail("replicas must be 1 or more, and at most MAX_REPLICAS"));
    }
    if !is_dns_label(set) || !is_dns_label(service) {
        return Err(fail("the set and the service must be DNS labels (RFC 1123)"));
    }
    if !is_dns_label(&format!("{set}-{}", replicas - 1)) {
        return Err(fail("a pod's name would be longer than a DNS label"));
    }
    Ok((0..replicas)
        .map(|i| {
            let name = format!("{set}-{i}");
            FoundHost { dns: format!("{name}.{service}"), name }
        })
        .collect())
}

/// The daemon address of `host` on `port`: `tls://<name>@<ip>:<port>`, `ip` the first
/// address its DNS name resolves to (the system resolver: `/etc/hosts`, DNS).
///
/// # Errors
/// [`DiscoverError::Resolve`] when the name does not resolve.
pub fn resolve(host: &FoundHost, port: u16) -> Result<Address, DiscoverError> {
    let fail = |detail: String| DiscoverError::Resolve { dns: host.dns.clone(), detail };
    let addr: SocketAddr = (host.dns.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no address".into()))?;
    Ok(Address::Tls { name: Some(host.name.as_str().into()), addr })
}

/// [`resolve`] for each host, in order.
///
/// # Errors
/// The first host that does not resolve.
pub fn resolve_all(hosts: &[FoundHost], port: u16) -> Result<Vec<Address>, DiscoverError> {
    hosts.iter().map(|h| resolve(h, port)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slurm_hostlists_expand_as_scontrol_does() {
        let names = expand_hostlist("node[01-04,07],gpu-[1-2],login").unwrap();
        assert_eq!(
            names,
            ["node01", "node02", "node03", "node04", "node07", "gpu-1", "gpu-2", "login"]
        );
        let grid = expand_hostlist("r[1-2]-n[8-10]").unwrap();
        assert_eq!(grid, ["r1-n8", "r1-n9", "r1-n10", "r2-n8", "r2-n9", "r2-n10"]);
        assert_eq!(expand_hostlist("n[7]x").unwrap(), ["n7x"]);
    }

    #[test]
    fn bad_hostlists_are_typed_errors_that_say_where() {
        let why = |e: &str| match expand_hostlist(e) {
            Err(DiscoverError::Hostlist { at, why, .. }) => (at, why),
            other => panic!("{e}: {other:?}"),
        };
        assert_eq!(why("n[1-2"), (5, "`[` without `]`"));
        assert_eq!(why("n1-2]"), (4, "`]` without `[`"));
        assert_eq!(why("n[[1]]").1, "nested `[`");
        assert_eq!(why("a,,b"), (2, "empty host name"));
        assert_eq!(why("n[3-1]").1, "a range's upper bound is below its lower");
        assert_eq!(why("n[a-2]").1, "a range bound is not a decimal number");
        assert_eq!(why("n[]").1, "a range bound is not a decimal number");
        assert_eq!(why("n o").1, "not a host name character");
        assert!(matches!(
            expand_hostlist("n[1-99999999]"),
            Err(DiscoverError::TooManyHosts { .. })
        ));
        assert!(matches!(
            expand_hostlist("a[1-300]b[1-300]"),
            Err(DiscoverError::TooManyHosts { .. })
        ));
    }

    #[test]
    fn stateful_set_pods_are_named_as_kubernetes_names_them() {
        let pods = stateful_set("plough", "plough-hosts", 3).unwrap();
        let names: Vec<_> = pods.iter().map(|p| (p.name.as_str(), p.dns.as_str())).collect();
        assert_eq!(
            names,
            [
                ("plough-0", "plough-0.plough-hosts"),
                ("plough-1", "plough-1.plough-hosts"),
                ("plough-2", "plough-2.plough-hosts")
            ]
        );
        for (set, service, n) in [("Plough", "s", 1), ("p", "-s", 1), ("p", "s", 0)] {
            assert!(matches!(
                stateful_set(set, service, n),
                Err(DiscoverError::StatefulSet { .. })
            ));
        }
        let long = "a".repeat(62);
        assert!(stateful_set(&long, "s", 10).is_err(), "`{long}-9` is 64 bytes");
    }

    #[test]
    fn a_host_resolves_to_its_tls_address_and_an_unknown_one_is_a_typed_error() {
        let local = FoundHost { name: "node-1".into(), dns: "localhost".into() };
        let Address::Tls { name, addr } = resolve(&local, 7070).unwrap() else { panic!() };
        assert_eq!((name.as_deref(), addr.port()), (Some("node-1"), 7070));
        assert!(addr.ip().is_loopback());
        let none = FoundHost { name: "x".into(), dns: "no-such-host.invalid".into() };
        assert!(matches!(resolve(&none, 1), Err(DiscoverError::Resolve { .. })));
    }

    /// A bracket group: its (lower bound, count - 1, width) ranges, and the literal after.
    type Group = (Vec<(u64, u64, usize)>, String);

    /// One name's parts: a literal prefix, then bracket groups.
    fn name_parts() -> impl Strategy<Value = (String, Vec<Group>)> {
        let lit = "[a-z][a-z0-9_.-]{0,5}";
        let range = (0u64..200, 0u64..4, 1usize..4);
        let group = (proptest::collection::vec(range, 1..3), "[a-z0-9-]{0,3}");
        (lit, proptest::collection::vec(group, 0..3))
    }

    proptest! {
        /// Structure → expression text → expanded names gives the names the structure
        /// means, in order.
        #[test]
        fn expansion_round_trips(items in proptest::collection::vec(name_parts(), 1..4)) {
            let mut text = Vec::new();
            let mut want = Vec::new();
            for (prefix, groups) in &items {
                let mut t = prefix.clone();
                let mut names = vec![prefix.clone()];
                for (ranges, suffix) in groups {
                    let body: Vec<String> = ranges
                        .iter()
                        .map(|&(lo, n, w)| format!("{lo:0w$}-{:0w$}", lo + n))
                        .collect();
                    t.push_str(&format!("[{}]{suffix}", body.join(",")));
                    let values: Vec<String> = ranges
                        .iter()
                        .flat_map(|&(lo, n, w)| (lo..=lo + n).map(move |v| format!("{v:0w$}")))
                        .collect();
                    names = names
                        .iter()
                        .flat_map(|p| values.iter().map(move |v| format!("{p}{v}{suffix}")))
                        .collect();
                }
                text.push(t);
                want.extend(names);
            }
            let expr = text.join(",");
            prop_assert_eq!(expand_hostlist(&expr).unwrap(), want);
        }

        /// Whatever the input, expansion gives names or a typed error, never a panic.
        #[test]
        fn any_input_gives_names_or_a_typed_error(expr in "[a-c0-9\\[\\],-]{0,24}") {
            if let Ok(names) = expand_hostlist(&expr) {
                prop_assert!(names.len() <= MAX_HOSTLIST_HOSTS);
                prop_assert!(names.iter().all(|n| !n.is_empty()));
            }
        }
    }
}
