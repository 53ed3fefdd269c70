//! Glance's interoperable image import: the methods a site offers, and the filter every
//! `web-download` URL passes (Glance's `[import_filtering_opts]` and `validate_import_uri`).

/// An import method imagemeta runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMethod {
    /// Data staged with `PUT /v2/images/{id}/stage`, then imported.
    GlanceDirect,
    /// Data fetched from an http(s) URL.
    WebDownload,
    /// An active image's data copied to further stores.
    CopyImage,
    /// An image of another Glance (found in the caller's Keystone catalog by region and
    /// interface), its data and some of its properties.
    GlanceDownload,
}

impl ImportMethod {
    pub const ALL: [ImportMethod; 4] = [Self::GlanceDirect, Self::WebDownload, Self::CopyImage, Self::GlanceDownload];
    /// Glance's default `enabled_import_methods`.
    pub const DEFAULT: [ImportMethod; 3] = [Self::GlanceDirect, Self::WebDownload, Self::CopyImage];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GlanceDirect => "glance-direct",
            Self::WebDownload => "web-download",
            Self::CopyImage => "copy-image",
            Self::GlanceDownload => "glance-download",
        }
    }

    pub fn parse(s: &str) -> Option<ImportMethod> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Which URLs `web-download` may fetch. For each pair, a non-empty allow list makes its deny
/// list ignored (as Glance does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriFilter {
    pub allowed_schemes: Vec<String>,
    pub disallowed_schemes: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub disallowed_hosts: Vec<String>,
    pub allowed_ports: Vec<u16>,
    pub disallowed_ports: Vec<u16>,
}

impl Default for UriFilter {
    fn default() -> Self {
        UriFilter {
            allowed_schemes: vec!["http".into(), "https".into()],
            disallowed_schemes: Vec::new(),
            allowed_hosts: Vec::new(),
            disallowed_hosts: Vec::new(),
            allowed_ports: vec![80, 443],
            disallowed_ports: Vec::new(),
        }
    }
}

/// A URL that passed the filter: what to resolve and fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub url: url::Url,
    /// The host as the filter compared it (an address in canonical form, or a name).
    pub host: String,
    /// Whether the host is a name (which must then resolve).
    pub is_name: bool,
}

impl UriFilter {
    /// Whether `uri` passes, before its host name is resolved. Beyond Glance's lists, a host
    /// written in any other form than a plain name or a canonical address (`127.1`,
    /// `0x7f.0.0.1`, `2130706433`, percent-escapes, user info tricks aside) is refused, as
    /// Glance's `normalize_hostname` refuses them: they are how filters are evaded.
    pub fn check(&self, uri: &str) -> Option<Passed> {
        let url = url::Url::parse(uri).ok()?;
        let scheme = url.scheme().to_ascii_lowercase();
        let schemes_denied = self.allowed_schemes.is_empty() && self.disallowed_schemes.contains(&scheme);
        if (!self.allowed_schemes.is_empty() && !self.allowed_schemes.contains(&scheme)) || schemes_denied {
            return None;
        }
        let raw = raw_host(uri)?.to_ascii_lowercase();
        let (host, is_name) = match url.host()? {
            url::Host::Domain(d) => {
                let d = d.to_ascii_lowercase();
                // All digits, or digits and dots: a number the parser did not take for an
                // address; a name must also be exactly what was written.
                if d.bytes().all(|b| b.is_ascii_digit() || b == b'.') || d != raw {
                    return None;
                }
                (d, true)
            }
            url::Host::Ipv4(a) => {
                let canonical = a.to_string();
                if raw != canonical {
                    return None;
                }
                (canonical, false)
            }
            url::Host::Ipv6(a) => {
                let canonical = a.to_string();
                if raw.trim_start_matches('[').trim_end_matches(']').parse::<std::net::Ipv6Addr>().ok() != Some(a) {
                    return None;
                }
                (canonical, false)
            }
        };
        let hosts_denied = self.allowed_hosts.is_empty() && self.disallowed_hosts.contains(&host);
        if (!self.allowed_hosts.is_empty() && !self.allowed_hosts.contains(&host)) || hosts_denied {
            return None;
        }
        // As Glance: only a port written in the URL is checked (the scheme's default one is
        // not written).
        if let Some(port) = explicit_port(uri, &url) {
            let ports_denied = self.allowed_ports.is_empty() && self.disallowed_ports.contains(&port);
            if (!self.allowed_ports.is_empty() && !self.allowed_ports.contains(&port)) || ports_denied {
                return None;
            }
        }
        Some(Passed { url, host, is_name })
    }
}

/// The host as written in `uri` (between `//` and the path, without user info and port).
fn raw_host(uri: &str) -> Option<&str> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port.split_once(']').map(|(h, _)| &host_port[..h.len() + 1]);
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

/// The port written in `uri`, if any (the parser drops a scheme's default port).
fn explicit_port(uri: &str, url: &url::Url) -> Option<u16> {
    if let Some(port) = url.port() {
        return Some(port);
    }
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = if host_port.starts_with('[') { host_port.split_once(']')?.1 } else { host_port };
    let port = after_host.rsplit_once(':')?.1;
    if port.is_empty() { None } else { url.port_or_known_default() }
}

/// The properties `glance-download` brings from the other Glance's image: those whose names
/// start with one of these (Glance's default `[glance_download_properties] extra_properties`).
pub const GLANCE_DOWNLOAD_PROPERTIES: [&str; 5] = ["hw_", "trait:", "os_distro", "os_secure_boot", "os_type"];

/// What a site's imports are: the methods on offer and the URL filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportSettings {
    pub methods: Vec<ImportMethod>,
    pub filter: UriFilter,
}

impl Default for ImportSettings {
    fn default() -> Self {
        ImportSettings { methods: ImportMethod::DEFAULT.to_vec(), filter: UriFilter::default() }
    }
}

impl ImportSettings {
    pub fn offers(&self, method: ImportMethod) -> bool {
        self.methods.contains(&method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filter_is_glances() {
        let f = UriFilter::default();
        let passes = |u: &str| f.check(u).is_some();
        assert!(passes("http://example.com/cirros.img"));
        assert!(passes("https://example.com:443/x"));
        assert!(passes("http://example.com:80/x"));
        assert!(passes("http://127.0.0.1/x"));
        assert!(passes("http://[::1]/x"));
        assert!(!passes("http://example.com:8080/x"), "a port not allowed");
        assert!(!passes("ftp://example.com/x"), "a scheme not allowed");
        assert!(!passes("file:///etc/passwd"));
        assert!(!passes("http:///x"));
        assert!(!passes("not a url"));
        assert!(!passes("http://example.com:99999/x"), "a port out of range is refused, not a 500");
        for evasive in [
            "http://127.1/x",
            "http://2130706433/x",
            "http://0x7f.0.0.1/x",
            "http://0177.0.0.1/x",
            "http://%31%32%37.0.0.1/x",
        ] {
            assert!(!passes(evasive), "{evasive}");
        }
        let passed = f.check("http://User@Example.COM/a").unwrap();
        assert_eq!((passed.host.as_str(), passed.is_name), ("example.com", true));
    }

    #[test]
    fn allow_lists_win_over_deny_lists() {
        let f = UriFilter {
            allowed_ports: vec![],
            disallowed_ports: vec![8080],
            disallowed_hosts: vec!["169.254.169.254".into()],
            ..UriFilter::default()
        };
        assert!(f.check("http://h:8081/x").is_some());
        assert!(f.check("http://h:8080/x").is_none());
        assert!(f.check("http://169.254.169.254/latest").is_none());
        let only = UriFilter {
            allowed_hosts: vec!["mirror.local".into()],
            disallowed_hosts: vec!["mirror.local".into()],
            ..f
        };
        assert!(only.check("http://mirror.local/x").is_some(), "the deny list is ignored");
        assert!(only.check("http://other.local/x").is_none());
    }
}
