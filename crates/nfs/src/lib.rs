//! NFSv3 export of Lifeboat: shows backed-up VM disks as a datastore a
//! hypervisor (ESXi above all) or any NFS client mounts, the way
//! `lifeboat-nbd` serves them over NBD.
//!
//! The protocol (NFSv3 + MOUNT + a fake PORTMAP answering with our own
//! port) is `nfs3_server`'s. This crate adds what an appliance needs in
//! front of it:
//! - an allow-list: a peer is served only if some export names its
//!   address, and each connection sees only the exports that name it
//!   ([`tree`]);
//! - a cap on RPC record size ([`guard`]): the protocol code allocates a
//!   record's announced length before reading it;
//! - a connection cap ([`NfsServer`]); the caller stops the listener when
//!   the last export goes ([`Registry::is_empty`]).
//!
//! Disks are `lifeboat_nbd::BlockDevice`s: the caller hands in the same
//! device stack the NBD export uses (a datastore disk, under a
//! copy-on-write overlay when writable), so writes never reach a backup.
#![warn(missing_docs)]

mod fs;
pub mod guard;
mod server;
pub mod tree;

pub use server::{NfsServer, ServerError, Service};
pub use tree::{plain_name, NfsDisk, Registry, RegistryError};

use std::net::IpAddr;

/// One allow-list entry: an address or a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRule {
    net: IpAddr,
    prefix: u8,
}

impl ClientRule {
    /// Whether `ip` is inside the rule's block. An IPv4 client seen over
    /// an IPv6 socket (`::ffff:a.b.c.d`) is compared as IPv4; an IPv4 rule
    /// never matches a native IPv6 address, nor the other way round.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client reached over an IPv6 socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for ClientRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl std::str::FromStr for ClientRule {
    type Err = String;
    /// `10.0.0.5`, `10.0.0.0/24`, `fd00::/64`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("client {s:?} is not an IP address or CIDR block (like 10.0.0.5 or 10.0.0.0/24)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(ClientRule { net, prefix })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_rules() {
        let r: ClientRule = "10.1.2.0/24".parse().unwrap();
        assert!(r.contains("10.1.2.77".parse().unwrap()));
        assert!(!r.contains("10.1.3.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.2.9".parse().unwrap()));
        let one: ClientRule = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<ClientRule>().unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "host", "10.0.0.1/33", "10.0.0.1/x", "::1/129"] {
            assert!(bad.parse::<ClientRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_names() {
        assert_eq!(plain_name("a/b"), "a_b");
        assert_eq!(plain_name(".."), "_..");
        assert_eq!(plain_name(""), "_");
        assert_eq!(plain_name("web-01"), "web-01");
    }
}
