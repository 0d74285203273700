//! URLs of file servers reached by user and password or key:
//! `scheme://[user[:password]@]host[:port]/path` (SFTP, FTP, FTPS).

use rota_core::SourceError;

use crate::object::{invalid, percent_decode, percent_encode};
use crate::registry::Credentials;

/// A server URL taken apart. The password stays in this process: entries
/// and messages show it as `***`.
pub(crate) struct ServerUrl {
    /// The decoded user, if the URL names one.
    pub(crate) user: Option<String>,
    /// The decoded password, if the URL has one (or, for `***`, the one
    /// given to the same ingest).
    pub(crate) password: Option<String>,
    /// The host, without brackets around an IPv6 address.
    pub(crate) host: String,
    /// The port, or the scheme's default.
    pub(crate) port: u16,
    /// The decoded absolute path, without a trailing slash (`/` for the root).
    pub(crate) path: String,
    /// `scheme://[user[:***]@]host[:port]`, for entries' locations.
    base: String,
}

impl ServerUrl {
    /// Parses `location`, which must start with `scheme://`; `port` is the
    /// scheme's default port. A password shown as `***` is the one given
    /// to the same ingest, in `credentials`.
    pub(crate) fn parse(
        location: &str,
        scheme: &str,
        port: u16,
        credentials: &Credentials,
    ) -> Result<Self, SourceError> {
        let url = crate::RemoteUrl::parse(location).map_err(|reason| invalid(location, reason))?;
        if url.scheme() != scheme {
            return Err(invalid(location, format!("expected {scheme}://host/path")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                location,
                "a `?` or `#` in the path: write them as %3F and %23",
            ));
        }
        let hostport = url.host_port();
        let server = format!("{scheme}://{hostport}");
        let user = url.user();
        let password = match (&user, url.password_encoded()) {
            (Some(u), Some(p)) => {
                Some(credentials.password(location, &server, u, &percent_decode(p), p == "***")?)
            }
            _ => None,
        };
        let (host, port) = (url.host(), url.port_or(port));
        let path = url.path().trim_start_matches('/');
        let decoded = percent_decode(path);
        let trimmed = decoded.trim_end_matches('/');
        let base = match (&user, &password) {
            (Some(u), Some(_)) => format!("{scheme}://{}:***@{hostport}", percent_encode(u)),
            (Some(u), None) => format!("{scheme}://{}@{hostport}", percent_encode(u)),
            _ => format!("{scheme}://{hostport}"),
        };
        Ok(Self {
            user,
            password,
            host,
            port,
            path: format!("/{trimmed}"),
            base,
        })
    }

    /// The location of the absolute `path` on the same server, as the user
    /// gave it (password hidden).
    pub(crate) fn location_of(&self, path: &str) -> String {
        let encoded: Vec<String> = path.split('/').map(percent_encode).collect();
        format!("{}{}", self.base, encoded.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::ServerUrl;
    use crate::registry::Credentials;

    #[test]
    fn parses_users_ports_and_paths_and_hides_passwords() {
        let creds = Credentials::for_ingest();
        let u =
            ServerUrl::parse("ftp://example.com/pub/data%20set/", "ftp", 21, &creds).expect("url");
        assert_eq!((u.user.as_deref(), u.port), (None, 21));
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("example.com", "/pub/data set")
        );
        assert_eq!(
            u.location_of("/pub/data set/a#1.csv"),
            "ftp://example.com/pub/data%20set/a%231.csv"
        );

        let u = ServerUrl::parse("ftps://me:p%40ss@[::1]:2121/", "ftps", 21, &creds).expect("url");
        assert_eq!(u.user.as_deref(), Some("me"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 2121, "/")
        );
        assert_eq!(u.location_of("/x"), "ftps://me:***@[::1]:2121/x");

        let again =
            ServerUrl::parse("ftps://me:***@[::1]:2121/x", "ftps", 21, &creds).expect("url");
        assert_eq!(
            again.password.as_deref(),
            Some("p@ss"),
            "known to the same ingest"
        );
        let other = Credentials::for_ingest();
        assert!(
            ServerUrl::parse("ftps://me:***@[::1]:2121/x", "ftps", 21, &other).is_err(),
            "not to another"
        );
        assert!(ServerUrl::parse("ftp://h:port/", "ftp", 21, &creds).is_err());
        assert!(ServerUrl::parse("sftp://h/", "ftp", 21, &creds).is_err());
    }
}
