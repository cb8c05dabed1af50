//! The one rule for showing a URL that may carry a secret (an upstream's `user:pass@`, a
//! database password, an `?api_key=` in a query): every health answer, readiness check, log
//! line and error message shows URLs through [`redact_url`].

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 8] = ["key", "api_key", "apikey", "token", "access_token", "secret", "password", "sig"];

/// `url` with its userinfo (user and password alike: a token is often the user part) replaced
/// by `***`, and the values of secret-looking query parameters too. Anything that is not a URL
/// comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..scheme_end]);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            out.push_str("***");
            out.push_str(&url[scheme_end + at..authority_end]);
        }
        None => out.push_str(&url[scheme_end..authority_end]),
    }
    let rest = &url[authority_end..];
    let Some(q) = rest.find('?') else {
        out.push_str(rest);
        return out;
    };
    out.push_str(&rest[..=q]);
    let (query, fragment) = match rest[q + 1..].find('#') {
        Some(h) => (&rest[q + 1..q + 1 + h], &rest[q + 1 + h..]),
        None => (&rest[q + 1..], ""),
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) => format!("{name}=***"),
            _ => pair.to_string(),
        })
        .collect();
    out.push_str(&pairs.join("&"));
    out.push_str(fragment);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn userinfo_and_secret_parameters_are_hidden() {
        for (url, shown) in [
            ("http://user:pass@host:8000/v1", "http://***@host:8000/v1"),
            ("https://tok3n@host/v1", "https://***@host/v1"),
            ("postgres://vb:s3cr@t@db:5432/x", "postgres://***@db:5432/x"),
            ("http://host:8000/v1", "http://host:8000/v1"),
            ("http://host/v1?api_key=abc&model=m#f", "http://host/v1?api_key=***&model=m#f"),
            ("http://host/p@th", "http://host/p@th"),
            ("sqlite://./data/vllm-batch.db", "sqlite://./data/vllm-batch.db"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
