//! Which account a provider's sign-in opens: the pure linking rule.
//!
//! 1. An identity (issuer, subject) already linked signs in its account, whatever email
//!    the provider reports today.
//! 2. Otherwise the provider must vouch for the email (`email_verified` true): an
//!    unverified email never links to an account, nor makes one (which would take the
//!    address from its real owner).
//! 3. A verified email that an account has links the identity to that account.
//! 4. A verified email no account has makes a new account, when sign-ups are open.
//!
//! A disabled account is refused at every step. The store and the handlers carry the
//! decision out; nothing here reads or writes anything.

use crate::store::User;

/// What the provider said about the person, from the verified ID token (and the
/// userinfo endpoint when the token left the email out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderAccount {
    /// The email, if the provider gave one.
    pub(crate) email: Option<String>,
    /// Whether the provider vouched that the person controls it.
    pub(crate) email_verified: bool,
}

/// Reads `email_verified` as providers send it: `true`, or (some providers) the string
/// `"true"`. Anything else, or nothing, is not verified.
pub(crate) fn verified(value: Option<&serde_json::Value>) -> bool {
    match value {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// Why a sign-in opens no account; each has a sentence on the sign-in page (the code is
/// what the relay sends there, `?oidc_error=<code>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The provider gave no email address.
    NoEmail,
    /// The provider did not vouch for the email address.
    UnverifiedEmail,
    /// No account has this email, and sign-ups are closed.
    SignupClosed,
    /// The account is disabled.
    Disabled,
}

impl Refusal {
    /// The code the sign-in page turns into a sentence.
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::NoEmail => "no_email",
            Refusal::UnverifiedEmail => "unverified_email",
            Refusal::SignupClosed => "signup_closed",
            Refusal::Disabled => "disabled",
        }
    }
}

/// The outcome of the rule.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// The identity is linked to this account already: sign it in.
    SignIn(User),
    /// Link the identity to this account (same verified email), then sign it in.
    Link(User),
    /// Make an account with this verified email, linked to the identity.
    Create(String),
    /// Open nothing.
    Refuse(Refusal),
}

/// The rule. `linked` is the account the identity is linked to, `by_email` the account
/// with the provider's email (looked up only when there is an email).
pub(crate) fn decide(
    linked: Option<User>,
    account: &ProviderAccount,
    by_email: Option<User>,
    allow_signup: bool,
) -> Decision {
    if let Some(user) = linked {
        return if user.disabled {
            Decision::Refuse(Refusal::Disabled)
        } else {
            Decision::SignIn(user)
        };
    }
    let Some(email) = account
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| e.contains('@'))
    else {
        return Decision::Refuse(Refusal::NoEmail);
    };
    if !account.email_verified {
        return Decision::Refuse(Refusal::UnverifiedEmail);
    }
    match by_email {
        Some(user) if user.disabled => Decision::Refuse(Refusal::Disabled),
        Some(user) => Decision::Link(user),
        None if allow_signup => Decision::Create(email.to_lowercase()),
        None => Decision::Refuse(Refusal::SignupClosed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(email: &str, disabled: bool) -> User {
        User {
            id: format!("id-{email}"),
            email: email.into(),
            password_hash: String::new(),
            disabled,
            created_at: 0,
            plan_id: "free".into(),
            token_generation: 0,
        }
    }

    fn account(email: Option<&str>, email_verified: bool) -> ProviderAccount {
        ProviderAccount {
            email: email.map(String::from),
            email_verified,
        }
    }

    #[test]
    fn a_linked_identity_signs_in_its_account_whatever_the_email_says() {
        let ann = user("ann@example.com", false);
        let d = decide(
            Some(ann.clone()),
            &account(Some("other@example.com"), false),
            None,
            false,
        );
        assert!(matches!(d, Decision::SignIn(u) if u.id == ann.id));
        let d = decide(
            Some(user("ann@example.com", true)),
            &account(None, true),
            None,
            true,
        );
        assert!(matches!(d, Decision::Refuse(Refusal::Disabled)));
    }

    #[test]
    fn an_unverified_email_never_links_to_an_existing_account() {
        let ann = user("ann@example.com", false);
        let d = decide(
            None,
            &account(Some("ann@example.com"), false),
            Some(ann.clone()),
            true,
        );
        assert!(
            matches!(d, Decision::Refuse(Refusal::UnverifiedEmail)),
            "{d:?}"
        );
        // Nor makes an account that would take the address.
        let d = decide(None, &account(Some("new@example.com"), false), None, true);
        assert!(
            matches!(d, Decision::Refuse(Refusal::UnverifiedEmail)),
            "{d:?}"
        );
    }

    #[test]
    fn a_verified_email_links_or_creates() {
        let ann = user("ann@example.com", false);
        let d = decide(
            None,
            &account(Some("ann@example.com"), true),
            Some(ann.clone()),
            false,
        );
        assert!(
            matches!(d, Decision::Link(u) if u.id == ann.id),
            "sign-ups closed do not matter"
        );
        let d = decide(None, &account(Some(" New@Example.com "), true), None, true);
        assert!(
            matches!(&d, Decision::Create(e) if e == "new@example.com"),
            "{d:?}"
        );
        let d = decide(None, &account(Some("new@example.com"), true), None, false);
        assert!(matches!(d, Decision::Refuse(Refusal::SignupClosed)));
        let d = decide(
            None,
            &account(Some("ann@example.com"), true),
            Some(user("ann@example.com", true)),
            true,
        );
        assert!(matches!(d, Decision::Refuse(Refusal::Disabled)));
    }

    #[test]
    fn no_email_no_account() {
        for email in [None, Some(""), Some("not an address")] {
            let d = decide(None, &account(email, true), None, true);
            assert!(matches!(d, Decision::Refuse(Refusal::NoEmail)), "{email:?}");
        }
    }

    #[test]
    fn email_verified_as_providers_send_it() {
        assert!(verified(Some(&json!(true))));
        assert!(verified(Some(&json!("true"))));
        assert!(!verified(Some(&json!(false))));
        assert!(!verified(Some(&json!("false"))));
        assert!(!verified(Some(&json!(1))));
        assert!(!verified(None));
    }
}
