//! Network namespaces for fault tests: each host (master, workers, store) in a
//! namespace of its own, joined by a veth pair to one bridge in the test's
//! namespace, so a test can cut a host's link (`cut`/`heal`) or make it slow
//! and lossy (`degrade`: Linux's `tc netem`, or iptables and `tbf` where the
//! kernel lacks netem). Everything is removed on drop,
//! even when the test fails.
//!
//! Needs root (or CAP_NET_ADMIN) and `ip`/`tc`; [`Net::new`] returns `None`
//! with a message where namespaces cannot be made, and the test skips.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// One host of a [`Net`]: its namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    /// Namespace name (`ip netns exec <ns> …`).
    pub ns: String,
    /// Its IPv4 address on the test network.
    pub ip: String,
    /// The veth end on the bridge (where cuts and netem apply).
    link: String,
}

/// A test network: a bridge and one namespace per host.
pub struct Net {
    bridge: String,
    hosts: Vec<(String, Host)>,
    /// The address of the test process on the network (the bridge's).
    pub gateway: String,
    /// Whether an iptables FORWARD rule for the bridge was added.
    forwarding: bool,
    /// Loss rules added by `degrade`: (link, probability).
    losses: std::sync::Mutex<Vec<(String, String)>>,
}

/// Adds (`-I`) or deletes (`-D`) the rule accepting traffic across `bridge`.
fn forward(bridge: &str, action: &str) -> Result<(), String> {
    run(
        "iptables",
        &[
            action, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
        ],
    )
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Net {
    /// Makes a network with one namespace per name; `None` (and a line on
    /// stderr saying why) where this machine cannot.
    pub fn new(names: &[&str]) -> Option<Net> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        // A /24 per process (and per net in it): tests run as processes in parallel.
        let subnet = format!("10.{}.{}", 100 + (pid >> 8) % 100 + n * 17 % 50, pid & 255);
        let tag = format!("{pid:x}{n}");
        let mut net = Net {
            bridge: format!("cab{tag}"),
            hosts: Vec::new(),
            gateway: format!("{subnet}.254"),
            forwarding: false,
            losses: std::sync::Mutex::new(Vec::new()),
        };
        let made = (|| {
            ip(&["link", "add", &net.bridge, "type", "bridge"])?;
            // Docker sets the FORWARD policy to DROP, and bridged packets
            // pass through it: let the hosts' traffic through (removed on drop).
            if forward(&net.bridge, "-I").is_ok() {
                net.forwarding = true;
            }
            ip(&[
                "addr",
                "add",
                &format!("{}/24", net.gateway),
                "dev",
                &net.bridge,
            ])?;
            ip(&["link", "set", &net.bridge, "up"])?;
            for (i, name) in names.iter().enumerate() {
                let host = Host {
                    ns: format!("cloudai-{tag}-{name}"),
                    ip: format!("{subnet}.{}", i + 1),
                    link: format!("cav{tag}{i}"),
                };
                ip(&["netns", "add", &host.ns])?;
                net.hosts.push((name.to_string(), host.clone()));
                let inner = format!("cai{tag}{i}");
                ip(&[
                    "link", "add", &host.link, "type", "veth", "peer", "name", &inner,
                ])?;
                ip(&["link", "set", &inner, "netns", &host.ns])?;
                ip(&["link", "set", &host.link, "master", &net.bridge])?;
                ip(&["link", "set", &host.link, "up"])?;
                let ns = host.ns.as_str();
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{}/24", host.ip),
                    "dev",
                    &inner,
                ])?;
                ip(&["-n", ns, "link", "set", &inner, "up"])?;
            }
            Ok::<(), String>(())
        })();
        match made {
            Ok(()) => Some(net),
            Err(error) => {
                eprintln!("SKIPPED: network namespaces are not available here ({error})");
                None
            }
        }
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        &self
            .hosts
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no host {name}"))
            .1
    }

    /// Cuts the host off: its link goes down, nothing passes either way.
    pub fn cut(&self, name: &str) {
        ip(&["link", "set", &self.host(name).link, "down"]).unwrap();
    }

    /// Brings a cut link back.
    pub fn heal(&self, name: &str) {
        ip(&["link", "set", &self.host(name).link, "up"]).unwrap();
    }

    /// Makes the host's link slow and lossy, both ways: with `tc netem`
    /// where the kernel has it (`delay` on each packet, `loss_percent` of them
    /// dropped); where it does not (a kernel without `sch_netem`), losses
    /// come from iptables' `statistic` match and slowness from a `tbf`
    /// bandwidth limit that queues packets (a delay under load, not a fixed
    /// one). Says on stderr which it used.
    pub fn degrade(&self, name: &str, delay: std::time::Duration, loss_percent: u32) {
        let link = self.host(name).link.clone();
        let delay_ms = delay.as_millis().to_string();
        let netem = run(
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                &link,
                "root",
                "netem",
                "delay",
                &format!("{delay_ms}ms"),
                "loss",
                &format!("{loss_percent}%"),
            ],
        );
        if netem.is_ok() {
            eprintln!("{name}: netem delay {delay_ms}ms loss {loss_percent}%");
            return;
        }
        eprintln!("{name}: no netem here; iptables loss {loss_percent}% and a tbf rate limit");
        if !delay.is_zero() {
            run(
                "tc",
                &[
                    "qdisc", "replace", "dev", &link, "root", "tbf", "rate", "64kbit", "burst",
                    "2kb", "latency", "10s",
                ],
            )
            .unwrap();
        }
        if loss_percent > 0 {
            let probability = format!("{:.2}", f64::from(loss_percent) / 100.0);
            for direction in ["--physdev-in", "--physdev-out"] {
                run("iptables", &loss_rule("-I", direction, &link, &probability)).unwrap();
            }
            self.losses
                .lock()
                .unwrap()
                .push((link.clone(), probability));
        }
    }

    /// Takes the host's link back to normal.
    pub fn clear(&self, name: &str) {
        let link = self.host(name).link.clone();
        let _ = run("tc", &["qdisc", "del", "dev", &link, "root"]);
        let mut losses = self.losses.lock().unwrap();
        losses.retain(|(l, probability)| {
            if *l != link {
                return true;
            }
            for direction in ["--physdev-in", "--physdev-out"] {
                let _ = run("iptables", &loss_rule("-D", direction, l, probability));
            }
            false
        });
    }
}

/// The iptables rule dropping `probability` of the packets through `link`.
fn loss_rule<'a>(
    action: &'a str,
    direction: &'a str,
    link: &'a str,
    probability: &'a str,
) -> Vec<&'a str> {
    vec![
        action,
        "FORWARD",
        "-m",
        "physdev",
        direction,
        link,
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        probability,
        "-j",
        "DROP",
    ]
}

impl Drop for Net {
    fn drop(&mut self) {
        let names: Vec<String> = self.hosts.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.clear(&name);
        }
        for (_, host) in &self.hosts {
            // Processes still in the namespace keep it alive: kill them first.
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &host.ns])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = run("kill", &["-9", pid]);
                }
            }
            // The veth pair goes with the namespace.
            let _ = ip(&["netns", "del", &host.ns]);
            let _ = ip(&["link", "del", &host.link]);
        }
        if self.forwarding {
            let _ = forward(&self.bridge, "-D");
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// `ip netns exec <ns> <program>`: a command that runs in the namespace.
pub fn command_in(ns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns]).arg(program);
            command
        }
        None => Command::new(program),
    }
}
