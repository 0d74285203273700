//! Which addresses remote sources (and a server's callbacks) may connect to.
//!
//! A server reads sources for whoever may schedule a job, so a name that
//! resolves to a loopback, private, link-local, unspecified or multicast
//! address (a cloud metadata service, an admin page on the server's own
//! host) is refused when it is resolved; such an address is reached only
//! when the URL writes it as its host, as an allow-list entry does
//! (`http://127.0.0.1:8080/`). HTTP
//! redirects are refused too: the allow-list is checked on the URL given,
//! and a redirect would take the connection elsewhere. `rota ingest` reads
//! for the user who runs it, and reaches anything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Which addresses connections may reach, and whether HTTP redirects are
/// followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Refuse names that resolve only to addresses that are not public
    /// (see [`is_public`]).
    pub public_only: bool,
    /// Addresses reached even so when a URL writes one as its host (those
    /// allow-list entries name); never through a name.
    pub allowed: Vec<IpAddr>,
    /// Follow HTTP redirects (up to 10); off: a redirect is an error naming
    /// the host it points at.
    pub follow_redirects: bool,
}

impl Default for Egress {
    /// Anything, redirects followed: for a user reading for themselves.
    fn default() -> Self {
        Self {
            public_only: false,
            allowed: Vec::new(),
            follow_redirects: true,
        }
    }
}

impl Egress {
    /// A server's: public addresses and `allowed` (all addresses when
    /// `private_networks`), no redirects.
    #[must_use]
    pub fn server(allowed: Vec<IpAddr>, private_networks: bool) -> Self {
        Self {
            public_only: !private_networks,
            allowed,
            follow_redirects: false,
        }
    }

    /// Whether a connection may go to `ip`.
    #[must_use]
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.public_only || is_public(ip) || self.allowed.contains(&canonical(ip))
    }

    /// The addresses of `host` (a name or an IP address) at `port` that a
    /// connection may go to.
    ///
    /// # Errors
    /// When the name does not resolve, or only to addresses refused here
    /// (the message names them, and how to allow one).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        self.keep(host, found)
    }

    fn keep(&self, host: &str, found: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if found.is_empty() {
            return Err(format!("{host} has no address"));
        }
        // An address allow-list entries name is reached when written as
        // such, never through a name (whose records may change).
        let literal = host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
        let kept: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| {
                if literal {
                    self.permits(a.ip())
                } else {
                    !self.public_only || is_public(a.ip())
                }
            })
            .collect();
        if kept.is_empty() {
            return Err(Refused {
                host: host.to_owned(),
                addresses: found.iter().map(SocketAddr::ip).collect(),
            }
            .to_string());
        }
        Ok(kept)
    }

    /// A resolver for `reqwest` clients that keeps only public addresses
    /// when the filter is on (hosts written as IP addresses are not
    /// resolved: the allow-list names those).
    #[must_use]
    pub fn resolver(&self) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(Resolver(self.clone()))
    }

    /// The redirect policy of `reqwest` clients: up to 10 hops when
    /// redirects are followed, none otherwise (the 3xx answer is returned).
    #[must_use]
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        if self.follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        }
    }

    /// `builder` held to this filter: its resolver, its redirect policy,
    /// and, while addresses are filtered, no proxy from the environment
    /// (`HTTP_PROXY`, …), which would resolve names past the filter.
    pub fn configure(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let builder = builder
            .redirect(self.redirect_policy())
            .dns_resolver(self.resolver());
        if self.public_only {
            builder.no_proxy()
        } else {
            builder
        }
    }
}

/// A name resolved only to addresses the egress filter refuses.
#[derive(Clone, Debug)]
pub struct Refused {
    host: String,
    addresses: Vec<IpAddr>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<String> = self.addresses.iter().map(IpAddr::to_string).collect();
        write!(
            f,
            "{} resolves only to addresses this server does not reach by name ({}: loopback, \
             private, link-local, unspecified or multicast); name the address itself in an \
             allow-list entry to reach it",
            self.host,
            list.join(", ")
        )
    }
}

impl std::error::Error for Refused {}

/// A redirect that was not followed, naming the host it points at (never
/// its path or query, which may hold a secret).
#[derive(Clone, Debug)]
pub struct Redirected {
    to: String,
}

impl Redirected {
    /// The refusal of a redirect whose `Location` header is `location`.
    #[must_use]
    pub fn from_location(location: Option<&reqwest::header::HeaderValue>) -> Self {
        let to = location.and_then(|v| v.to_str().ok()).map_or_else(
            || "nowhere (no Location)".to_owned(),
            |l| match url::Url::parse(l) {
                Ok(u) => format!(
                    "{}://{}",
                    u.scheme(),
                    u.port().map_or_else(
                        || u.host_str().unwrap_or_default().to_owned(),
                        |p| format!("{}:{p}", u.host_str().unwrap_or_default())
                    )
                ),
                Err(_) => "another path on the same server".to_owned(),
            },
        );
        Self { to }
    }
}

impl std::fmt::Display for Redirected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server redirects to {}; redirects are not followed: name the place it \
             redirects to (an allow-list must allow it)",
            self.to
        )
    }
}

impl std::error::Error for Redirected {}

/// Resolves with the system's resolver, then filters.
struct Resolver(Egress);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !egress.public_only || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(Refused {
                    host,
                    addresses: found.iter().map(SocketAddr::ip).collect(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An IPv6 address that embeds an IPv4 one (`::ffff:a.b.c.d`) as that
/// IPv4 address; others unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC
/// 1918, `fc00::/7`), shared (`100.64.0.0/10`), link-local (`169.254.0.0/16`,
/// `fe80::/10`), unspecified, broadcast, multicast or reserved; IPv6
/// addresses that embed an IPv4 one (mapped, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged by it.
#[must_use]
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b)))
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    // Link-local fe80::/10, site-local fec0::/10, unique local fc00::/7.
    if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 || (s[0] & 0xfe00) == 0xfc00 {
        return false;
    }
    // NAT64 64:ff9b::/96 and IPv4-compatible ::a.b.c.d embed an IPv4 address.
    let embedded = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0))
        || s[..6].iter().all(|&x| x == 0)
    {
        return public_v4(embedded());
    }
    // 6to4 2002::/16 embeds one in its next 32 bits.
    if s[0] == 0x2002 {
        return public_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    // Documentation 2001:db8::/32.
    !(s[0] == 0x2001 && s[1] == 0x0db8)
}

#[cfg(test)]
mod tests {
    use super::{Egress, is_public};

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused_unless_allowed() {
        let server = Egress::server(Vec::new(), false);
        let err = server.resolve("localhost", 22).await.expect_err("loopback");
        assert!(
            err.contains("localhost") && err.contains("allow-list"),
            "{err}"
        );
        let named = Egress::server(vec!["127.0.0.1".parse().expect("ip")], false);
        assert!(
            named.resolve("localhost", 22).await.is_err(),
            "never through a name"
        );
        let got = named.resolve("127.0.0.1", 22).await.expect("allowed");
        assert!(got.iter().all(|a| a.ip().is_loopback()), "{got:?}");
        assert!(
            Egress::server(Vec::new(), true)
                .resolve("localhost", 22)
                .await
                .is_ok()
        );
        assert!(Egress::default().resolve("localhost", 22).await.is_ok());
        assert!(named.permits("::ffff:127.0.0.1".parse().expect("ip")));
    }
}
