//! Network interfaces and the test datagram.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd as _, OwnedFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::diagnosis::{Diagnosed, Step};
use crate::sys::{self, Errno, SysError};

/// The index of interface `name` in the caller's network namespace.
pub fn interface_index(name: &str) -> Result<u32, NetError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| match errno {
        Errno::ENODEV | Errno::ENXIO | Errno::EINVAL | Errno::ENAMETOOLONG => {
            NetError::NoSuchInterface {
                name: name.to_owned(),
            }
        }
        errno => NetError::Sys {
            step: "looking up the interface",
            source: SysError {
                call: "if_nametoindex",
                errno,
            },
        },
    })
}

/// Checks a `--veth` name before anything is forked. The kernel's own rules (`dev_valid_name`:
/// 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace, where its `isspace` also covers
/// byte 0xa0, so UTF-8 letters such as `à` are refused), and names that would not give the
/// sandbox an interface of that name: with a `%` the kernel takes the name as a template
/// (`v%d` becomes `v0`), `all` and `default` are the directories of the global settings in
/// /proc/sys/net/ipv{4,6}/conf (the kernel refuses them with EINVAL), and `lo` exists already.
/// Control characters, which the kernel accepts, are refused too: they garble every listing.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "interface names have 1 to {} bytes",
            libc::IFNAMSIZ - 1
        ));
    }
    if matches!(name, "." | ".." | "all" | "default" | "lo") {
        return Err(format!(
            "{name:?} is reserved ({})",
            match name {
                "lo" => "the sandbox's loopback interface has that name",
                "all" | "default" =>
                    "the kernel's global interface settings in /proc/sys/net/ipv4/conf have that name",
                _ => "a directory name",
            }
        ));
    }
    if name.contains('%') {
        return Err(
            "'%' makes the kernel take the name as a template (v%d becomes v0): give the exact name"
                .to_owned(),
        );
    }
    // The kernel's isspace(): \t \n \v \f \r, space, and 0xa0.
    if let Some(bad) = bytes
        .iter()
        .find(|b| matches!(b, b'/' | b':' | b' ' | 0x09..=0x0d | 0xa0))
    {
        return Err(format!(
            "interface names cannot contain '/', ':' or whitespace (byte {bad:#04x})"
        ));
    }
    if let Some(bad) = bytes.iter().find(|b| b.is_ascii_control()) {
        return Err(format!(
            "interface names cannot contain control characters (byte {bad:#04x})"
        ));
    }
    Ok(())
}

/// An IPv4 /30 for a veth pair: the host end gets its first address (.1), the sandbox end the
/// second (.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VethSubnet {
    network: Ipv4Addr,
}

impl VethSubnet {
    pub const PREFIX: u8 = 30;

    /// The /30 whose network address is `network`, if its two low bits are zero.
    pub fn new(network: Ipv4Addr) -> Option<Self> {
        (u32::from(network) & 3 == 0).then_some(Self { network })
    }

    pub const fn network(self) -> Ipv4Addr {
        self.network
    }

    pub fn host_address(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn sandbox_address(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2)
    }

    /// Whether this /30 and `network/prefix` share an address (one of two prefixes always
    /// contains the other when they do).
    pub fn overlaps(self, network: Ipv4Addr, prefix: u8) -> bool {
        let common = prefix.min(Self::PREFIX);
        let mask = mask(common);
        u32::from(self.network) & mask == u32::from(network) & mask
    }

    /// Why this /30 must never be handed to a sandbox, if it must not.
    fn reserved(self) -> Option<&'static str> {
        RESERVED
            .iter()
            .find(|(network, prefix, _)| self.overlaps(*network, *prefix))
            .map(|(_, _, why)| *why)
    }

    /// The byte of the lock file that stands for this /30 (each /30 has its own).
    fn lock_offset(self) -> u64 {
        u64::from(u32::from(self.network) >> 2)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Ranges no veth may use, with the reason.
const RESERVED: [(Ipv4Addr, u8, &str); 6] = [
    (
        Ipv4Addr::new(169, 254, 169, 0),
        24,
        "169.254.169.0/24 holds cloud metadata services (169.254.169.254): a sandbox end there would answer for them on the host",
    ),
    (
        Ipv4Addr::new(169, 254, 170, 0),
        24,
        "169.254.170.0/24 holds container metadata services (169.254.170.2, Amazon ECS): a sandbox end there would answer for them on the host",
    ),
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "0.0.0.0/8 means \"this network\" and is not routable",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "127.0.0.0/8 is loopback"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "224.0.0.0/4 is multicast"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "240.0.0.0/4 is reserved (and holds the broadcast address)",
    ),
];

impl fmt::Display for VethSubnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, Self::PREFIX)
    }
}

/// `--veth-subnet CIDR`: a /30 given by its network address, outside the reserved ranges.
impl FromStr for VethSubnet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: give a /30 in CIDR notation, e.g. 10.200.0.0/30"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{text:?}: {prefix:?} is not a prefix length"))?;
        let network = Ipv4Addr::from(u32::from(address) & mask(Self::PREFIX));
        if prefix != Self::PREFIX {
            return Err(format!(
                "{text}: the veth needs a /30 (network address, host end .1, sandbox end .2, broadcast), e.g. {network}/30"
            ));
        }
        let subnet = Self { network };
        if address != network {
            let role = match u32::from(address) & 3 {
                1 => "the host end's address",
                2 => "the sandbox end's address",
                _ => "the broadcast address",
            };
            return Err(format!(
                "{text}: {address} is {role} in {subnet}, not its network address; give {subnet}"
            ));
        }
        if let Some(why) = subnet.reserved() {
            return Err(format!("{text}: {why}"));
        }
        Ok(subnet)
    }
}

/// The /30s the automatic allocation hands out: 169.254.0.0/16 (link-local, so never routed
/// off the host) without its first and last /24 (reserved by RFC 3927) and without
/// 169.254.169.0/24 and 169.254.170.0/24 (metadata services): 252 /24s of 64 /30s each.
pub mod pool {
    use super::VethSubnet;
    use std::net::Ipv4Addr;

    pub const SLOTS: u32 = 252 * 64;

    /// The `slot`th /30 of the pool (`slot` modulo [`SLOTS`]).
    pub fn subnet(slot: u32) -> VethSubnet {
        let slot = slot % SLOTS;
        let mut third = 1 + slot / 64;
        if third >= 169 {
            third += 2;
        }
        let third = u8::try_from(third).expect("at most 254");
        let fourth = u8::try_from((slot % 64) * 4).expect("at most 252");
        VethSubnet::new(Ipv4Addr::new(169, 254, third, fourth)).expect("aligned")
    }

    /// Where the search for a supervisor's /30 starts: spread by pid so that concurrent
    /// sandboxes usually take their first choice.
    pub const fn start_slot(supervisor_pid: u32) -> u32 {
        supervisor_pid % SLOTS
    }

    /// The first /30 from `start` on (wrapping around the pool) that `take` accepts; `take`
    /// checks a /30 and, when it is free, reserves it.
    pub fn first_free<E>(
        start: u32,
        mut take: impl FnMut(VethSubnet) -> Result<bool, E>,
    ) -> Result<Option<VethSubnet>, E> {
        for i in 0..SLOTS {
            let subnet = subnet(start.wrapping_add(i) % SLOTS);
            if take(subnet)? {
                return Ok(Some(subnet));
            }
        }
        Ok(None)
    }
}

/// Something on the host occupying IPv4 space: an address, its prefix, or a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPrefix {
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Address `local/prefix` on interface `interface` (an index).
    Address {
        local: Ipv4Addr,
        prefix: u8,
        interface: u32,
    },
    /// A route in routing table `table`.
    Route { table: u32 },
}

impl fmt::Display for HostPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Address {
                local,
                prefix,
                interface,
            } => {
                let name = nix::net::if_::if_indextoname(interface).map_or_else(
                    |_| format!("interface {interface}"),
                    |n| n.to_string_lossy().into_owned(),
                );
                write!(f, "address {local}/{prefix} of {name}")
            }
            Origin::Route { table } => {
                let table = match table {
                    253 => "default".to_owned(),
                    254 => "main".to_owned(),
                    255 => "local".to_owned(),
                    n => n.to_string(),
                };
                write!(f, "route {}/{} (table {table})", self.network, self.prefix)
            }
        }
    }
}

/// The host's IPv4 addresses and routes (every table), as the allocation checks them.
#[derive(Debug, Clone, Default)]
pub struct HostNetworks {
    prefixes: Vec<HostPrefix>,
}

impl HostNetworks {
    /// Prefixes this broad or broader never conflict: a default route, a VPN's two half-default
    /// routes, a site's aggregate route, the 169.254.0.0/16 route of zeroconf networking. A
    /// /30 inside them wins by longest-prefix match and hides only its own four addresses;
    /// refusing them would leave no subnet at all on many hosts.
    pub const AGGREGATE: u8 = 16;

    /// Reads them from the kernel (rtnetlink dumps of the caller's network namespace).
    pub fn read() -> Result<Self, NetError> {
        let failed = |source| NetError::Sys {
            step: "reading the host's IPv4 addresses and routes to choose the veth subnet",
            source,
        };
        let mut prefixes = Vec::new();
        for a in sys::netlink::ipv4_addresses().map_err(failed)? {
            let Some(local) = a.local.or(a.address) else {
                continue;
            };
            let origin = Origin::Address {
                local,
                prefix: a.prefix,
                interface: a.interface_index,
            };
            prefixes.push(HostPrefix {
                network: local,
                prefix: 32,
                origin: origin.clone(),
            });
            prefixes.push(HostPrefix {
                network: a.address.unwrap_or(local),
                prefix: a.prefix,
                origin,
            });
        }
        for r in sys::netlink::ipv4_routes().map_err(failed)? {
            prefixes.push(HostPrefix {
                network: r.destination,
                prefix: r.prefix,
                origin: Origin::Route { table: r.table },
            });
        }
        Ok(Self { prefixes })
    }

    pub const fn from_prefixes(prefixes: Vec<HostPrefix>) -> Self {
        Self { prefixes }
    }

    /// The first address or route that `subnet` would collide with: any that shares an
    /// address with it and is narrower than [`Self::AGGREGATE`].
    pub fn conflict(&self, subnet: VethSubnet) -> Option<&HostPrefix> {
        self.prefixes
            .iter()
            .find(|p| p.prefix > Self::AGGREGATE && subnet.overlaps(p.network, p.prefix))
    }
}

/// Where concurrent supervisors reserve their /30s: byte N of this file, locked with an
/// open-file-description lock, is held by the supervisor using the /30 whose network address is
/// 4 × N. Root-only (mode 0600 in root-only /run), so no other user can hold a lock.
pub const SUBNET_LOCK_FILE: &str = "/run/token_userns_demo.veth.lock";

/// A veth pair between the host and the sandbox: one end in each network namespace, each with
/// an IPv4 address in one /30, so XDP programs in the sandbox see a real driver path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    /// The end inside the sandbox (`--veth NAME`).
    pub sandbox_name: String,
    /// The end on the host, named after the supervisor's pid.
    pub host_name: String,
    /// The /30: `--veth-subnet`, or the one [`VethPair::reserve`] chose (`None` before).
    pub subnet: Option<VethSubnet>,
    supervisor_pid: u32,
}

impl VethPair {
    pub const PREFIX: u8 = VethSubnet::PREFIX;

    /// Names for a sandbox of supervisor `supervisor_pid`, with `--veth-subnet` if given;
    /// refuses names the kernel would not take as given ([`check_interface_name`]).
    pub fn new(
        sandbox_name: &str,
        supervisor_pid: u32,
        subnet: Option<VethSubnet>,
    ) -> Result<Self, NetError> {
        check_interface_name(sandbox_name).map_err(|why| NetError::BadInterfaceName {
            name: sandbox_name.to_owned(),
            why,
        })?;
        Ok(Self {
            sandbox_name: sandbox_name.to_owned(),
            host_name: format!("tkn{supervisor_pid}"),
            subnet,
            supervisor_pid,
        })
    }

    /// Reserves the /30, before the sandbox is forked (its child must know its address): the
    /// given one if it is free, else the first free one of the [`pool`] from a slot chosen by
    /// the supervisor's pid. Free means: no host address or route collides with it
    /// ([`HostNetworks::conflict`]) and no other supervisor holds its lock in
    /// [`SUBNET_LOCK_FILE`]. The lock is taken without waiting and held until the reservation
    /// is dropped, after the host end is gone; so two supervisors never share a /30, even
    /// before either has put an address on the host.
    pub fn reserve(&self) -> Result<VethReservation, NetError> {
        let path = CString::new(SUBNET_LOCK_FILE).expect("no NUL");
        let lock_error = |source| NetError::SubnetLock {
            path: SUBNET_LOCK_FILE,
            source,
        };
        let lock = sys::file::open_lock_file(&path).map_err(lock_error)?;
        let host = HostNetworks::read()?;
        let take = |subnet: VethSubnet| -> Result<bool, NetError> {
            if host.conflict(subnet).is_some() {
                return Ok(false);
            }
            sys::file::try_lock_byte(lock.as_fd(), subnet.lock_offset()).map_err(lock_error)
        };
        let subnet = match self.subnet {
            Some(subnet) => {
                if let Some(conflict) = host.conflict(subnet) {
                    return Err(NetError::SubnetOnHost {
                        subnet,
                        conflict: conflict.to_string(),
                    });
                }
                if !take(subnet)? {
                    return Err(NetError::SubnetTaken { subnet });
                }
                subnet
            }
            None => pool::first_free(pool::start_slot(self.supervisor_pid), take)?
                .ok_or(NetError::NoFreeSubnet)?,
        };
        Ok(VethReservation {
            veth: Self {
                subnet: Some(subnet),
                ..self.clone()
            },
            _lock: lock,
        })
    }

    /// The supervisor's part, in the host's network namespace: create the pair with the peer
    /// already in `sandbox_pid`'s namespace, harden the host end (`HOST_END_SETTINGS`), then
    /// address it and bring it up. From the moment the pair exists it belongs to the returned
    /// [`HostEnd`], which deletes it when dropped: on an error here, and when the caller is done.
    pub fn create(&self, sandbox_pid: i32) -> Result<HostEnd, NetError> {
        let subnet = self.subnet.ok_or(NetError::NotReserved)?;
        sys::netlink::create_veth(&self.host_name, &self.sandbox_name, sandbox_pid).map_err(
            |source| NetError::Veth {
                host_name: self.host_name.clone(),
                source: Diagnosed::new(Step::CreateVeth, source),
            },
        )?;
        // Index 0 (unknown) until looked up: the pair is then deleted by name.
        let mut host_end = HostEnd {
            name: self.host_name.clone(),
            index: 0,
            removed: false,
        };
        host_end.index = interface_index(&self.host_name)?;
        harden_host_end(&self.host_name)?;
        configure(&self.host_name, host_end.index, subnet.host_address())?;
        Ok(host_end)
    }

    /// The sandbox's part, in its own network namespace: address and bring up its end.
    pub fn configure_sandbox_end(&self) -> Result<(), NetError> {
        let subnet = self.subnet.ok_or(NetError::NotReserved)?;
        let index = interface_index(&self.sandbox_name)?;
        configure(&self.sandbox_name, index, subnet.sandbox_address())
    }
}

impl fmt::Display for VethPair {
    /// `tkn123 (169.254.1.1/30) on the host, veth0 (169.254.1.2/30) in the sandbox`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subnet {
            Some(subnet) => write!(
                f,
                "{} ({}/{p}) on the host, {} ({}/{p}) in the sandbox",
                self.host_name,
                subnet.host_address(),
                self.sandbox_name,
                subnet.sandbox_address(),
                p = VethSubnet::PREFIX,
            ),
            None => write!(
                f,
                "{} on the host, {} in the sandbox",
                self.host_name, self.sandbox_name
            ),
        }
    }
}

/// A /30 reserved for one sandbox, with the names and the subnet in `veth`.
#[derive(Debug)]
pub struct VethReservation {
    pub veth: VethPair,
    /// Holds the /30's lock. Only closing releases it (never an explicit unlock), so a forked
    /// child may close its copy without freeing the /30.
    _lock: OwnedFd,
}

/// The host end of a veth pair this process created. Dropping it deletes the pair
/// (`RTM_DELLINK`; deleting one end of a veth deletes both) and waits until the kernel no
/// longer knows the host end. The sandbox's network namespace alone is not enough to clean up:
/// a command can hand that namespace to a process outside the sandbox (its file descriptor over
/// a Unix socket, say), which would keep the pair, and a host end, after the sandbox is gone.
#[derive(Debug)]
#[must_use = "dropping the host end deletes the veth pair"]
pub struct HostEnd {
    name: String,
    /// 0 until known.
    index: u32,
    removed: bool,
}

impl HostEnd {
    /// How long [`HostEnd::remove`] waits for the kernel to forget the link.
    const REMOVAL_TIMEOUT: Duration = Duration::from_secs(2);

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Deletes the pair now and reports how that went (dropping does the same, logging an
    /// error instead).
    pub fn remove(mut self) -> Result<(), NetError> {
        self.delete()
    }

    fn delete(&mut self) -> Result<(), NetError> {
        if std::mem::replace(&mut self.removed, true) {
            return Ok(());
        }
        let failed = |source| NetError::RemoveHostEnd {
            name: self.name.clone(),
            source,
        };
        match sys::netlink::delete_link(self.index, &self.name) {
            // Gone already: the sandbox's network namespace ended and took the pair with it.
            Ok(())
            | Err(SysError {
                errno: Errno::ENODEV,
                ..
            }) => {}
            Err(source) => return Err(failed(source)),
        }
        let deadline = Instant::now() + Self::REMOVAL_TIMEOUT;
        while sys::netlink::link_exists(self.index, &self.name).map_err(failed)? {
            if Instant::now() > deadline {
                return Err(NetError::HostEndStillPresent {
                    name: self.name.clone(),
                    waited: Self::REMOVAL_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        log::debug!("deleted the veth pair: {} is gone", self.name);
        Ok(())
    }
}

impl Drop for HostEnd {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            log::error!("{err}");
        }
    }
}

/// One setting of the veth's host end.
struct HostEndSetting {
    family: &'static str,
    name: &'static str,
    value: &'static str,
    /// Leave a higher value (stricter for this setting) as the host configured it.
    at_least: bool,
}

const fn setting(family: &'static str, name: &'static str, value: &'static str) -> HostEndSetting {
    HostEndSetting {
        family,
        name,
        value,
        at_least: false,
    }
}

const fn at_least(family: &'static str, name: &'static str, value: &'static str) -> HostEndSetting {
    HostEndSetting {
        at_least: true,
        ..setting(family, name, value)
    }
}

/// Settings written to /proc/sys/net/ipv{4,6}/conf/<host end>/ before the host end is up, so
/// that nothing the sandbox sends can change the host's state (CVE-2020-13401: a container's
/// router advertisement became the host's IPv6 default route). For IPv6, `disable_ipv6` alone
/// would do; the others come first so that they hold if anything enables IPv6 there later.
///
/// `forwarding` keeps the host's value: it decides whether the host routes packets arriving on
/// the host end elsewhere, which is the host's routing policy (a user may NAT the sandbox on
/// purpose); with the host's default (`net.ipv4.ip_forward=0`) nothing is forwarded. Settings
/// the kernel combines with `conf/all` by OR (`accept_local`, `route_localnet`, and
/// `accept_redirects` on a host that does not forward) stay on when `all` has them on; see
/// [`warn_about_global_settings`].
///
/// `secure_redirects` is deliberately absent: 0 would accept redirects to any gateway instead of
/// only to default gateways, a loosening wherever redirects are still accepted.
const HOST_END_SETTINGS: [HostEndSetting; 11] = [
    // Router advertisements would install default routes, prefixes, MTUs and hop limits.
    setting("ipv6", "accept_ra", "0"),
    // Stateless autoconfiguration would add addresses from advertised prefixes.
    setting("ipv6", "autoconf", "0"),
    // ICMPv6 redirects would change the host's routes.
    setting("ipv6", "accept_redirects", "0"),
    // No IPv6 at all on the host end: no link-local address, nothing received.
    setting("ipv6", "disable_ipv6", "1"),
    // Strict reverse-path filter: the sandbox cannot send with a source address that the host
    // routes elsewhere (spoofing another host's or interface's addresses). The kernel uses the
    // larger of this and conf/all, so a host-wide 2 (loose) still wins.
    setting("ipv4", "rp_filter", "1"),
    // ICMP redirects would change the host's routes (only routes through the sandbox as
    // gateway, of which the host has none unless someone adds one).
    setting("ipv4", "accept_redirects", "0"),
    // Source-routed packets would pick the host's path for the sandbox.
    setting("ipv4", "accept_source_route", "0"),
    // Packets claiming one of the host's own addresses as source are dropped.
    setting("ipv4", "accept_local", "0"),
    // Packets for 127.0.0.0/8 from the sandbox are not delivered to host services on loopback.
    setting("ipv4", "route_localnet", "0"),
    // ARP: answer only for the host end's own address (2 and up are stricter still), and
    // announce only that address; the sandbox does not learn the host's other addresses.
    at_least("ipv4", "arp_ignore", "1"),
    setting("ipv4", "arp_announce", "2"),
];

fn harden_host_end(name: &str) -> Result<(), NetError> {
    // A kernel without IPv6 (or booted with ipv6.disable=1) has no IPv6 settings and receives
    // no IPv6 at all.
    let ipv6 = std::path::Path::new("/proc/sys/net/ipv6/conf").is_dir();
    if !ipv6 {
        log::debug!("no /proc/sys/net/ipv6: the kernel runs without IPv6");
    }
    for s in HOST_END_SETTINGS
        .iter()
        .filter(|s| ipv6 || s.family != "ipv6")
    {
        let path = format!("/proc/sys/net/{}/conf/{name}/{}", s.family, s.name);
        if s.at_least
            && std::fs::read_to_string(&path)
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .zip(s.value.parse::<i64>().ok())
                .is_some_and(|(current, wanted)| current >= wanted)
        {
            continue;
        }
        let c_path = CString::new(path.as_str()).expect("interface names have no NUL");
        sys::net::write_sysctl(&c_path, s.value).map_err(|source| NetError::Harden {
            path: path.clone(),
            value: s.value,
            source,
        })?;
    }
    log::debug!(
        "{name}: {}",
        HOST_END_SETTINGS
            .iter()
            .filter(|s| ipv6 || s.family != "ipv6")
            .map(|s| format!(
                "{}.{}{}{}",
                s.family,
                s.name,
                if s.at_least { ">=" } else { "=" },
                s.value
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    warn_about_global_settings();
    Ok(())
}

/// The kernel ORs these with `conf/all`: when the host turned them on for every interface, the
/// host end's 0 does not count, and the user should know what the sandbox can then do.
fn warn_about_global_settings() {
    for (name, what) in [
        (
            "route_localnet",
            "the sandbox can reach host services listening on 127.0.0.0/8",
        ),
        (
            "accept_local",
            "the host accepts packets from the sandbox that claim one of its own addresses as source",
        ),
    ] {
        let path = format!("/proc/sys/net/ipv4/conf/all/{name}");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "0") {
            log::warn!(
                "net.ipv4.conf.all.{name} is on, which overrides the veth host end's {name}=0: {what}"
            );
        }
    }
}

fn configure(name: &str, index: u32, address: Ipv4Addr) -> Result<(), NetError> {
    sys::netlink::add_ipv4_address(index, address, VethSubnet::PREFIX).map_err(|source| {
        NetError::Sys {
            step: "adding the veth address",
            source,
        }
    })?;
    sys::net::set_link_up(name).map_err(|source| NetError::Sys {
        step: "bringing up the veth end",
        source,
    })
}

/// Brings `lo` up: a new network namespace starts with its loopback down.
pub fn bring_up_loopback() -> Result<(), NetError> {
    sys::net::set_link_up("lo").map_err(|source| NetError::Sys {
        step: "bringing up lo",
        source,
    })
}

/// One UDP datagram over loopback to a socket bound for it.
///
/// A bound receiver means the kernel generates no ICMP port-unreachable reply (which would cross
/// `lo` a second time), and receiving the datagram proves it has passed XDP: no sleep needed.
pub struct LoopbackProbe {
    receiver: UdpSocket,
    sender: UdpSocket,
}

impl LoopbackProbe {
    pub fn new() -> Result<Self, NetError> {
        let io = |step| move |source| NetError::Io { step, source };
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io("binding the receiving UDP socket"))?;
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io("setting SO_RCVTIMEO"))?;
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(io("binding the sending UDP socket"))?;
        Ok(Self { receiver, sender })
    }

    pub fn destination(&self) -> Result<SocketAddr, NetError> {
        self.receiver.local_addr().map_err(|source| NetError::Io {
            step: "reading the receiver address",
            source,
        })
    }

    /// Sends one datagram and waits until the receiver has it.
    pub fn send_and_receive(&self) -> Result<(), NetError> {
        let destination = self.destination()?;
        const PAYLOAD: &[u8] = b"bpf-token-probe";
        self.sender
            .send_to(PAYLOAD, destination)
            .map_err(|source| NetError::Io {
                step: "sending the test datagram",
                source,
            })?;
        let mut buf = [0u8; 64];
        loop {
            let (len, from) = self
                .receiver
                .recv_from(&mut buf)
                .map_err(|source| NetError::Io {
                    step: "waiting for the test datagram (5 s timeout)",
                    source,
                })?;
            if &buf[..len] == PAYLOAD && Some(from) == self.sender.local_addr().ok() {
                return Ok(());
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "interface {name:?} not found in this network namespace; list interfaces with `ip link` (inside token_userns_demo's sandbox only `lo` exists)"
    )]
    NoSuchInterface { name: String },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: SysError,
    },
    #[error("--veth {name:?}: {why}")]
    BadInterfaceName { name: String, why: String },
    #[error("creating the veth pair (host end {host_name}): {source}")]
    Veth {
        host_name: String,
        source: Diagnosed,
    },
    #[error(
        "reserving the veth subnet: {path}: {source}; the supervisor keeps one lock per /30 in that file so that concurrent sandboxes never share a subnet ({})",
        lock_file_cause(source.errno)
    )]
    SubnetLock {
        path: &'static str,
        source: SysError,
    },
    #[error(
        "--veth-subnet {subnet} overlaps the host's {conflict}: choose a /30 that no address or route of the host covers (`ip -4 address`, `ip -4 route show table all`)"
    )]
    SubnetOnHost {
        subnet: VethSubnet,
        conflict: String,
    },
    #[error(
        "--veth-subnet {subnet} is in use by another token_userns_demo (its lock in {SUBNET_LOCK_FILE} is held): choose another /30"
    )]
    SubnetTaken { subnet: VethSubnet },
    #[error(
        "no free /30 for the veth in 169.254.0.0/16 (169.254.169.0/24 and 169.254.170.0/24 excluded): each overlaps an address or route of the host or is in use by another sandbox; give one with --veth-subnet"
    )]
    NoFreeSubnet,
    #[error("the veth subnet was not reserved before the sandbox was created")]
    NotReserved,
    #[error(
        "hardening the veth's host end before bringing it up: writing {value} to {path}: {source}; {}",
        sysctl_cause(source.errno)
    )]
    Harden {
        path: String,
        value: &'static str,
        source: SysError,
    },
    #[error("deleting the veth's host end {name}: {source}; remove it with `ip link del {name}`")]
    RemoveHostEnd { name: String, source: SysError },
    #[error(
        "the veth's host end {name} still exists {waited:?} after it was deleted; check with `ip link show {name}` and remove it with `ip link del {name}`"
    )]
    HostEndStillPresent { name: String, waited: Duration },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: io::Error,
    },
}

fn lock_file_cause(errno: Errno) -> &'static str {
    match errno {
        Errno::EACCES | Errno::EPERM | Errno::EROFS => {
            "/run is not writable: run the supervisor as root on the host"
        }
        Errno::ENOENT => "/run does not exist: create it (a tmpfs for runtime files)",
        Errno::ELOOP => "the lock file is a symbolic link: remove it",
        _ => "unexpected error",
    }
}

fn sysctl_cause(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => "the kernel has no such setting for the interface (an older kernel?)",
        Errno::EACCES | Errno::EPERM | Errno::EROFS => {
            "/proc/sys is read-only here or the supervisor lacks CAP_NET_ADMIN in this network namespace (inside a container?): run it as root on the host"
        }
        Errno::EINVAL => "the kernel refused the value",
        _ => "unexpected error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn subnet(text: &str) -> VethSubnet {
        text.parse().unwrap()
    }

    fn route(network: &str, prefix: u8) -> HostPrefix {
        HostPrefix {
            network: network.parse().unwrap(),
            prefix,
            origin: Origin::Route { table: 254 },
        }
    }

    #[test]
    fn names_the_kernel_would_change_or_refuse_are_refused() {
        for good in ["v0", "veth0", "a", "x-y_z.1", "fifteen-bytes15", "-x", "a*"] {
            assert_eq!(check_interface_name(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "sixteen-bytes-16",
            ".",
            "..",
            "lo",
            "all",
            "default",
            "v%d",
            "%",
            "a%b",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0b}b",
            "a\u{0c}b",
            "a\rb",
            "à",
            "a\u{1}b",
            "a\u{7f}",
        ] {
            assert!(check_interface_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            VethPair::new("v%d", 1, None)
                .unwrap_err()
                .to_string()
                .contains("template")
        );
    }

    #[test]
    fn a_subnet_is_a_slash_30_given_by_its_network_address() {
        let s = subnet("10.200.0.0/30");
        assert_eq!(s.network(), Ipv4Addr::new(10, 200, 0, 0));
        assert_eq!(s.host_address(), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(s.sandbox_address(), Ipv4Addr::new(10, 200, 0, 2));
        assert_eq!(s.to_string(), "10.200.0.0/30");
        for (text, expected) in [
            ("10.200.0.0", "CIDR"),
            ("10.200.0.0/29", "needs a /30"),
            ("10.200.0.0/31", "needs a /30"),
            ("10.200.0.0/24", "needs a /30"),
            ("10.200.0.0/x", "not a prefix length"),
            ("10.200.0/30", "not an IPv4 address"),
            ("10.200.0.1/30", "the host end's address in 10.200.0.0/30"),
            ("10.200.0.2/30", "the sandbox end's address"),
            ("10.200.0.3/30", "the broadcast address"),
            ("169.254.169.252/30", "cloud metadata"),
            ("169.254.169.0/30", "cloud metadata"),
            ("169.254.170.0/30", "container metadata"),
            ("127.0.0.0/30", "loopback"),
            ("0.0.0.0/30", "this network"),
            ("224.0.0.0/30", "multicast"),
            ("255.255.255.252/30", "reserved"),
        ] {
            let error = text.parse::<VethSubnet>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        // Next to the metadata ranges is fine.
        assert!("169.254.168.252/30".parse::<VethSubnet>().is_ok());
        assert!("169.254.171.0/30".parse::<VethSubnet>().is_ok());
    }

    #[test]
    fn overlap_is_containment_either_way() {
        let s = subnet("169.254.3.4/30");
        assert!(s.overlaps(Ipv4Addr::new(169, 254, 3, 6), 32));
        assert!(!s.overlaps(Ipv4Addr::new(169, 254, 3, 8), 32));
        assert!(s.overlaps(Ipv4Addr::new(169, 254, 3, 0), 24));
        assert!(s.overlaps(Ipv4Addr::new(169, 254, 3, 4), 30));
        assert!(!s.overlaps(Ipv4Addr::new(169, 254, 3, 0), 30));
        assert!(s.overlaps(Ipv4Addr::UNSPECIFIED, 0));
        assert!(!s.overlaps(Ipv4Addr::new(10, 0, 0, 0), 8));
    }

    #[test]
    fn the_pool_is_link_local_without_the_metadata_ranges() {
        let all: BTreeSet<VethSubnet> = (0..pool::SLOTS).map(pool::subnet).collect();
        assert_eq!(all.len(), pool::SLOTS as usize, "every slot is its own /30");
        for s in &all {
            let [a, b, c, d] = s.network().octets();
            assert_eq!((a, b), (169, 254), "{s}");
            assert!(!matches!(c, 0 | 169 | 170 | 255), "{s}");
            assert_eq!(d % 4, 0, "{s}");
            assert_eq!(s.reserved(), None, "{s}");
        }
        assert_eq!(pool::subnet(0), subnet("169.254.1.0/30"));
        assert_eq!(pool::subnet(pool::SLOTS - 1), subnet("169.254.254.252/30"));
        assert_eq!(pool::subnet(pool::SLOTS), pool::subnet(0));
    }

    /// The collision: supervisors whose pids differ by 16000 got the same /30.
    #[test]
    fn pids_16000_apart_start_at_different_slots() {
        for pid in [1, 300, 4_000, 16_127, 100_000] {
            assert_ne!(
                pool::start_slot(pid),
                pool::start_slot(pid + 16_000),
                "{pid}"
            );
        }
    }

    #[test]
    fn allocation_skips_what_the_host_and_other_sandboxes_use() {
        let start = 5;
        let first = pool::subnet(start);
        let second = pool::subnet(start + 1);
        let third = pool::subnet(start + 2);
        // Another sandbox's host end: its address and its /30 prefix route.
        let host = HostNetworks::from_prefixes(vec![
            HostPrefix {
                network: first.host_address(),
                prefix: 32,
                origin: Origin::Address {
                    local: first.host_address(),
                    prefix: 30,
                    interface: 7,
                },
            },
            route(&first.network().to_string(), 30),
            // Aggregates never conflict.
            route("0.0.0.0", 0),
            route("128.0.0.0", 1),
            route("169.254.0.0", 16),
        ]);
        let mut locked = BTreeSet::from([second]);
        let mut take = |s: VethSubnet| -> Result<bool, ()> {
            Ok(host.conflict(s).is_none() && locked.insert(s))
        };
        assert_eq!(pool::first_free(start, &mut take), Ok(Some(third)));
        // The next supervisor starting at the same slot gets the one after.
        assert_eq!(
            pool::first_free(start, &mut take),
            Ok(Some(pool::subnet(start + 3)))
        );
        // Starting at the last slot wraps around to the first.
        assert_eq!(
            pool::first_free(pool::SLOTS - 1, |_| Ok::<_, ()>(true)),
            Ok(Some(pool::subnet(pool::SLOTS - 1)))
        );
        assert_eq!(
            pool::first_free(pool::SLOTS - 1, |s| Ok::<_, ()>(s == pool::subnet(0))),
            Ok(Some(pool::subnet(0)))
        );
    }

    #[test]
    fn nothing_free_is_none() {
        let host =
            HostNetworks::from_prefixes(vec![route("169.254.0.0", 17), route("169.254.128.0", 17)]);
        assert_eq!(
            pool::first_free(123, |s| Ok::<_, ()>(host.conflict(s).is_none())),
            Ok(None)
        );
        assert!(NetError::NoFreeSubnet.to_string().contains("--veth-subnet"));
    }

    #[test]
    fn a_narrower_route_or_address_conflicts() {
        let s = subnet("10.200.0.0/30");
        let host = HostNetworks::from_prefixes(vec![route("10.0.0.0", 8)]);
        assert_eq!(
            host.conflict(s),
            None,
            "an aggregate is carved, not a conflict"
        );
        for (network, prefix) in [("10.200.0.0", 24), ("10.200.0.0", 17), ("10.200.0.2", 32)] {
            let host = HostNetworks::from_prefixes(vec![route(network, prefix)]);
            assert!(host.conflict(s).is_some(), "{network}/{prefix}");
        }
        let host = HostNetworks::from_prefixes(vec![route("10.200.0.4", 30)]);
        assert_eq!(host.conflict(s), None, "the next /30");
        let conflict = route("10.200.0.0", 24);
        assert_eq!(conflict.to_string(), "route 10.200.0.0/24 (table main)");
    }

    #[test]
    fn each_slash_30_has_its_own_lock_byte() {
        assert_eq!(subnet("10.0.0.4/30").lock_offset(), (10 << 22) + 1);
        assert_ne!(
            subnet("169.254.1.0/30").lock_offset(),
            subnet("169.254.1.4/30").lock_offset()
        );
    }
}
