//! The client's address, also behind proxies and load balancers.
//!
//! The socket peer is the client only when nothing stands in between. Behind a proxy every request comes
//! from the proxy, so throttling by address would throttle everyone at once. `TESSERA_TRUSTED_PROXIES`
//! (addresses or CIDRs, comma-separated) names the hops whose `X-Forwarded-For` is believed: the header is
//! read only when the peer is one of them, from the right, skipping trusted hops; the first address that
//! is not a trusted proxy is the client. Anything to its left was written by the client and could be
//! anything, so it is never read. Without the setting the header is ignored entirely: a client cannot
//! choose its address by sending one. CIDR parsing is the `ipnet` crate's (already in the tree).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the address they received a request from to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of `TESSERA_TRUSTED_PROXIES` that is neither an address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TESSERA_TRUSTED_PROXIES: {0:?} is neither an address nor a CIDR network")]
pub struct NotAProxy(pub String);

impl TrustedProxies {
    /// `10.0.0.0/8, 192.168.1.7, ::1`: networks and single addresses; empty: none.
    pub fn parse(list: &str) -> Result<TrustedProxies, NotAProxy> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item.parse::<IpAddr>().map(IpNet::from).map_err(|_| NotAProxy(item.to_owned()))?,
            };
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, as one list; walked from the right.
        let hops: Vec<&str> =
            headers.get_all(FORWARDED_FOR).iter().filter_map(|value| value.to_str().ok()).flat_map(|value| value.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                // Garbage where an address should be: the last trusted hop is as far as we can see.
                None => break,
            }
        }
        client
    }
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|address| address.ip())).map(canonical)
}

/// IPv4 addresses seen on an IPv6 socket (`::ffff:1.2.3.4`) as plain IPv4.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    }
}

/// The client's address, put in every request's extensions by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The resolved address, or the socket peer when the middleware did not run.
    pub fn of(extensions: &axum::http::Extensions) -> Option<ClientIp> {
        extensions.get::<ClientIp>().copied().or_else(|| extensions.get::<ConnectInfo<SocketAddr>>().map(|info| ClientIp(canonical(info.0.ip()))))
    }
}

/// Middleware: resolves the client's address once per request, for handlers (throttling) and logs.
pub async fn resolve(
    axum::extract::State(proxies): axum::extract::State<Arc<TrustedProxies>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = proxies.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.5"), &headers(&["1.2.3.4"])), ip("10.0.0.5"));
    }

    #[test]
    fn the_header_is_read_from_the_right_skipping_trusted_hops() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").unwrap();
        // Client -> CDN-ish trusted hop -> balancer (the peer).
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["203.0.113.9, 192.168.1.7"])), ip("203.0.113.9"));
        // What the client wrote itself (the leftmost entries) is never believed.
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["6.6.6.6, 203.0.113.9"])), ip("203.0.113.9"));
        // Several headers are one list, in order.
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["6.6.6.6", "198.51.100.2"])), ip("198.51.100.2"));
        // Ports and IPv6 forms.
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["198.51.100.2:5000"])), ip("198.51.100.2"));
        // An untrusted peer's header is ignored.
        assert_eq!(proxies.client(ip("198.51.100.77"), &headers(&["1.2.3.4"])), ip("198.51.100.77"));
        // No header: the proxy itself.
        assert_eq!(proxies.client(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["1.2.3.4, nonsense"])), ip("10.0.0.5"));
        // Every hop trusted: the leftmost.
        assert_eq!(proxies.client(ip("10.0.0.5"), &headers(&["10.9.9.9, 10.1.1.1"])), ip("10.9.9.9"));
        // IPv4-mapped peers count as IPv4.
        assert_eq!(proxies.client(ip("::ffff:10.0.0.5"), &headers(&["203.0.113.9"])), ip("203.0.113.9"));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let error = TrustedProxies::parse("10.0.0.0/8, proxy.local").unwrap_err();
        assert_eq!(error, NotAProxy("proxy.local".into()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
    }
}
