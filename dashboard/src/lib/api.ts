// The dashboard's one client of the platform API: the client generated from the OpenAPI document
// (clients/sdk-typescript/src/api.ts), so every call and shape here is checked against the same document the
// server is. The session cookie is the credential (same-origin fetch sends it); the CSRF token is the only header.

import { ApiClient } from '../../../clients/sdk-typescript/src/api.ts';
import { TrackerError } from '../../../clients/sdk-typescript/src/errors.ts';

export { ApiClient, TrackerError };
export type * from '../../../clients/sdk-typescript/src/api.ts';

/** Where the session routes live: a 401 from them means "not signed in", not "signed out under our feet". */
const SESSION_PATH = '/api/session';

let onUnauthorized: (() => void) | null = null;

/** Called when any API call other than the session's own answers 401 (the session expired or its key was
 * revoked): the session module signs the page out. */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

// fetch, but a 401 also tells the session: every page's error banner would otherwise show "unauthorized" while
// the real problem is that the whole session is gone
const guardedFetch: typeof fetch = async (input, init) => {
  const answer = await fetch(input, init);
  if (answer.status === 401) {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!new URL(url, location.href).pathname.startsWith(SESSION_PATH)) onUnauthorized?.();
  }
  return answer;
};

function build(csrfToken: string | null): ApiClient {
  const headers: Record<string, string> = csrfToken ? { 'x-csrf-token': csrfToken } : {};
  return new ApiClient({ baseUrl: '', headers, fetch: guardedFetch });
}

let current = build(null);

/** The client of the current session (or of nobody, before sign-in). */
export function api(): ApiClient {
  return current;
}

/** Rebuilds the client with the session's CSRF token (or without one after sign-out). */
export function useCsrfToken(token: string | null): void {
  current = build(token);
}

/** A sentence for any error: the platform's message for a refusal, else what the browser said. */
export function errorMessage(error: unknown): string {
  if (error instanceof TrackerError) return error.message || `The server answered ${error.status ?? 'an error'}.`;
  if (error instanceof TypeError) return 'The server could not be reached. Check your connection and try again.';
  if (error instanceof Error) return error.message;
  return String(error);
}
