// The event types a tenant sent in the last week, for the suggestions of the event-type inputs (a <datalist>).
// Fetched once per tenant and page load: suggestions may be a little stale, never worth a request per keystroke.

import { api } from './api';

const known = new Map<string, Promise<string[]>>();

export function knownEventTypes(tenant: string): Promise<string[]> {
  let types = known.get(tenant);
  if (!types) {
    types = api()
      .eventStats({ group_by: 'event_type', hours: 24 * 7 })
      .then((stats) => stats.totals.map((t) => t.key).filter((k): k is string => !!k))
      .catch(() => {
        known.delete(tenant);
        return [];
      });
    known.set(tenant, types);
  }
  return types;
}
