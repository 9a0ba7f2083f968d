// Who is signed in. The session lives only in memory (never localStorage, sessionStorage or a cookie set from
// JS): the server's HttpOnly cookie is the credential, and the CSRF token it hands back is kept here for the
// requests that change something. A reload asks the server again (getSession).

import { api, setUnauthorizedHandler, TrackerError, useCsrfToken, type Scope, type Session } from './api';

type Status = 'loading' | 'signed-out' | 'signed-in';

export const auth = $state<{ status: Status; session: Session | null; notice: string }>({
  status: 'loading',
  session: null,
  notice: '',
});

function enter(session: Session): void {
  useCsrfToken(session.csrf_token);
  auth.session = session;
  auth.notice = '';
  auth.status = 'signed-in';
}

function leave(notice: string): void {
  useCsrfToken(null);
  auth.session = null;
  auth.notice = notice;
  auth.status = 'signed-out';
}

/** On start-up: the session of the cookie, if there is a live one. */
export async function restoreSession(): Promise<void> {
  try {
    enter(await api().getSession());
  } catch (error) {
    if (error instanceof TrackerError && error.status === 401) leave('');
    else leave(`The dashboard could not reach the server: ${error instanceof Error ? error.message : error}`);
  }
}

/** Exchanges an API key or the admin token for a session cookie; throws the server's refusal. */
export async function signIn(credential: string): Promise<void> {
  const session = await api().createSession({ credential });
  useCsrfToken(session.csrf_token);
  // the cookie is Secure: over plain HTTP to anything but this machine the browser drops it, and the next call
  // would fail as if the session had ended. Say why instead.
  try {
    await api().getSession();
  } catch (error) {
    useCsrfToken(null);
    if (error instanceof TrackerError && error.status === 401) throw new Error(COOKIE_REFUSED);
    throw error;
  }
  enter(session);
}

const COOKIE_REFUSED =
  'Signed in, but this browser did not keep the session cookie: it is sent only over HTTPS (or to localhost). ' +
  'Open the dashboard at an https:// address, or at http://localhost.';

/** Ends the session on the server; only then (or when it had ended already) is the page signed out. */
export async function signOut(): Promise<void> {
  try {
    await api().deleteSession();
  } catch (error) {
    if (!(error instanceof TrackerError && error.status === 401)) throw error;
  }
  leave('You are signed out.');
}

/** Whether the session's key has a scope (the operator has none: it has its own pages). */
export function can(scope: Scope): boolean {
  return auth.session?.kind === 'tenant' && auth.session.scopes.includes(scope);
}

export function isOperator(): boolean {
  return auth.session?.kind === 'admin';
}

setUnauthorizedHandler(() => {
  if (auth.status === 'signed-in') leave('Your session ended (it expired or its key was revoked). Sign in again.');
});
