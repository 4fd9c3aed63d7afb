/**
 * The account page's sign-in methods: how a linked provider identity is named on the
 * page (safely: the provider's text is the provider's, so control and
 * direction-changing characters are taken out and long values cut), and whether an
 * identity is the account's last way in (the relay refuses to unlink that one; the page
 * says so beside it). The relay's answer is `GET /api/account/identities`.
 */

/** One linked provider identity (`GET /api/account/identities`). */
export interface LinkedIdentity {
  /** Opaque: what `DELETE /api/account/identities/{id}` takes. */
  id: string;
  /** The provider's configured name (in its URLs). */
  provider: string;
  /** Its display name ("Google", "Example Corp"). */
  provider_name: string;
  /** The address the provider vouched for when the identity was linked. */
  email: string | null;
  /** The end of the provider's id for the person (`…1001`), never the whole of it. */
  subject_hint: string;
  /** When it was linked, and when it last signed in (seconds since the epoch). */
  linked_at: number;
  last_used: number;
}

/** `GET /api/account/identities`: how the account signs in. */
export interface SignInMethods {
  has_password: boolean;
  identities: LinkedIdentity[];
}

/** The longest provider-given text shown, in characters. */
export const MAX_SHOWN = 80;

/**
 * Text from a provider as the page shows it: without control characters and the
 * characters that reorder text (a right-to-left override could make one address read as
 * another), at most {@link MAX_SHOWN} characters (then `…`). React escapes the rest.
 */
export function shownText(text: string | null | undefined): string {
  const clean = Array.from((text ?? '').replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, ''));
  return clean.length > MAX_SHOWN ? `${clean.slice(0, MAX_SHOWN - 1).join('')}…` : clean.join('');
}

/** What names an identity on the page. */
type Named = Pick<LinkedIdentity, 'id' | 'provider' | 'provider_name' | 'email' | 'subject_hint'>;

/**
 * Who the identity is at its provider: its email, else the end of its id there. Two
 * identities at one provider with one email (they link by the account's verified email,
 * so that is the usual case for a second one) are told apart by the end of their ids
 * too: give the account's other identities as `among`.
 */
export function identityWho(identity: Omit<Named, 'provider_name'>, among: readonly Omit<Named, 'provider_name'>[] = []): string {
  const email = shownText(identity.email);
  const hint = shownText(identity.subject_hint);
  const account = hint ? `account ${hint}` : 'an account without an email address';
  if (!email) return account;
  const twin = among.some((o) => o.id !== identity.id && o.provider === identity.provider && shownText(o.email) === email);
  return twin && hint ? `${email}, ${account}` : email;
}

/** "Google (ann@example.com)": the identity in one phrase, for buttons and labels. */
export function identityLabel(identity: Named, among: readonly Named[] = []): string {
  return `${shownText(identity.provider_name)} (${identityWho(identity, among)})`;
}

/** Whether unlinking this identity would leave the account no way to sign in. */
export function isLastWayIn(methods: SignInMethods): boolean {
  return !methods.has_password && methods.identities.length <= 1;
}
