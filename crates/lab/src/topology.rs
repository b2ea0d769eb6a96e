//! Building and tearing down one lab: namespaces, veths, addresses, routes and the ruleset.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use crate::child::Children;
use crate::command::check;
use crate::profile::parse_counters;
use crate::{
    netns, Counters, LabError, Profile, Role, CLIENT_GATEWAY, IF_CLIENT, IF_MEDIA, IF_RELAY,
    LINK_PREFIX_LEN, MEDIA_GATEWAY, RELAY_GATEWAY, RELAY_POOL_ADDR, SECOND_RELAY_ADDR,
    UNROUTED_ADDR,
};

/// The leaf end of every link, inside the client, relay and media namespaces.
const IF_LEAF: &str = "eth0";
/// The router's interface that its default route points into.
const IF_SINK: &str = "sink";
/// The other end of the sink veth; it stays down.
const IF_SINK_END: &str = "sink-end";

/// One firewall lab: four namespaces wired through a router that enforces a [`Profile`].
///
/// Dropping it kills the processes spawned in it and deletes its namespaces.
pub struct Lab {
    id: String,
    profile: Profile,
    /// Namespaces created so far, in creation order (deleted in reverse).
    namespaces: Vec<String>,
    pub(crate) children: Children,
    torn_down: bool,
}

impl Lab {
    /// Whether labs can be built on this machine: root, `nft` installed, and a network
    /// namespace can be created, run `nft`, and be deleted. The error says what is missing.
    pub fn available() -> Result<(), String> {
        netns::probe()
    }

    /// Builds a lab for a test, or returns `None` after a loud message when network namespaces
    /// are unavailable here and the environment variable `CI` is unset (or `0`/`false`).
    ///
    /// # Panics
    ///
    /// When labs are unavailable under CI (CI must never skip a lab test), or when building the
    /// lab fails although they are available.
    pub fn start_or_skip(profile: Profile) -> Option<Lab> {
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        if let Err(why) = AVAILABLE.get_or_init(Lab::available) {
            let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
            if ci {
                panic!("firewall lab unavailable under CI ({why}); CI must not skip lab tests");
            }
            eprintln!(
                "\n!!!!!!!!!! SKIPPED: firewall lab unavailable: {why}\n\
                 !!!!!!!!!! (needs root and network namespaces; with CI set this test fails)\n"
            );
            return None;
        }
        match Lab::new(profile) {
            Ok(lab) => Some(lab),
            Err(e) => panic!("could not build the firewall lab: {e}"),
        }
    }

    /// Creates the namespaces, links, addresses, routes and the profile's ruleset.
    ///
    /// Also removes stale labs of dead processes, once per process. On error everything created
    /// so far is deleted again.
    pub fn new(profile: Profile) -> Result<Lab, LabError> {
        let ruleset = profile.ruleset()?;
        static STALE: OnceLock<()> = OnceLock::new();
        STALE.get_or_init(|| match netns::cleanup_stale() {
            Ok(removed) if !removed.is_empty() => {
                eprintln!("lab: removed stale namespaces {removed:?}")
            }
            Ok(_) => {}
            Err(e) => eprintln!("lab: could not remove stale namespaces: {e}"),
        });
        let mut lab = Lab {
            id: netns::next_lab_id(),
            profile,
            namespaces: Vec::new(),
            children: Children::default(),
            torn_down: false,
        };
        // On error `lab` is dropped here, which deletes what was created.
        lab.build(&ruleset)?;
        Ok(lab)
    }

    fn build(&mut self, ruleset: &str) -> Result<(), LabError> {
        for role in Role::ALL {
            let name = self.netns(role);
            netns::add(&name)?;
            self.namespaces.push(name.clone());
            // IPv6 off for the links created later (so no router solicitations or MLD reach the
            // counters), but not for `lo`, which keeps ::1 for programs that bind [::].
            let mut script = String::from(
                "if [ -d /proc/sys/net/ipv6 ]; then \
                 echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; fi",
            );
            if role == Role::Router {
                script.push_str("; echo 1 > /proc/sys/net/ipv4/ip_forward");
            }
            check("ip", &["netns", "exec", &name, "sh", "-c", &script], None)?;
            ip(&name, &["link", "set", "lo", "up"])?;
        }
        let router = self.netns(Role::Router);
        let links = [
            (Role::Client, IF_CLIENT, CLIENT_GATEWAY),
            (Role::Relay, IF_RELAY, RELAY_GATEWAY),
            (Role::Media, IF_MEDIA, MEDIA_GATEWAY),
        ];
        for (role, router_if, gateway) in links {
            let leaf = self.netns(role);
            // Created inside the router namespace, the peer straight inside the leaf's: no
            // interface ever appears in the host's namespace.
            let add = [
                "link", "add", router_if, "type", "veth", "peer", "name", IF_LEAF,
            ];
            ip(&router, &[&add[..], &["netns", &leaf]].concat())?;
            ip(&router, &["addr", "add", &cidr(gateway), "dev", router_if])?;
            ip(&router, &["link", "set", router_if, "up"])?;
            ip(&leaf, &["addr", "add", &cidr(role.addr()), "dev", IF_LEAF])?;
            ip(&leaf, &["link", "set", IF_LEAF, "up"])?;
            ip(
                &leaf,
                &["route", "add", "default", "via", &gateway.to_string()],
            )?;
        }
        let relay = self.netns(Role::Relay);
        for extra in [RELAY_POOL_ADDR, SECOND_RELAY_ADDR] {
            ip(&relay, &["addr", "add", &cidr(extra), "dev", IF_LEAF])?;
        }
        let media = self.netns(Role::Media);
        ip(
            &media,
            &["addr", "add", &format!("{UNROUTED_ADDR}/32"), "dev", "lo"],
        )?;
        // A veth whose other end stays down (no `dummy` driver on every kernel, e.g. this one):
        // what is routed into it is dropped by the device after the forward chain saw it.
        // `arp off` spares the pointless neighbour resolution.
        let add = [
            "link",
            "add",
            IF_SINK,
            "type",
            "veth",
            "peer",
            "name",
            IF_SINK_END,
        ];
        ip(&router, &add)?;
        ip(&router, &["link", "set", IF_SINK, "arp", "off", "up"])?;
        ip(&router, &["route", "add", "default", "dev", IF_SINK])?;
        let nft = ["netns", "exec", &router, "nft", "-f", "-"];
        check("ip", &nft, Some(ruleset))?;
        Ok(())
    }

    /// The lab's unique stem, `cpl<pid>x<n>`; namespace names add one role letter.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The profile the router enforces.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The name of `role`'s namespace, for `ip netns exec` and `ip -n`.
    pub fn netns(&self, role: Role) -> String {
        format!("{}{}", self.id, role.suffix())
    }

    /// `role`'s address (the same in every lab; see the crate constants).
    pub fn addr(&self, role: Role) -> IpAddr {
        IpAddr::V4(role.addr())
    }

    /// All three firewall counters at once.
    pub fn counters(&self) -> Result<Counters, LabError> {
        let out = self.nft(&["list", "counters", "table", "inet", "lab"])?;
        parse_counters(&out).map_err(|detail| LabError::Parse {
            command: format!("nft list counters (in {})", self.netns(Role::Router)),
            detail,
        })
    }

    /// Client packets dropped because they went to an address outside the published set.
    pub fn outside_count(&self) -> Result<u64, LabError> {
        Ok(self.counters()?.outside)
    }

    /// All client packets the profile dropped (random loss not included).
    pub fn dropped_count(&self) -> Result<u64, LabError> {
        Ok(self.counters()?.dropped)
    }

    /// Packets the [`Profile::Loss`] rule dropped, both directions.
    pub fn lost_count(&self) -> Result<u64, LabError> {
        Ok(self.counters()?.lost)
    }

    /// Sets all counters back to zero, e.g. between the phases of a test.
    pub fn reset_counters(&self) -> Result<(), LabError> {
        self.nft(&["reset", "counters", "table", "inet", "lab"])
            .map(drop)
    }

    /// The router's live ruleset with its counters (`nft list ruleset`), for failure messages.
    pub fn ruleset(&self) -> Result<String, LabError> {
        self.nft(&["list", "ruleset"])
    }

    fn nft(&self, args: &[&str]) -> Result<String, LabError> {
        self.ensure_up()?;
        let router = self.netns(Role::Router);
        check(
            "ip",
            &[&["netns", "exec", &router, "nft"], args].concat(),
            None,
        )
    }

    pub(crate) fn ensure_up(&self) -> Result<(), LabError> {
        if self.torn_down {
            return Err(LabError::TornDown(self.id.clone()));
        }
        Ok(())
    }

    /// Kills the processes spawned in the lab and deletes its namespaces (the veths, addresses
    /// and ruleset go with them). Idempotent; also done on drop.
    pub fn teardown(&mut self) -> Result<(), LabError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        self.children.kill_all();
        let mut first_error = None;
        while let Some(name) = self.namespaces.pop() {
            if let Err(e) = netns::delete(&name) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("lab {}: teardown failed: {e}", self.id);
        }
    }
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("profile", &self.profile)
            .field("torn_down", &self.torn_down)
            .finish()
    }
}

/// `ip -n NAMESPACE args…`, which must succeed.
fn ip(namespace: &str, args: &[&str]) -> Result<(), LabError> {
    check("ip", &[&["-n", namespace], args].concat(), None).map(drop)
}

fn cidr(addr: Ipv4Addr) -> String {
    format!("{addr}/{LINK_PREFIX_LEN}")
}
