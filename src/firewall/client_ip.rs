use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;
use http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::FirewallError;
use crate::domain::country::Country;

/// Cloudflare's published edge ranges (https://www.cloudflare.com/ips/),
/// shipped in the binary so `cloudflare` works without network access at start.
const CLOUDFLARE_RANGES: [&str; 22] = [
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

const CF_CONNECTING_IP: HeaderName = HeaderName::from_static("cf-connecting-ip");
const CF_IPCOUNTRY: HeaderName = HeaderName::from_static("cf-ipcountry");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Peers whose forwarding headers are believed. Parsed from a list of CIDRs, bare addresses,
/// the keyword `cloudflare` and `cloudflare=CIDR`, separated by commas or spaces, e.g.
/// `"cloudflare,10.0.0.0/8"`. Empty means: trust nobody, use the TCP peer.
///
/// Only Cloudflare sets (and overwrites) `CF-Connecting-IP` and `CF-IPCountry`, so only peers
/// in its published ranges (`cloudflare`) are believed about them; `cloudflare=CIDR` adds a
/// peer that relays Cloudflare's headers unchanged (`cloudflared` of a Cloudflare Tunnel, or a
/// proxy only Cloudflare can reach). Any other trusted peer is believed about
/// `X-Forwarded-For` only: behind nginx, a client's own `CF-*` headers would pass untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxies {
    /// Aggregated (merged, sorted) so a lookup scans as few networks as possible.
    nets: Vec<IpNet>,
    /// The peers whose `CF-*` headers are believed, aggregated too.
    cloudflare: Vec<IpNet>,
}

/// `cloudflare=CIDR`: a peer that relays Cloudflare's headers.
const CLOUDFLARE_RELAY_PREFIX: &str = "cloudflare=";

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().chain(&self.cloudflare).any(|net| net.contains(&ip))
    }

    /// Every trusted network, Cloudflare's and its relays included (`omi doctor` judges them).
    pub fn networks(&self) -> impl Iterator<Item = &IpNet> {
        self.nets.iter().chain(&self.cloudflare)
    }

    /// Whether `ip` is Cloudflare (or relays it), so its `CF-*` headers are believed.
    pub fn relays_cloudflare(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cloudflare.iter().any(|net| net.contains(&ip))
    }
}

impl FromStr for TrustedProxies {
    type Err = FirewallError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut nets, mut cloudflare) = (Vec::new(), Vec::new());
        for entry in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()) {
            if entry.eq_ignore_ascii_case("cloudflare") {
                for range in CLOUDFLARE_RANGES {
                    cloudflare.push(parse_net(range)?);
                }
            } else if let Some(relay) = cloudflare_relay(entry) {
                // An error quotes the whole entry, as the operator wrote it.
                let net = parse_net(relay).map_err(|e| match e {
                    FirewallError::InvalidTrustedProxy { source, .. } => {
                        FirewallError::InvalidTrustedProxy { entry: entry.to_owned(), source }
                    }
                    other => other,
                })?;
                cloudflare.push(net);
            } else {
                nets.push(parse_net(entry)?);
            }
        }
        Ok(TrustedProxies { nets: IpNet::aggregate(&nets), cloudflare: IpNet::aggregate(&cloudflare) })
    }
}

/// The CIDR of a `cloudflare=CIDR` entry (the keyword in any case).
fn cloudflare_relay(entry: &str) -> Option<&str> {
    let split = CLOUDFLARE_RELAY_PREFIX.len();
    let keyword = entry.get(..split)?;
    keyword.eq_ignore_ascii_case(CLOUDFLARE_RELAY_PREFIX).then(|| &entry[split..])
}

fn parse_net(entry: &str) -> Result<IpNet, FirewallError> {
    let net = match entry.parse::<IpNet>() {
        Ok(net) => net,
        Err(source) => match entry.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(FirewallError::InvalidTrustedProxy { entry: entry.to_owned(), source });
            }
        },
    };
    // Peers are canonicalised to IPv4, so an IPv4-mapped IPv6 range must be too
    // or it could never match.
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return Ok(IpNet::V4(v4net.trunc()));
    }
    Ok(net.trunc())
}

impl TryFrom<String> for TrustedProxies {
    type Error = FirewallError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TrustedProxies> for String {
    fn from(t: TrustedProxies) -> String {
        t.to_string()
    }
}

/// Lists the aggregated networks; the `cloudflare` keyword is expanded to `cloudflare=CIDR`s.
impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.nets.iter().map(|net| (net, ""));
        let relays = self.cloudflare.iter().map(|net| (net, CLOUDFLARE_RELAY_PREFIX));
        for (i, (net, prefix)) in plain.chain(relays).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{prefix}{net}")?;
        }
        Ok(())
    }
}

/// Who sent the request, as far as we can trust the path it came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: IpAddr,
    /// `None` when no trusted proxy told us; policy treats it as `XX`.
    pub country: Option<Country>,
}

/// Resolve the real client behind `peer` (the TCP peer address).
///
/// Forwarding headers are only read when `peer` is a trusted proxy; from anyone
/// else they are attacker-controlled and ignored entirely. `CF-Connecting-IP` and
/// `CF-IPCountry` are read only from Cloudflare ([`TrustedProxies::relays_cloudflare`]):
/// another proxy passes a client's own along, so from it only `X-Forwarded-For` counts.
pub fn resolve_client(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> ClientInfo {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return ClientInfo { ip: peer, country: None };
    }
    let cloudflare = trusted.relays_cloudflare(peer);
    let ip = headers
        .get(CF_CONNECTING_IP)
        .filter(|_| cloudflare)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_forwarded_ip)
        .or_else(|| rightmost_untrusted_forwarded_for(headers, trusted))
        .unwrap_or(peer);
    let country = headers.get(CF_IPCOUNTRY).filter(|_| cloudflare).map(|v| Country::from_header(v.as_bytes()));
    ClientInfo { ip, country }
}

/// Walk `X-Forwarded-For` from the right: each trusted hop appended the address
/// it saw, so the first untrusted entry is the client; everything further left
/// was supplied by that client and may be forged.
///
/// If every entry is trusted the request came from inside, and the left-most
/// entry is the best answer. A malformed entry ends the walk the same way, since
/// nothing beyond it can be attributed to a trusted hop.
fn rightmost_untrusted_forwarded_for(headers: &HeaderMap, trusted: &TrustedProxies) -> Option<IpAddr> {
    let mut leftmost_trusted = None;
    // Several header lines form one list in order (RFC 9110 §5.3).
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(value) = value.to_str() else {
            return leftmost_trusted;
        };
        for entry in value.rsplit(',') {
            let Some(ip) = parse_forwarded_ip(entry) else {
                return leftmost_trusted;
            };
            if !trusted.contains(ip) {
                return Some(ip);
            }
            leftmost_trusted = Some(ip);
        }
    }
    leftmost_trusted
}

/// Accepts `1.2.3.4`, `2001:db8::1`, and the `ip:port` / `[ipv6]:port` /
/// `[ipv6]` forms some proxies emit.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip =
        entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|sa| sa.ip())).or_else(|| {
            entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).and_then(|e| e.parse::<IpAddr>().ok())
        })?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().expect("test trusted list")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const CF_EDGE: &str = "172.64.1.1";

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let t = trusted("cloudflare,10.0.0.0/8");
        let h = headers(&[("cf-connecting-ip", "1.1.1.1"), ("x-forwarded-for", "2.2.2.2"), ("cf-ipcountry", "US")]);
        let info = resolve_client(ip("203.0.113.7"), &h, &t);
        assert_eq!(info.ip, ip("203.0.113.7"));
        assert_eq!(info.country, None);

        // Nobody is trusted by default.
        let info = resolve_client(ip(CF_EDGE), &h, &TrustedProxies::default());
        assert_eq!(info.ip, ip(CF_EDGE));
        assert_eq!(info.country, None);
    }

    #[test]
    fn trusted_peer_prefers_cf_connecting_ip() {
        let t = trusted("cloudflare");
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.9"),
            ("x-forwarded-for", "6.6.6.6, 7.7.7.7"),
            ("cf-ipcountry", "DE"),
        ]);
        let info = resolve_client(ip(CF_EDGE), &h, &t);
        assert_eq!(info.ip, ip("198.51.100.9"));
        assert_eq!(info.country, Country::from_code("DE"));
    }

    #[test]
    fn cf_headers_from_a_proxy_that_is_not_cloudflare_are_ignored() {
        // nginx at 10.0.0.2 passes the client's own CF-* headers along and appends its address.
        let t = trusted("cloudflare,10.0.0.0/8");
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.9"),
            ("cf-ipcountry", "DE"),
            ("x-forwarded-for", "203.0.113.5"),
        ]);
        let info = resolve_client(ip("10.0.0.2"), &h, &t);
        assert_eq!(info, ClientInfo { ip: ip("203.0.113.5"), country: None });
        let no_forwarded_for = headers(&[("cf-connecting-ip", "198.51.100.9"), ("cf-ipcountry", "DE")]);
        assert_eq!(resolve_client(ip("10.0.0.2"), &no_forwarded_for, &t).ip, ip("10.0.0.2"), "the proxy itself");
        // Cloudflare in front of nginx: its edge is a trusted hop of X-Forwarded-For.
        let chain =
            headers(&[("cf-connecting-ip", "6.6.6.6"), ("x-forwarded-for", "9.9.9.9, 203.0.113.5, 172.64.1.1")]);
        assert_eq!(resolve_client(ip("10.0.0.2"), &chain, &t).ip, ip("203.0.113.5"));
    }

    #[test]
    fn a_cloudflare_relay_is_believed_about_cf_headers() {
        let t = trusted("cloudflare=127.0.0.1, 10.0.0.0/8");
        assert!(t.relays_cloudflare(ip("127.0.0.1")) && t.contains(ip("127.0.0.1")));
        assert!(!t.relays_cloudflare(ip("10.0.0.1")) && !t.relays_cloudflare(ip(CF_EDGE)), "only what is listed");
        let h = headers(&[("cf-connecting-ip", "198.51.100.9"), ("cf-ipcountry", "DE")]);
        let info = resolve_client(ip("127.0.0.1"), &h, &t);
        assert_eq!(info, ClientInfo { ip: ip("198.51.100.9"), country: Country::from_code("DE") });
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &t).country, None);
    }

    #[test]
    fn bad_cf_connecting_ip_falls_back_to_forwarded_for() {
        let t = trusted("cloudflare");
        let h = headers(&[("cf-connecting-ip", "not-an-ip"), ("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(resolve_client(ip(CF_EDGE), &h, &t).ip, ip("198.51.100.9"));
    }

    #[test]
    fn forwarded_for_takes_rightmost_untrusted() {
        let t = trusted("10.0.0.0/8, 192.168.1.1");
        // The client forged the first two entries; 203.0.113.5 is what our
        // edge (10.0.0.2) saw, then an inner hop 192.168.1.1 appended 10.0.0.2.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 10.9.9.9, 203.0.113.5, 10.0.0.2")]);
        let info = resolve_client(ip("192.168.1.1"), &h, &t);
        assert_eq!(info.ip, ip("203.0.113.5"));
        assert_eq!(info.country, None, "no CF-IPCountry header sent");
    }

    #[test]
    fn forwarded_for_across_multiple_header_lines() {
        let t = trusted("10.0.0.0/8");
        let h = headers(&[
            ("x-forwarded-for", "9.9.9.9, 203.0.113.5"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-for", "10.2.2.2"),
        ]);
        assert_eq!(resolve_client(ip("10.3.3.3"), &h, &t).ip, ip("203.0.113.5"));
    }

    #[test]
    fn forwarded_for_all_trusted_or_malformed() {
        let t = trusted("10.0.0.0/8");
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &all_trusted, &t).ip, ip("10.0.0.7"));

        // Garbage left of a trusted hop: stop there rather than guess.
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, unknown, 10.0.0.8")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &garbage, &t).ip, ip("10.0.0.8"));

        // Nothing usable: the peer itself.
        for h in [headers(&[("x-forwarded-for", "garbage")]), headers(&[("x-forwarded-for", "")]), HeaderMap::new()] {
            assert_eq!(resolve_client(ip("10.0.0.1"), &h, &t).ip, ip("10.0.0.1"));
        }
    }

    #[test]
    fn forwarded_for_with_ports_and_ipv6() {
        let t = trusted("10.0.0.0/8,fd00::/8");
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711, fd00::1")]);
        assert_eq!(resolve_client(ip("fd00::2"), &h, &t).ip, ip("2001:db8::7"));

        let h = headers(&[("x-forwarded-for", "203.0.113.5:1234")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &t).ip, ip("203.0.113.5"));

        let h = headers(&[("x-forwarded-for", "[2001:db8::8]")]);
        assert_eq!(resolve_client(ip("10.0.0.1"), &h, &t).ip, ip("2001:db8::8"));
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_are_ipv4() {
        let t = trusted("10.0.0.0/8");
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.5")]);
        let info = resolve_client(ip("::ffff:10.0.0.1"), &h, &t);
        assert_eq!(info.ip, ip("203.0.113.5"));

        let untrusted = resolve_client(ip("::ffff:203.0.113.9"), &h, &t);
        assert_eq!(untrusted.ip, ip("203.0.113.9"));
        assert!(untrusted.ip.is_ipv4());

        // A mapped range in the config matches plain IPv4 peers.
        let mapped = trusted("::ffff:10.0.0.0/104");
        assert!(mapped.contains(ip("10.1.2.3")));
        assert!(!mapped.contains(ip("11.1.2.3")));
    }

    #[test]
    fn ipv6_trusted_peer() {
        let t = trusted("cloudflare");
        let h = headers(&[("cf-connecting-ip", "2001:db8::42"), ("cf-ipcountry", "T1")]);
        let info = resolve_client(ip("2606:4700::1"), &h, &t);
        assert_eq!(info.ip, ip("2001:db8::42"));
        assert_eq!(info.country, Some(Country::TOR));
    }

    #[test]
    fn country_from_trusted_peer_only_and_malformed_is_unknown() {
        let t = trusted("cloudflare");
        for (value, want) in [("XX", Country::UNKNOWN), ("us", Country::UNKNOWN)] {
            let mut h = HeaderMap::new();
            h.insert("cf-ipcountry", HeaderValue::from_static(value));
            assert_eq!(resolve_client(ip(CF_EDGE), &h, &t).country, Some(want));
        }
        let mut h = HeaderMap::new();
        h.insert("cf-ipcountry", HeaderValue::from_bytes(b"\xc3\x9c").expect("opaque bytes are valid header values"));
        assert_eq!(resolve_client(ip(CF_EDGE), &h, &t).country, Some(Country::UNKNOWN));
    }

    #[test]
    fn cloudflare_keyword_covers_published_ranges() {
        let t = trusted("cloudflare");
        for inside in [
            "173.245.48.1",
            "103.21.247.255",
            "104.16.0.1",
            "104.27.255.255",
            "131.0.75.1",
            "198.41.255.254",
            "2400:cb00::1",
            "2a06:98c7:ffff::1",
            "2c0f:f248:1::1",
            "::ffff:162.159.1.1",
        ] {
            assert!(t.contains(ip(inside)), "{inside} should be Cloudflare");
        }
        for outside in ["104.32.0.1", "1.1.1.1", "10.0.0.1", "2a06:98c8::1", "::1"] {
            assert!(!t.contains(ip(outside)), "{outside} is not Cloudflare");
        }
    }

    #[test]
    fn cloudflare_mixes_with_extra_ranges() {
        let t = trusted("Cloudflare, 10.0.0.0/8 192.168.0.1 CLOUDFLARE=fd00::/8");
        assert!(t.contains(ip("10.200.0.1")));
        assert!(t.contains(ip("192.168.0.1")));
        assert!(!t.contains(ip("192.168.0.2")));
        assert!(t.contains(ip("172.64.0.1")));
        assert!(t.relays_cloudflare(ip("172.64.0.1")) && t.relays_cloudflare(ip("fd00::1")));
        assert!(!t.relays_cloudflare(ip("10.200.0.1")));
        // Round-trips through its textual form.
        let again: TrustedProxies = t.to_string().parse().expect("display parses back");
        assert_eq!(again, t);
    }

    #[test]
    fn bad_cidr_is_a_clear_error() {
        for bad in ["10.0.0.0/33", "cloudflair", "10.0.0.0/8,300.1.1.1", "fe80::/129", "cloudflare=", "cloudflare=x"] {
            let err = bad.parse::<TrustedProxies>().unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, FirewallError::InvalidTrustedProxy { .. }));
            assert!(msg.contains("invalid trusted proxy entry"), "{msg}");
            assert!(bad.split(',').any(|e| msg.contains(&format!("{e:?}"))), "{msg} should quote the entry");
        }
        assert_eq!("".parse::<TrustedProxies>().expect("empty is fine"), TrustedProxies::default());
    }
}
