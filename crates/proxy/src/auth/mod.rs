//! Admission: the one asynchronous step after the decision that both the HTTP/1.x loop and
//! the HTTP/2 handler go through for a route that asks for authentication (`auth-type: basic`,
//! `auth-url`, `satisfy`). A route without authentication never gets here (its caller checks
//! [`Forward::needs_admission`], a field test), so it pays no await and no allocation.
//!
//! What outlives a table — verified Basic credentials, cached answers of authentication
//! services — lives in [`State`], one for the process, bounded in size.

mod basic;
mod external;

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;

use crate::decide::{Edits, Forward, Local, View};
use crate::Proxy;

/// Authentication state shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct State {
    verified: basic::Verified,
    answers: external::Answers,
}

/// What a granted request carries on: fields for the upstream request and cookies for the
/// client's response, from the authentication service's answer.
#[derive(Debug, Default)]
pub(crate) struct Granted {
    /// `auth-response-headers` copied from the service's answer.
    pub(crate) fields: Vec<(HeaderName, HeaderValue)>,
    /// The service's `Set-Cookie` fields.
    pub(crate) cookies: Vec<HeaderValue>,
    /// `auth-always-set-cookie`.
    pub(crate) always: bool,
}

/// The statuses nginx's `add_header` (without `always`) adds its field to.
const COOKIE_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

impl Granted {
    /// The cookies to add to a response with `status`.
    pub(crate) fn cookies_for(&self, status: u16) -> &[HeaderValue] {
        if self.always || COOKIE_STATUSES.contains(&status) {
            &self.cookies
        } else {
            &[]
        }
    }
}

impl Forward {
    /// Whether the request must be admitted ([`Proxy::admit`]) before it goes upstream.
    #[inline]
    pub(crate) fn needs_admission(&self) -> bool {
        self.rules.as_ref().is_some_and(|p| p.auth.is_some())
    }

    /// What admission granted, if the route authenticates.
    pub(crate) fn granted(&self) -> Option<&Granted> {
        self.edits.as_ref()?.auth.as_ref()
    }

    /// Whether a client field named `name` is kept off the upstream request: `Authorization`
    /// on a Basic-authenticated route (nginx clears it), and the fields the authentication
    /// service's answer sets (so a client cannot forge them).
    pub(crate) fn strips(&self, name: &[u8]) -> bool {
        let Some(auth) = self.rules.as_ref().and_then(|p| p.auth.as_ref()) else {
            return false;
        };
        (auth.basic.is_some() && name.eq_ignore_ascii_case(b"authorization"))
            || auth.external.as_ref().is_some_and(|e| {
                e.response_headers
                    .iter()
                    .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
            })
    }

    /// Upstream request fields admission adds.
    pub(crate) fn granted_fields(&self) -> &[(HeaderName, HeaderValue)] {
        self.granted().map_or(&[], |g| &g.fields)
    }
}

impl Proxy {
    /// Admits a request to a route that authenticates, or answers it (401, 403, a sign-in
    /// redirect, 500 when the authentication service fails).
    pub(crate) async fn admit(&self, view: &View<'_>, fwd: &mut Forward) -> Result<(), Local> {
        let Some(policy) = fwd.rules.clone() else {
            return Ok(());
        };
        let Some(auth) = &policy.auth else {
            return Ok(());
        };
        if auth.satisfy_any {
            let allowed = policy
                .source
                .as_ref()
                .is_some_and(|s| !s.allow.is_empty() && s.admits(view.client));
            if allowed {
                return Ok(());
            }
        }
        if let Some(list) = &auth.basic {
            let given = view.headers.get("authorization");
            if !basic::check(list, given, &self.auth.verified) {
                let mut local = Local::status(StatusCode::UNAUTHORIZED);
                local
                    .headers
                    .push((header::WWW_AUTHENTICATE, list.challenge.clone()));
                return Err(local);
            }
        }
        if let Some(service) = &auth.external {
            let limits = fwd.limits(self);
            let granted = external::check(self, service, view, &limits).await?;
            fwd.edits.get_or_insert_with(Box::<Edits>::default).auth = Some(granted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_follow_add_header_statuses_unless_always() {
        let granted = Granted {
            fields: Vec::new(),
            cookies: vec![HeaderValue::from_static("s=1")],
            always: false,
        };
        assert_eq!(granted.cookies_for(200).len(), 1);
        assert_eq!(granted.cookies_for(302).len(), 1);
        assert!(granted.cookies_for(404).is_empty());
        assert!(granted.cookies_for(502).is_empty());
        let always = Granted {
            always: true,
            ..granted
        };
        assert_eq!(always.cookies_for(502).len(), 1);
    }
}
